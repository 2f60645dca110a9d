//! Shared leases over HTTP: reports read together, rebuilt alone; exports limited per
//! tenant.
//!
//! - `GET /reports/{id}`: a **read** lease on `report:{id}` — any number of GETs of one
//!   report run together, across every instance;
//! - `POST /reports/{id}`: a **write** lease (a rebuild): it waits for no reader, and no GET
//!   runs while it does (`423 Locked` with `Retry-After`); a waiting rebuild blocks new
//!   GETs, so a steady stream of readers cannot starve it;
//! - `POST /tenants/{tenant}/export`: one of **2 permits** per tenant — a third concurrent
//!   export of one tenant gets `429 Too Many Requests` with `Retry-After`.
//!
//! Nodes come from `REDLOCK_NODES` (comma-separated `redis://` URLs); when it is unset, five
//! local `redis-server` processes are started (and stopped on exit). The server listens on
//! `127.0.0.1:3004`, or `HOST`/`PORT` (`PORT=0` picks a free port). With
//! `EXAMPLE_SELF_TEST=1` it sends itself requests, prints what happened, and exits 0 when
//! it is as expected. Handlers normally take 200 ms; in the self-test they wait at a gate
//! the test opens, so that what overlaps is decided, not timed.

#[path = "common/mod.rs"]
mod common;
#[path = "common/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use common::{BoxError, Nodes};
use http::Method;
use tokio::sync::watch;
use tower_redlock::layer::{RedlockLayer, key};

/// Who is inside, and the self-test's gate.
#[derive(Clone)]
struct App {
    readers: Arc<AtomicU32>,
    exports: Arc<AtomicU32>,
    gate: Arc<watch::Sender<bool>>,
}

impl App {
    /// The handler's work: 200 ms, or in the self-test until the gate opens (10 s at most).
    async fn work(&self) {
        if !server::self_test_mode() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        let mut open = self.gate.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), open.wait_for(|o| *o)).await;
    }
}

async fn read_report(State(app): State<App>, Path(id): Path<u32>) -> String {
    let now = app.readers.fetch_add(1, Ordering::SeqCst) + 1;
    app.work().await;
    app.readers.fetch_sub(1, Ordering::SeqCst);
    format!("report {id} (read with {now} reader(s) inside)")
}

async fn rebuild_report(State(app): State<App>, Path(id): Path<u32>) -> String {
    app.work().await;
    format!("report {id} rebuilt")
}

async fn export(State(app): State<App>, Path(tenant): Path<String>) -> String {
    app.exports.fetch_add(1, Ordering::SeqCst);
    app.work().await;
    app.exports.fetch_sub(1, Ordering::SeqCst);
    format!("export of {tenant} done")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes.builder()?.build().await?;
    let app = App {
        readers: Arc::default(),
        exports: Arc::default(),
        gate: Arc::new(watch::Sender::new(false)),
    };
    let router = Router::new()
        .route(
            "/reports/{id}",
            get(read_report).post(rebuild_report).layer(
                RedlockLayer::new(redlock.clone(), key::prefixed("report:", key::param("id")))
                    .shared_for(&[Method::GET, Method::HEAD]),
            ),
        )
        .route(
            "/tenants/{tenant}/export",
            post(export).layer(
                RedlockLayer::new(
                    redlock.clone(),
                    key::prefixed("export:", key::param("tenant")),
                )
                .permits(2),
            ),
        )
        .with_state(app.clone());
    let listener = server::listen(3004).await?;
    println!("listening on http://{}", listener.local_addr()?);
    server::serve(listener, router, |addr| self_test(addr, app)).await?;
    redlock.shutdown().await;
    drop(nodes);
    Ok(())
}

/// Waits (bounded) until `count` reads `n`.
async fn reach(count: &AtomicU32, n: u32, what: &str) -> Result<(), BoxError> {
    for _ in 0..1000 {
        if count.load(Ordering::SeqCst) == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{what}: never {n} inside at once").into())
}

fn expect(reply: &server::Reply, status: u16, what: &str) -> Result<(), BoxError> {
    println!(
        "{what}: {} (Retry-After {:?}) {}",
        reply.status,
        reply.retry_after,
        reply.summary()
    );
    if reply.status != status {
        return Err(format!("{what}: expected {status}, got {}", reply.status).into());
    }
    Ok(())
}

async fn self_test(addr: SocketAddr, app: App) -> Result<(), BoxError> {
    let spawn = |method: Method, path: &'static str| {
        tokio::spawn(async move { server::request(addr, method, path, &[]).await })
    };
    // Two GETs of report 7 run together.
    let reads = [
        spawn(Method::GET, "/reports/7"),
        spawn(Method::GET, "/reports/7"),
    ];
    reach(&app.readers, 2, "GET /reports/7").await?;
    println!("2 GETs of report 7 are inside at once");
    // A rebuild is refused while they read; another report is not affected.
    let refused = server::post(addr, "/reports/7", &[]).await?;
    expect(&refused, 423, "POST /reports/7 while 2 GETs read")?;
    if refused.retry_after.is_none() {
        return Err("the 423 has no Retry-After".into());
    }
    app.gate.send_replace(true);
    for read in reads {
        expect(&read.await??, 200, "GET /reports/7")?;
    }
    expect(
        &server::post(addr, "/reports/7", &[]).await?,
        200,
        "POST /reports/7 after the GETs",
    )?;
    // Exports: 2 per tenant at once, the third gets 429.
    app.gate.send_replace(false);
    let exports = [
        spawn(Method::POST, "/tenants/acme/export"),
        spawn(Method::POST, "/tenants/acme/export"),
    ];
    reach(&app.exports, 2, "POST /tenants/acme/export").await?;
    println!("2 exports of tenant acme are inside at once");
    let third = server::post(addr, "/tenants/acme/export", &[]).await?;
    expect(&third, 429, "a third export of acme")?;
    if third.retry_after.is_none() {
        return Err("the 429 has no Retry-After".into());
    }
    let other = spawn(Method::POST, "/tenants/globex/export");
    reach(&app.exports, 3, "exports of acme and globex").await?;
    println!("an export of tenant globex runs beside them (its own permits)");
    app.gate.send_replace(true);
    for export in exports.into_iter().chain([other]) {
        expect(&export.await??, 200, "an export")?;
    }
    println!("self-test passed");
    Ok(())
}
