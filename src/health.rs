//! Health checks: [`Redlock::health`](crate::Redlock::health) reports every node, the quorum,
//! the circuit breaker and a real test-lock round trip; with the `axum` feature,
//! [`router`] serves it as JSON with `200` (healthy) or `503`.
//!
//! Liveness and readiness are separate, as Kubernetes probes expect:
//! - **liveness** (`GET /health/live`, [`respond_live`]): the process is fine. No Redis
//!   round trip: `200` always (`503` only once the engine is shut down). Point the
//!   `livenessProbe` here, so that a Redis outage never gets every instance restarted.
//! - **readiness** (`GET /health/ready`, [`respond`]): a quorum of nodes is reachable and a
//!   real test lock works; `503` otherwise. Point the `readinessProbe` here: an instance
//!   that cannot lock stops getting traffic. `GET /health` is the same check, kept for
//!   existing probes (prefer `/health/ready`).
//! - [`Redlock::check_config`](crate::Redlock::check_config): node settings that break locks
//!   (eviction, no persistence with fencing), logged once at build; the detailed router
//!   serves it at `GET /health/config`.
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
//! // Public: GET /health/live → {"status":"up"} (no Redis round trip);
//! // GET /health/ready (and /health) → {"status":"up","reachable":5,"quorum":3,...}
//! let app: axum::Router = axum::Router::new().merge(health::router(redlock.clone()));
//! // Internal listener only: the same paths with node URLs, versions, memory, and
//! // GET /health/config with the settings check.
//! let admin: axum::Router = axum::Router::new().merge(health::router_detailed(redlock));
//! # let _ = (app, admin); }
//! ```

pub use crate::redlock::ops::health::{
    HealthReport, NodeHealth, NodeSettings, SettingWarning, SettingsReport,
};

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
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{MethodRouter, get};
    use http::{HeaderValue, StatusCode, header};

    use crate::Redlock;

    /// Liveness: `200` with `{"status":"up"}` while the engine runs, without any Redis round
    /// trip (a Redis outage is not a reason to restart the process; readiness reports it).
    pub async fn respond_live(redlock: &Redlock) -> Response {
        let live = redlock.is_live();
        let body = if live {
            r#"{"status":"up"}"#
        } else {
            r#"{"status":"down"}"#
        };
        json_response(live, body.to_owned())
    }

    /// Readiness: runs a health check and answers `200` (quorum reachable and test lock ok)
    /// or `503`, with the public view of the report
    /// ([`HealthReport::to_json`](super::HealthReport::to_json)): no node URL, version,
    /// memory figure or error text.
    pub async fn respond(redlock: &Redlock) -> Response {
        let report = redlock.health().await;
        json_response(report.is_healthy(), report.to_json())
    }

    /// [`respond`] with the detailed view
    /// ([`HealthReport::to_json_detailed`](super::HealthReport::to_json_detailed): redacted
    /// node URLs, versions, memory, latencies, errors). For internal use only.
    pub async fn respond_detailed(redlock: &Redlock) -> Response {
        let report = redlock.health().await;
        json_response(report.is_healthy(), report.to_json_detailed())
    }

    /// The settings check ([`Redlock::check_config`]) as JSON
    /// ([`SettingsReport::to_json`](super::SettingsReport::to_json)): always `200` (a
    /// warning is for an operator to read, not a reason to stop traffic). For internal use
    /// only: it names the nodes.
    pub async fn respond_config(redlock: &Redlock) -> Response {
        json_response(true, redlock.check_config().await.to_json())
    }

    fn json_response(ok: bool, body: String) -> Response {
        let status = if ok {
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

    /// A router serving `GET /health/live` ([`respond_live`]), `GET /health/ready`
    /// ([`respond`], the public view) and `GET /health` (the same as `/health/ready`, kept
    /// for existing probes).
    pub fn router<S>(redlock: Redlock) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        probes(get(ready)).with_state(redlock)
    }

    /// A router serving `GET /health/live`, `GET /health/ready` and `GET /health` with the
    /// detailed view ([`respond_detailed`]: node URLs, versions, memory), and
    /// `GET /health/config` ([`respond_config`]): mount it on an internal listener, never on
    /// the public one.
    pub fn router_detailed<S>(redlock: Redlock) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        probes(get(ready_detailed))
            .route("/health/config", get(config))
            .with_state(redlock)
    }

    /// `/health/live`, and `ready` at `/health/ready` and `/health`.
    fn probes(ready: MethodRouter<Redlock>) -> Router<Redlock> {
        Router::new()
            .route("/health/live", get(live))
            .route("/health/ready", ready.clone())
            .route("/health", ready)
    }

    async fn live(State(redlock): State<Redlock>) -> Response {
        respond_live(&redlock).await
    }

    async fn ready(State(redlock): State<Redlock>) -> Response {
        respond(&redlock).await
    }

    async fn ready_detailed(State(redlock): State<Redlock>) -> Response {
        respond_detailed(&redlock).await
    }

    async fn config(State(redlock): State<Redlock>) -> Response {
        respond_config(&redlock).await
    }
}

#[cfg(feature = "axum")]
pub use http::{respond, respond_config, respond_detailed, respond_live, router, router_detailed};
