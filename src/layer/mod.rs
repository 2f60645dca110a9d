//! Tower middleware that runs each request under a distributed lock.
//!
//! [`RedlockLayer`] derives a lock key from each request with a
//! [`KeyExtractor`](key::KeyExtractor), takes the lease, runs the inner service while the
//! lease is auto-extended, and releases it before the response goes out.
//!
//! - Contended → `423 Locked` with `Retry-After`; quorum unreachable → `503`; bad key →
//!   `400`: RFC 9457 problem+json bodies that never contain the key (see [`Rejection`]).
//! - The [`HeldLock`](crate::HeldLock) is a request extension (an axum extractor with the
//!   `axum` feature): handlers can read the fencing token, watch for loss, or release early.
//!   Nested layers: [`HeldLocks`] lists every layer's lease, outermost first.
//! - Shared keys: [`shared_for`](RedlockLayer::shared_for) gives some methods read leases
//!   (the others write leases); [`permits`](RedlockLayer::permits) lets `n` requests per key
//!   in at once, the next one gets `429 Too Many Requests` ([`Rejection::Capacity`]).
//! - A lost lease cancels the inner future and answers `503` ([`OnLost`]).
//! - The lease lasts exactly the request, whatever clones exist: released when the response
//!   is produced (or the body's last frame, with
//!   [`hold_until_body_end`](RedlockLayer::hold_until_body_end)), or in the background when
//!   the future or body is dropped (client disconnect, panic). For an upgrade (WebSocket,
//!   `CONNECT`) that is the handshake only. See [`RedlockLayer`] for this, nesting, and the
//!   order of layers.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use tower_redlock::{HeldLock, Redlock};
//! use tower_redlock::layer::{RedlockLayer, key};
//!
//! async fn rebuild(lock: HeldLock) -> String {
//!     format!("rebuilding with fencing token {:?}", lock.fencing_token())
//! }
//!
//! # async fn demo(redlock: Redlock) {
//! let app: Router = Router::new()
//!     .route("/reports/{id}/rebuild", post(rebuild))
//!     .route_layer(RedlockLayer::new(redlock, key::route()));
//! # let _ = app; }
//! ```

mod body;
mod estimate;
mod future;
mod held;
pub mod key;
#[allow(clippy::module_inception)]
mod layer;
mod lease;
mod policy;
mod response;
mod routes;
mod service;
mod settings;
mod sharing;

pub use self::body::{BoxError, ResponseBody};
pub use self::future::ResponseFuture;
pub use self::held::HeldLocks;
pub use self::layer::RedlockLayer;
pub use self::policy::{OnLost, Release};
#[cfg(feature = "axum")]
pub(crate) use self::response::REJECTION_TARGET;
pub use self::response::Rejection;
pub use self::service::RedlockService;
