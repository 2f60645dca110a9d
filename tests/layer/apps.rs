//! Apps and engines of the layer tests (the shared helpers are in `tests/support`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use tower_redlock::Redlock;
use tower_redlock::layer::RedlockLayer;
use tower_redlock::testkit::LocalCluster;

use crate::support::{Dropped, Signal, cluster};

/// Where a streaming handler leaves the sender of its body's chunks.
pub type ChunkSender = Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Bytes>>>>;

/// `POST /export` streams whatever the test sends through the returned slot, under
/// `RedlockLayer` on a constant key with `hold_until_body_end(true)`.
pub fn streaming_export(redlock: &Redlock) -> (Router, ChunkSender) {
    let slot = ChunkSender::default();
    let s = slot.clone();
    let app = Router::new()
        .route(
            "/export",
            axum::routing::post(move || {
                let s = s.clone();
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                    *s.lock().unwrap() = Some(tx);
                    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                        let chunk = rx.recv().await?;
                        Some((Ok::<_, std::io::Error>(chunk), rx))
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .layer(
            tower_redlock::layer::RedlockLayer::new(
                redlock.clone(),
                tower_redlock::layer::key::constant("export"),
            )
            .hold_until_body_end(true),
        );
    (app, slot)
}

/// Five local nodes and an engine on them.
pub struct Nodes {
    pub cluster: LocalCluster,
    pub redlock: Redlock,
}

pub async fn nodes(ttl: Duration) -> Nodes {
    let cluster = cluster(5).await;
    let redlock = engine(&cluster.urls(), ttl).await;
    Nodes { cluster, redlock }
}

/// An engine on `urls` with the library's defaults (key prefix, retry), which the layer
/// tests check. The node timeout is a quarter of the ttl, at most 1 s: generous, so
/// that a loaded machine (CI, two cores) does not turn a slow answer into a `503`, and short
/// enough that the watchdog still extends in time.
pub async fn engine(urls: &[String], ttl: Duration) -> Redlock {
    Redlock::builder()
        .nodes(urls.iter().cloned())
        .ttl(ttl)
        .node_timeout((ttl / 4).min(Duration::from_secs(1)))
        .build()
        .await
        .expect("build Redlock")
}

/// A handler that signals, then never finishes; reports when its future is dropped.
pub fn hanging_app(
    layer: RedlockLayer<tower_redlock::layer::key::Constant>,
) -> (Router, Signal, Dropped) {
    let entered = Signal::default();
    let dropped = Dropped::default();
    let (e, d) = (entered.clone(), dropped.clone());
    let app = Router::new()
        .route(
            "/hang",
            post(move || {
                let (e, d) = (e.clone(), d.clone());
                async move {
                    let _flag = d.flag();
                    e.notify();
                    std::future::pending::<()>().await;
                    "unreachable"
                }
            }),
        )
        .layer(layer);
    (app, entered, dropped)
}
