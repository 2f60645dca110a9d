//! Observability: health checks, Prometheus metrics and tracing around a locked route.
//!
//! ```text
//! cargo run --example observability --all-features
//! ```
//!
//! - `GET /health` (`tower_redlock::health::router`): every node, the quorum, the circuit
//!   breaker and a real test lock, as JSON; `200` when healthy, `503` otherwise.
//! - `GET /metrics`: the Prometheus text format (`metrics-exporter-prometheus`), e.g.
//!   `redlock_acquire_total{outcome="contended",lock="pay"} 1`.
//! - `POST /payments/{id}`: one payment per id at a time; its lock is labelled `pay` in the
//!   metrics (`RedlockLayer::label`), never with the raw key.
//! - Logs: a `tracing-subscriber` fmt subscriber on stderr, filtered by `RUST_LOG` (default
//!   `info,tower_redlock=debug`).
//!
//! Nodes come from `REDLOCK_NODES` (comma-separated `redis://` URLs); when it is unset, five
//! local `redis-server` processes are started (and stopped on exit). The server listens on
//! `127.0.0.1:3002`, or `HOST`/`PORT` (`PORT=0` picks a free port). With
//! `EXAMPLE_SELF_TEST=1` it pays concurrently (one `200`, one `423`), checks `/health` and
//! `/metrics`, prints what it saw and exits 0 when all is as expected.

#[path = "common/mod.rs"]
mod common;
#[path = "common/server.rs"]
mod server;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::{BoxError, Nodes};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, Redlock, health};
use tracing_subscriber::EnvFilter;

/// Log filter when `RUST_LOG` is unset.
const DEFAULT_LOG: &str = "info,tower_redlock=debug";
/// How long a payment holds its lock.
const CHARGE: Duration = Duration::from_millis(500);
/// How often the exporter's histograms are drained (the recorder needs it; see
/// `PrometheusBuilder::install_recorder`).
const UPKEEP: Duration = Duration::from_secs(5);

async fn pay(Path(id): Path<u64>, lock: HeldLock) -> String {
    tracing::info!(payment = id, fencing_token = ?lock.fencing_token(), "charging");
    tokio::time::sleep(CHARGE).await;
    format!("payment {id} done\n")
}

async fn metrics(State(prometheus): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus.render(),
    )
}

fn app(redlock: Redlock, prometheus: PrometheusHandle) -> Router {
    let payments = RedlockLayer::new(
        redlock.clone(),
        key::prefixed("payment:", key::param_as::<u64>("id")),
    )
    // The metrics label (default: the matched route, `/payments/{id}`).
    .label("pay");
    Router::new()
        .route("/payments/{id}", post(pay).layer(payments))
        .route("/metrics", get(metrics))
        .merge(health::router(redlock))
        .with_state(prometheus)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Before the engine is built: metrics recorded without a recorder are lost.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let upkeep = tokio::spawn({
        let prometheus = prometheus.clone();
        async move {
            // Runs until aborted, when the server has stopped.
            let mut every = tokio::time::interval(UPKEEP);
            loop {
                every.tick().await;
                prometheus.run_upkeep();
            }
        }
    });

    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes.builder()?.fencing(true).build().await?;

    let listener = server::listen(3002).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("listening on {url}");
    println!("try it:");
    println!("  curl -X POST {url}/payments/1 & curl -i -X POST {url}/payments/1");
    println!("  curl {url}/health");
    println!("  curl -s {url}/metrics | grep '^redlock_'");

    let outcome = server::serve(listener, app(redlock, prometheus), self_test).await;
    upkeep.abort();
    if let Some(cluster) = nodes.local {
        println!("stopping the local nodes");
        drop(cluster);
    }
    outcome
}

/// Pays, checks `/health` and `/metrics`.
async fn self_test(addr: SocketAddr) -> Result<(), BoxError> {
    let mut failures = Vec::new();

    let (a, b) = tokio::join!(
        server::post(addr, "/payments/1", &[]),
        server::post(addr, "/payments/1", &[])
    );
    let mut concurrent = [a?.status, b?.status];
    concurrent.sort_unstable();
    let again = server::post(addr, "/payments/1", &[]).await?.status;
    println!("self-test: concurrent payments {concurrent:?}, then one more {again}");
    if concurrent != [200, 423] || again != 200 {
        failures.push(format!(
            "payments: expected [200, 423] then 200, got {concurrent:?} then {again}"
        ));
    }

    let health = server::get(addr, "/health").await?;
    // The report without its per-node details.
    let report = health.body.split(r#","nodes""#).next().unwrap_or_default();
    println!("self-test: GET /health {} {report},...}}", health.status);
    if health.status != 200 || !health.body.contains(r#""status":"up""#) {
        failures.push(format!(
            "health: expected 200 with \"status\":\"up\", got {}",
            health.status
        ));
    }

    let metrics = server::get(addr, "/metrics").await?;
    println!("self-test: GET /metrics {}:", metrics.status);
    let acquires: Vec<&str> = metrics
        .body
        .lines()
        .filter(|line| line.starts_with("redlock_acquire_total{"))
        .collect();
    for line in &acquires {
        println!("  {line}");
    }
    for outcome in ["acquired", "contended"] {
        let wanted = format!(r#"outcome="{outcome}""#);
        let found = acquires
            .iter()
            .any(|line| line.contains(&wanted) && line.contains(r#"lock="pay""#));
        if !found {
            failures.push(format!(
                "metrics: no redlock_acquire_total line with {wanted} and lock=\"pay\""
            ));
        }
    }

    if failures.is_empty() {
        println!("self-test passed");
        Ok(())
    } else {
        Err(format!("self-test failed: {}", failures.join("; ")).into())
    }
}
