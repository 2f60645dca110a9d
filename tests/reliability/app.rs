//! An axum app with one locked route, `POST /orders/{id}`, whose handler waits until told
//! to finish (or 30 s at most), and records whether it started, completed or was dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, Redlock};

use crate::support::Dropped;

#[derive(Default)]
pub struct Probe {
    pub started: Notify,
    pub finish: Notify,
    pub ran: AtomicBool,
    pub completed: AtomicBool,
    pub dropped: Dropped,
}

async fn handler(State(probe): State<Arc<Probe>>, _lock: HeldLock) -> &'static str {
    let _guard = probe.dropped.flag();
    probe.ran.store(true, Ordering::SeqCst);
    probe.started.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(30), probe.finish.notified()).await;
    probe.completed.store(true, Ordering::SeqCst);
    "done"
}

pub fn router(redlock: Redlock, ttl: Duration, probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/orders/{id}", routing::post(handler))
        .route_layer(RedlockLayer::new(redlock, key::prefixed("order:", key::param("id"))).ttl(ttl))
        .with_state(probe)
}

pub fn post(path: &str) -> Request<Body> {
    Request::post(path).body(Body::empty()).unwrap()
}

/// Sends one request and collects the response (bounded by 20 s).
pub async fn send(app: Router, request: Request<Body>) -> (Response<()>, String) {
    let run = async {
        let response = app.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, ()),
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the request must not hang")
}

/// `Retry-After` in whole seconds, when present and numeric.
pub fn retry_after(response: &Response<()>) -> Option<u64> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
