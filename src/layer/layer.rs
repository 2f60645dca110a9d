//! [`RedlockLayer`] and its options.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tower_layer::Layer;

use super::body::{BoxBody, BoxError, ResponseBody, box_body};
use super::key::KeyError;
use super::response::Rejection;
use super::service::RedlockService;
use crate::redlock::{LockOptions, Redlock, RetryPolicy};

/// What to do when the lease is lost while the inner service runs (a quorum of nodes
/// became unreachable or the lease ran out).
///
/// With [`Cancel`](OnLost::Cancel) the handler is dropped wherever it is — maybe halfway
/// through a side effect (a row written, a payment sent) — and the client gets a `503` it
/// may retry. Make such handlers safe to run again: an idempotency key from the client,
/// and the lease's fencing token passed to the store so that it refuses a stale holder's
/// writes. Loss is checked before the handler's answer is accepted: an answer given after
/// the loss becomes the `503` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLost {
    /// Drop the inner future (it stops at its next `.await`) and answer
    /// `503 Service Unavailable`, also when it finished after the lease was lost. The
    /// default.
    #[default]
    Cancel,
    /// Let the inner future finish; it can watch [`HeldLock::lost`](crate::HeldLock::lost)
    /// itself.
    Continue,
}

/// When the lease is released after the inner service has answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Release {
    /// Release, and wait for a quorum to confirm, before the response is returned (or, with
    /// [`hold_until_body_end`](RedlockLayer::hold_until_body_end), before the body's end is
    /// signalled): the client's next request finds the lock free. The default.
    #[default]
    BeforeResponse,
    /// Return the response at once and release on a background task: one round trip less
    /// of latency, but an immediate retry may still see `423`.
    InBackground,
}

pub(crate) type RejectFn = dyn Fn(&Rejection) -> Response<BoxBody> + Send + Sync + 'static;

/// Settings shared by a layer's services and their futures.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) redlock: Redlock,
    pub(crate) options: LockOptions,
    pub(crate) on_lost: OnLost,
    pub(crate) release: Release,
    pub(crate) hold_body: bool,
    pub(crate) on_rejection: Option<Arc<RejectFn>>,
    /// Set once the self-contention of nested layers on one key was logged.
    pub(crate) nesting_logged: Arc<AtomicBool>,
}

impl Settings {
    /// The response for `rejection`, custom or default.
    pub(crate) fn reject<B>(&self, rejection: &Rejection) -> Response<ResponseBody<B>> {
        tracing::debug!(status = rejection.status().as_u16(), %rejection, "Redlock rejected a request");
        match &self.on_rejection {
            Some(respond) => respond(rejection).map(ResponseBody::boxed),
            None => rejection.to_response().map(ResponseBody::full),
        }
    }

    /// The error for a request whose key an outer layer of the same request already holds:
    /// the inner layer would wait for the outer one forever. Logged once per layer.
    pub(crate) fn nested_on_same_key(&self) -> KeyError {
        const WHY: &str = "two RedlockLayers of one request lock the same key: the inner one \
                           would wait for the outer one forever; remove one of them or give \
                           them different keys";
        if !self.nesting_logged.swap(true, Ordering::Relaxed) {
            tracing::error!("{WHY}");
        }
        KeyError::misconfigured(WHY)
    }
}

/// Tower layer that runs each request under a distributed lock whose key is derived from
/// the request.
///
/// Per request, the [`KeyExtractor`](super::key::KeyExtractor) gives a key (or `None`: the
/// request passes through unlocked). The layer acquires it — by default with a single
/// attempt — and answers `423 Locked` when someone else holds it, `503` when the quorum is
/// unreachable (see [`Rejection`]). While the inner service runs the lease is auto-extended
/// and available to it as a [`HeldLock`](crate::HeldLock) request extension; it is
/// released before the response is returned.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{Router, routing::{get, post}};
/// use tower_redlock::{Redlock, RedlockLayer, key};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redlock = Redlock::builder()
///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"])
///     .build()
///     .await?;
///
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(|| async { "order" }))
///     .route(
///         "/orders/{id}/pay",
///         // One payment per order at a time, across every instance of the service.
///         post(|| async { "paid" }).layer(
///             RedlockLayer::new(redlock, key::prefixed("order:", key::param("id")))
///                 .ttl(Duration::from_secs(30))
///                 .wait(Duration::from_millis(500)),
///         ),
///     );
/// # let _ = app; Ok(()) }
/// ```
///
/// Works with `Router::layer`, `Router::route_layer` and `MethodRouter::layer`: axum applies
/// them per route, so routing information ([`key::param`](super::key::param),
/// [`key::route`](super::key::route)) is available. It is plain Tower middleware too, for
/// any `http` service whose response body yields `Bytes`.
///
/// # How long the lease lasts
///
/// Exactly the request: it is released, for every clone of the
/// [`HeldLock`](crate::HeldLock), when the response is produced (with
/// [`hold_until_body_end`](Self::hold_until_body_end): before the body's last frame goes
/// out), or when the response future or body is dropped (client gone, panic). A clone the
/// handler moved into a spawned task or shared state sees the lease end with the request;
/// work that must stay locked longer takes its own lease.
///
/// **Upgrades** (`101 Switching Protocols`, e.g. a WebSocket; a `CONNECT`'s `2xx`): the
/// request is the handshake, so the lease ends when that response is produced, before the
/// upgraded connection runs (axum runs `on_upgrade` work in a spawned task). To hold a lock
/// for a socket's life, acquire it with the engine in the upgraded task
/// (`examples/websocket.rs`).
///
/// # Nesting
///
/// Each layer of a request adds its lease to the [`HeldLocks`](super::HeldLocks) extension
/// (outermost first); the [`HeldLock`](crate::HeldLock) extension is the innermost layer's.
/// An inner layer whose key an outer layer of the same request holds answers `500` (logged
/// once): it would wait for the outer one forever.
///
/// # Layer order
///
/// A request waiting for its lock ([`wait`](Self::wait)) has already taken the inner
/// service's readiness — Tower polls a service ready before the call, before the key is
/// known — and keeps it for its whole wait. With a `ConcurrencyLimit` or `Buffer` *inside*
/// this layer, waiters on one hot key hold its permits or slots while no handler runs for
/// them, and requests for every other key queue behind them. So put limits, buffers, load
/// shedding and timeouts **outside** this layer, where they count (and shed, and bound)
/// waiting requests explicitly, nothing between this layer and the handler, and keep
/// `wait` short — or keep the default: one attempt, `423` at once.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{BoxError, Router, error_handling::HandleErrorLayer, http::StatusCode};
/// use axum::routing::post;
/// use tower::ServiceBuilder;
/// use tower_redlock::{Redlock, RedlockLayer, key};
///
/// # fn demo(redlock: Redlock) {
/// let app: Router = Router::new().route(
///     "/orders/{id}/pay",
///     post(|| async { "paid" }).layer(
///         ServiceBuilder::new()
///             // Outermost: the limits' errors become responses.
///             .layer(HandleErrorLayer::new(|_: BoxError| async {
///                 StatusCode::SERVICE_UNAVAILABLE
///             }))
///             .timeout(Duration::from_secs(10))
///             .load_shed() // full? `503` at once instead of queueing
///             .concurrency_limit(64) // counts lock waiters too: they are inside it
///             // Innermost, right around the handler.
///             .layer(
///                 RedlockLayer::new(redlock, key::prefixed("order:", key::param("id")))
///                     .wait(Duration::from_millis(500)),
///             ),
///     ),
/// );
/// # let _ = app; }
/// ```
pub struct RedlockLayer<K> {
    key: Arc<K>,
    settings: Settings,
}

impl<K> RedlockLayer<K> {
    /// Locks each request on the key `key` derives from it, with `redlock`'s ttl, failing
    /// fast (one attempt) when the lock is taken.
    pub fn new(redlock: Redlock, key: K) -> Self {
        RedlockLayer {
            key: Arc::new(key),
            settings: Settings {
                redlock,
                options: LockOptions::new().no_retry(),
                on_lost: OnLost::default(),
                release: Release::default(),
                hold_body: false,
                on_rejection: None,
                nesting_logged: Arc::default(),
            },
        }
    }

    /// The lease's time to live (default: the [`Redlock`]'s). The lease is auto-extended
    /// while the request runs, so this bounds how long a crashed instance blocks the key.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings.options = self.settings.options.ttl(ttl);
        self
    }

    /// Wait up to `deadline` for a held lock instead of answering `423` at once.
    pub fn wait(mut self, deadline: Duration) -> Self {
        self.settings.options = self.settings.options.retry(RetryPolicy::until(deadline));
        self
    }

    /// Replaces every lock option at once (ttl, retry policy, max hold, fencing...).
    pub fn lock_options(mut self, options: LockOptions) -> Self {
        self.settings.options = options;
        self
    }

    /// What to do when the lease is lost while the inner service runs (default:
    /// [`OnLost::Cancel`]).
    pub fn on_lost(mut self, on_lost: OnLost) -> Self {
        self.settings.on_lost = on_lost;
        self
    }

    /// When to release (default: [`Release::BeforeResponse`]).
    pub fn release(mut self, release: Release) -> Self {
        self.settings.release = release;
        self
    }

    /// Keep the lease until the response body has been streamed to its last frame (or
    /// dropped, e.g. when the client goes away) rather than until the response head is
    /// ready. For streamed responses that must not interleave with another holder's work.
    ///
    /// The lease ends before the last frame is passed on — the last data frame of a body
    /// of known length (`String`, `Json`, `Bytes`), the trailers (gRPC), or the end of a
    /// stream —, as hyper does not ask for more after it. Responses without a body hyper
    /// would send (`HEAD`, `1xx`/`101`, `204`, `304`, a `CONNECT`'s `2xx`, an empty body)
    /// end it with the head.
    pub fn hold_until_body_end(mut self, hold: bool) -> Self {
        self.settings.hold_body = hold;
        self
    }

    /// Answers rejections with `respond` instead of the default problem+json responses.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use tower_redlock::layer::Rejection;
    ///
    /// fn respond(rejection: &Rejection) -> Response<String> {
    ///     if rejection.status() == StatusCode::LOCKED {
    ///         let mut busy = Response::new("busy, try again".to_owned());
    ///         *busy.status_mut() = StatusCode::CONFLICT;
    ///         return busy;
    ///     }
    ///     rejection.to_response()
    /// }
    /// # fn demo(layer: tower_redlock::RedlockLayer<tower_redlock::key::Path>) {
    /// let layer = layer.on_rejection(respond);
    /// # }
    /// ```
    pub fn on_rejection<F, B>(mut self, respond: F) -> Self
    where
        F: Fn(&Rejection) -> Response<B> + Send + Sync + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.settings.on_rejection = Some(Arc::new(move |rejection: &Rejection| {
            respond(rejection).map(box_body)
        }));
        self
    }
}

impl<K> Clone for RedlockLayer<K> {
    fn clone(&self) -> Self {
        RedlockLayer {
            key: self.key.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<K> fmt::Debug for RedlockLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockLayer")
            .field("key", &std::any::type_name::<K>())
            .field("options", &self.settings.options)
            .field("on_lost", &self.settings.on_lost)
            .field("release", &self.settings.release)
            .field("hold_until_body_end", &self.settings.hold_body)
            .field("on_rejection", &self.settings.on_rejection.is_some())
            .finish()
    }
}

impl<S, K> Layer<S> for RedlockLayer<K> {
    type Service = RedlockService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RedlockService::new(inner, self.key.clone(), Arc::new(self.settings.clone()))
    }
}
