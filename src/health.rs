//! Health checks: [`Redlock::health`](crate::Redlock::health) reports every node, the quorum,
//! the circuit breaker and a real test-lock round trip; with the `axum` feature,
//! [`router`] serves it as JSON with `200` (healthy) or `503`.
//!
//! Two views of one report:
//! - [`router`] / [`respond`] serve the **public** view ([`HealthReport::to_json`]):
//!   status, quorum, reachable counts, the breaker's state and, per node, only its index
//!   and whether it is reachable, skipped or passed by. Safe for a load balancer or anyone
//!   who can reach the route.
//! - [`router_detailed`] / [`respond_detailed`] serve the **detailed** view
//!   ([`HealthReport::to_json_detailed`]): also each node's redacted URL, latency, Redis
//!   version, used memory and error, and the test lock's latency and error. It tells where
//!   the nodes are and what they run: serve it only on an internal port or behind
//!   authentication. (With the `serde` feature, serializing a [`HealthReport`] gives the
//!   detailed view too.)
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo(redlock: tower_redlock::Redlock) {
//! use tower_redlock::health;
//!
//! // Public: GET /health → {"status":"up","reachable":5,"quorum":3,...}
//! let app: axum::Router = axum::Router::new().merge(health::router(redlock.clone()));
//! // Internal listener only: GET /health with node URLs, versions, memory.
//! let admin: axum::Router = axum::Router::new().merge(health::router_detailed(redlock));
//! # let _ = (app, admin); }
//! ```

pub use crate::redlock::health::{HealthReport, NodeHealth};

/// The key the health check's test lock used before: a fixed key in the users' namespace,
/// which two concurrent checks, or a client holding it, made fail.
#[deprecated(
    note = "the health check now locks a fresh random key in the engine's internal namespace, \
            which no user key can name; this key means nothing to it any more"
)]
pub const HEALTH_KEY: &str = "__tower_redlock_health__";

#[cfg(feature = "axum")]
mod http {
    use axum::Router;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use http::{HeaderValue, StatusCode, header};

    use super::HealthReport;
    use crate::Redlock;

    /// Runs a health check and answers `200` (quorum reachable and test lock ok) or `503`,
    /// with the public view of the report ([`HealthReport::to_json`]): no node URL,
    /// version, memory figure or error text.
    pub async fn respond(redlock: &Redlock) -> Response {
        let report = redlock.health().await;
        json_response(&report, report.to_json())
    }

    /// [`respond`] with the detailed view ([`HealthReport::to_json_detailed`]: redacted
    /// node URLs, versions, memory, latencies, errors). For internal use only.
    pub async fn respond_detailed(redlock: &Redlock) -> Response {
        let report = redlock.health().await;
        json_response(&report, report.to_json_detailed())
    }

    fn json_response(report: &HealthReport, body: String) -> Response {
        let status = if report.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// A router serving `GET /health` with [`respond`] (the public view).
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

    /// A router serving `GET /health` with [`respond_detailed`] (node URLs, versions,
    /// memory): mount it on an internal listener, never on the public one.
    pub fn router_detailed<S>(redlock: Redlock) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new().route(
            "/health",
            get(move || {
                let redlock = redlock.clone();
                async move { respond_detailed(&redlock).await }
            }),
        )
    }
}

#[cfg(feature = "axum")]
pub use http::{respond, respond_detailed, router, router_detailed};
