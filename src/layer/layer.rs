//! [`RedlockLayer`] and its options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tower_layer::Layer;

use super::body::{BoxError, box_body};
use super::policy::{OnLost, Release};
use super::response::Rejection;
use super::service::RedlockService;
use super::settings::{Settings, merge};
use super::sharing::Sharing;
use crate::redlock::{LockOptions, Redlock, RetryPolicy};

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
/// use tower_redlock::Redlock;
/// use tower_redlock::layer::{RedlockLayer, key};
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
/// # `Retry-After` of a `423`
///
/// An estimate of how long the holder still needs, not a promise: per matched axum route
/// (requests without one share an entry), the layer keeps a moving average of how long
/// requests held the lock (acquisition to the end of the request's lease; the newest weighs
/// a quarter), and a `423` carries that average, rounded up to whole seconds, lowered to the
/// holder's remaining ttl when the engine knows it (fenced or multi-key locks). Until a
/// request on the route has finished, it is the holder's remaining ttl as the nodes report
/// it (one extra `PTTL` round trip per `423`, which the estimate then saves). The holder may
/// be a request of another instance or route, or take longer than usual: a client retrying
/// then may get another `423`. The remaining ttl alone would mislead: the watchdog keeps it
/// near the full [`ttl`](Self::ttl), so it says when a *crashed* holder's lease would run
/// out.
///
/// # Metrics label
///
/// The engine's metrics for this layer's locks carry `lock="<matched route>"` (axum's
/// `MatchedPath`, e.g. `/orders/{id}/pay`), never the key:
/// a bounded set of values. [`label`](Self::label) sets another; requests without a matched
/// route (plain Tower, the fallback) get the engine's default.
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
/// use tower_redlock::Redlock;
/// use tower_redlock::layer::{RedlockLayer, key};
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
            settings: Settings::new(redlock),
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

    /// Requests with one of `methods` (e.g. `[GET, HEAD]`) take **read** leases, shared
    /// with each other; every other method takes a **write** lease, which excludes readers
    /// and writers (see the README's *Shared leases*; a waiting writer blocks new readers).
    /// A refused request gets `423 Locked`, as with exclusive leases.
    ///
    /// ```
    /// use http::Method;
    /// # fn demo(layer: tower_redlock::layer::RedlockLayer<tower_redlock::layer::key::Path>) {
    /// let layer = layer.shared_for(&[Method::GET, Method::HEAD]);
    /// # let _ = layer; }
    /// ```
    ///
    /// Read leases carry no fencing token: with fencing on, readers are refused (`500`).
    pub fn shared_for(mut self, methods: &[http::Method]) -> Self {
        self.settings.sharing = Sharing::ReadWrite(methods.into());
        self
    }

    /// At most `n` requests per key at once, across every instance: each takes one of `n`
    /// permits (1 to [`MAX_PERMITS`](crate::MAX_PERMITS)). The next one is answered
    /// `429 Too Many Requests` with `Retry-After` ([`Rejection::Capacity`]): the resource is
    /// not locked (`423` would say so) — its capacity is used up, which is what 429 means
    /// (RFC 6585 §4: too many requests, with `Retry-After` saying when to come back).
    pub fn permits(mut self, n: u32) -> Self {
        self.settings.sharing = Sharing::Permits(n);
        self
    }

    /// Stop auto-extending a request's lease after `limit` (see
    /// [`LockOptions::max_hold`]): a runaway handler then loses its lease (see [`OnLost`]).
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.settings.options = self.settings.options.max_hold(limit);
        self
    }

    /// The `lock` label of this layer's metrics (default: the matched axum route, e.g.
    /// `/orders/{id}/pay`; outside axum routing, the engine's default). Never a raw key.
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.settings.options = self.settings.options.label(label);
        self
    }

    /// Sets every lock option `options` sets (fencing, auto-extension, a retry policy...),
    /// keeping the others: options merge, whatever the order of the calls.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redlock::LockOptions;
    /// use tower_redlock::layer::RedlockLayer;
    ///
    /// # fn demo(layer: RedlockLayer<tower_redlock::layer::key::Route>) {
    /// // Still one attempt (the layer's default), now with fencing and a 5 s ttl.
    /// let layer = layer
    ///     .ttl(Duration::from_secs(5))
    ///     .lock_options(LockOptions::new().fencing(true));
    /// # let _ = layer; }
    /// ```
    pub fn lock_options(mut self, options: LockOptions) -> Self {
        self.settings.options = merge(self.settings.options, options);
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
    /// # fn demo(layer: tower_redlock::layer::RedlockLayer<tower_redlock::layer::key::Path>) {
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
            .field("sharing", &self.settings.sharing)
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
