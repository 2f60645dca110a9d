//! Quickstart: an axum service whose payments are locked per order.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! - `POST /orders/{id}/pay`: one payment per order at a time (across every instance that
//!   shares the nodes). A concurrent attempt gets `423 Locked` with `Retry-After`.
//! - `GET /orders/{id}`: not locked.
//! - `POST /reports/{id}/rebuild`: locked too; the handler reads its `HeldLock`.
//!
//! Nodes come from `REDLOCK_NODES` (comma-separated `redis://` URLs); when it is unset, five
//! local `redis-server` processes are started (and stopped on exit). The server listens on
//! `127.0.0.1:3000`, or `HOST`/`PORT` (`PORT=0` picks a free port). `QUICKSTART_SELF_TEST=1` sends
//! two concurrent payments to itself and exits 0 if one got `200` and the other `423`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
// The test kit's source, compiled into the example so that the plain
// `cargo run --example quickstart` works without enabling the `testkit` feature.
#[allow(dead_code, unused_imports, missing_docs)]
#[path = "../src/testkit/mod.rs"]
mod testkit;

use testkit::LocalCluster;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, Redlock};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn pay(Path(id): Path<u64>) -> String {
    // Charging the card takes a while; nobody else can pay order `id` meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    format!("order {id} paid\n")
}

async fn show(Path(id): Path<u64>) -> String {
    format!("order {id}: pending\n")
}

async fn rebuild(Path(id): Path<u64>, lock: HeldLock) -> String {
    // Pass the fencing token to the storage so it can refuse a stale holder's writes.
    format!(
        "rebuilding report {id} with fencing token {:?}, lease valid for {} ms more\n",
        lock.fencing_token(),
        lock.remaining().as_millis()
    )
}

fn app(redlock: Redlock) -> Router {
    Router::new()
        .route("/orders/{id}", get(show))
        .route(
            "/orders/{id}/pay",
            post(pay).layer(RedlockLayer::new(
                redlock.clone(),
                key::prefixed("order:", key::param_as::<u64>("id")),
            )),
        )
        .route(
            "/reports/{id}/rebuild",
            post(rebuild).layer(RedlockLayer::new(redlock, key::route())),
        )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Nodes: from REDLOCK_NODES, or five local ones.
    let (redlock, cluster) = match std::env::var("REDLOCK_NODES") {
        Ok(_) => (
            Redlock::builder().with_env()?.fencing(true).build().await?,
            None,
        ),
        Err(_) => {
            let cluster = LocalCluster::start(5).await?;
            println!(
                "REDLOCK_NODES is unset: started 5 local redis-server nodes: {}",
                cluster.urls().join(", ")
            );
            let redlock = Redlock::builder()
                .nodes(cluster.urls())
                .ttl(Duration::from_secs(10))
                .fencing(true)
                .build()
                .await?;
            (redlock, Some(cluster))
        }
    };

    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT={port} is not a port number"))?,
        Err(_) => 3000,
    };
    // HOST=0.0.0.0 in containers (compose/), loopback otherwise.
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let listener = TcpListener::bind((host.as_str(), port)).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    println!("listening on {url}");
    println!("try it: the first payment gets 200 after ~1 s, the concurrent one 423 Locked:");
    println!("  curl -X POST {url}/orders/42/pay &");
    println!("  curl -i -X POST {url}/orders/42/pay");

    let server = axum::serve(listener, app(redlock));
    let outcome = if std::env::var("QUICKSTART_SELF_TEST").is_ok_and(|v| v == "1") {
        tokio::select! {
            served = server.into_future() => Err(format!("server stopped: {served:?}").into()),
            test = self_test(addr) => test,
        }
    } else {
        server
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                println!("shutting down");
            })
            .await
            .map_err(Error::from)
    };

    if let Some(cluster) = cluster {
        println!("stopping the local nodes");
        drop(cluster);
    }
    outcome
}

/// Two concurrent payments for the same order: expects one `200` and one `423`.
async fn self_test(addr: SocketAddr) -> Result<(), Error> {
    let (a, b) = tokio::join!(
        post_status(addr, "/orders/42/pay"),
        post_status(addr, "/orders/42/pay")
    );
    let mut statuses = [a?, b?];
    statuses.sort_unstable();
    println!("self-test: statuses {statuses:?}");
    if statuses == [200, 423] {
        println!("self-test passed");
        Ok(())
    } else {
        Err(format!("self-test failed: expected [200, 423], got {statuses:?}").into())
    }
}

/// A minimal HTTP/1.1 client: sends `POST path`, returns the response status.
async fn post_status(addr: SocketAddr, path: &str) -> Result<u16, Error> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await??;
    let head = String::from_utf8_lossy(&response);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))?;
    Ok(status)
}
