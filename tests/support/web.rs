//! HTTP through a router or a real server, and replies read to their end.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_redlock::{LockError, Redlock};

use super::{NO_HANG, eventually};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// Reads `response` to its end (panics after [`NO_HANG`]).
    pub async fn from_response<B>(response: Response<B>) -> Reply
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(NO_HANG, body.collect())
            .await
            .expect("body in time")
            .expect("read body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        }
    }

    /// `Retry-After` in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers.get("retry-after")?.to_str().ok()?.parse().ok()
    }

    /// Checks a problem+json rejection and returns its document.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "{self:?}"
        );
        let doc: serde_json::Value = serde_json::from_str(&self.body).expect("JSON body");
        assert_eq!(doc["status"], status, "{doc}");
        assert!(doc["type"].is_string() && doc["title"].is_string(), "{doc}");
        doc
    }
}

/// One request through `app` without a server.
pub async fn call(app: &Router, method: Method, uri: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    call_request(app, request).await
}

/// One request through `app` without a server (panics after [`NO_HANG`]).
pub async fn call_request(app: &Router, request: Request<Body>) -> Reply {
    let response = tokio::time::timeout(NO_HANG, app.clone().oneshot(request))
        .await
        .expect("response in time")
        .unwrap();
    Reply::from_response(response).await
}

/// A real HTTP server on `127.0.0.1:0`, aborted on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

/// Sends one request on a fresh connection; returns the response head and streaming body.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?)
}

/// Sends one request on a fresh connection and reads the whole response.
pub async fn http(addr: SocketAddr, method: Method, path: &str) -> Reply {
    let response = tokio::time::timeout(NO_HANG, send(addr, method, path))
        .await
        .expect("response in time")
        .expect("HTTP request");
    Reply::from_response(response).await
}

/// Polls `try_acquire(key)` until it succeeds (then releases), bounded by count and time.
pub async fn eventually_free(redlock: &Redlock, key: &str, within: Duration) -> bool {
    eventually(within, || async {
        match redlock.try_acquire(key).await {
            Ok(lock) => {
                lock.release().await.expect("release");
                true
            }
            Err(LockError::Contended { .. }) | Err(LockError::Unavailable { .. }) => false,
            Err(other) => panic!("unexpected error: {other}"),
        }
    })
    .await
}

/// `true` if `key` is held by someone else right now.
pub async fn is_held(redlock: &Redlock, key: &str) -> bool {
    match redlock.try_acquire(key).await {
        Ok(lock) => {
            lock.release().await.expect("release");
            false
        }
        Err(LockError::Contended { .. }) => true,
        Err(other) => panic!("unexpected error: {other}"),
    }
}
