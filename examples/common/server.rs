//! Shared by the axum examples: where to listen, how to serve (or self-test), and a tiny
//! HTTP/1.1 client for the self-tests.
//!
//! - `HOST` (default `127.0.0.1`; `0.0.0.0` in containers) and `PORT` (`0` picks a free port).
//! - `EXAMPLE_SELF_TEST=1`: serve, run the example's self-test against the server, stop the
//!   server gracefully and exit with the self-test's result.
#![allow(dead_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type BoxError = Box<dyn Error + Send + Sync>;

/// Bound on one self-test request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the graceful shutdown after a self-test.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `HOST`:`PORT` (default port `default_port`).
pub async fn listen(default_port: u16) -> Result<TcpListener, BoxError> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT={port} is not a port number"))?,
        Err(_) => default_port,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}").into())
}

/// `true` when `EXAMPLE_SELF_TEST=1`.
pub fn self_test_mode() -> bool {
    std::env::var("EXAMPLE_SELF_TEST").is_ok_and(|v| v == "1")
}

/// Serves `app` until Ctrl-C or, in self-test mode, until `self_test` (given the server's
/// address) is done; then shuts down gracefully.
pub async fn serve<F, Fut>(listener: TcpListener, app: Router, self_test: F) -> Result<(), BoxError>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    Ok(()) = tokio::signal::ctrl_c() => println!("shutting down"),
                    // Sent (or dropped) once the self-test is done.
                    _ = stopped => {}
                }
            })
            .into_future(),
    );
    if !self_test_mode() {
        let served = server.await;
        drop(stop);
        return Ok(served??);
    }
    let outcome = self_test(addr).await;
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, server).await {
        Ok(served) => served??,
        Err(_) => {
            return Err(format!("the server did not stop within {SHUTDOWN_TIMEOUT:?}").into());
        }
    }
    println!("server stopped");
    outcome
}

/// A response, as the self-tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    pub body: String,
}

impl Reply {
    /// The first line of the body, for printing.
    pub fn summary(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }
}

/// `GET path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, BoxError> {
    request(addr, Method::GET, path, &[]).await
}

/// `POST path` on `addr` with an empty body and `headers`.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    request(addr, Method::POST, path, headers).await
}

/// One request on a fresh connection, bounded by [`REQUEST_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    let what = format!("{method} {path}");
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, method, path, headers))
        .await
        .map_err(|_| format!("{what}: no response within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{what}: {e}").into())
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; it ends once `sender` is dropped.
    let connection = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = connection.await;
    Ok(Reply {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
