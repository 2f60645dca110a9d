//! Health checks: [`Redlock::health`](crate::Redlock::health) reports every node, the quorum,
//! the circuit breaker and a real test-lock round trip; with the `axum` feature,
//! [`router`] serves it as JSON with `200` (healthy) or `503`.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo(redlock: tower_redlock::Redlock) {
//! let app: axum::Router = axum::Router::new().merge(tower_redlock::health::router(redlock));
//! // GET /health → {"status":"up","reachable":5,"quorum":3,...}
//! # let _ = app; }
//! ```

pub use crate::redlock::health::{HEALTH_KEY, HealthReport, NodeHealth};

#[cfg(feature = "axum")]
mod http {
    use axum::Router;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use http::{HeaderValue, StatusCode, header};

    use crate::Redlock;

    /// Runs a health check and answers `200` (quorum reachable and test lock ok) or `503`,
    /// with the report as JSON. Node URLs in it are redacted.
    pub async fn respond(redlock: &Redlock) -> Response {
        let report = redlock.health().await;
        let status = if report.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut response = (status, report.to_json()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// A router serving `GET /health` with [`respond`].
    pub fn router<S>(redlock: Redlock) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new().route(
            "/health",
            get(move || {
                let redlock = redlock.clone();
                async move { respond(&redlock).await }
            }),
        )
    }
}

#[cfg(feature = "axum")]
pub use http::{respond, router};
