//! Axum extractors: [`HeldLock`] and [`HeldLocks`] (set by
//! [`RedlockLayer`](crate::layer::RedlockLayer)) and [`Locked<K>`] (takes the lock itself), plus
//! `IntoResponse` for [`LockError`] and the rejections.
//!
//! ```no_run
//! use axum::{Router, extract::State, routing::post};
//! use tower_redlock::{HeldLock, LockError, Redlock};
//!
//! // With the layer: the lease it holds.
//! async fn rebuild(lock: HeldLock) -> String {
//!     format!("token {:?}, {:?} left", lock.fencing_token(), lock.remaining())
//! }
//!
//! // By hand: `?` turns a LockError into the same 423/503/400 responses as the layer's.
//! async fn settle(State(redlock): State<Redlock>) -> Result<&'static str, LockError> {
//!     let lock = redlock.try_acquire("settlement").await?;
//!     // ... settle ...
//!     lock.release().await?;
//!     Ok("settled")
//! }
//! # let _: Router<Redlock> = Router::new()
//! #     .route("/rebuild", post(rebuild))
//! #     .route("/settle", post(settle));
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::layer::key::KeyError;
use crate::layer::{HeldLocks, REJECTION_TARGET, Rejection};
use crate::redlock::{HeldLock, LeaseMode, LockError, LockOptions, Redlock};

/// The default response (see [`Rejection::to_response`]); logged at `TRACE` on the
/// `tower_redlock::rejection` target.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        tracing::trace!(
            target: REJECTION_TARGET,
            status = self.status().as_u16(),
            rejection = %self,
            "Redlock rejected a request"
        );
        self.to_response().into_response()
    }
}

impl IntoResponse for LockError {
    /// `423`, `503`, `400` or `500` with a problem+json body; see
    /// [`Rejection`].
    fn into_response(self) -> Response {
        Rejection::Lock(self).into_response()
    }
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        Rejection::Key(self).into_response()
    }
}

/// Rejection of the [`HeldLock`] extractor: the request holds no lock because
/// [`RedlockLayer`](crate::layer::RedlockLayer) is not applied to this route, or its key extractor
/// gave no key (`500 Internal Server Error`). Use `Option<HeldLock>` where the lock is
/// optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingHeldLock;

impl MissingHeldLock {
    /// `500 Internal Server Error`.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The response's body: a problem+json document saying what is missing.
    pub fn body_text(&self) -> String {
        self.rejection().body_text()
    }

    fn rejection(&self) -> Rejection {
        Rejection::Key(KeyError::misconfigured(self.to_string()))
    }
}

impl fmt::Display for MissingHeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no HeldLock in the request: RedlockLayer is not applied to this route (add it \
             with Router::layer, Router::route_layer or MethodRouter::layer) or its key \
             extractor gave no key for this request (extract Option<HeldLock> then)",
        )
    }
}

impl std::error::Error for MissingHeldLock {}

/// `500` with a problem+json body; logged at `TRACE` on the `tower_redlock::rejection`
/// target.
impl IntoResponse for MissingHeldLock {
    fn into_response(self) -> Response {
        self.rejection().into_response()
    }
}

/// The lease taken by [`RedlockLayer`](crate::layer::RedlockLayer) for this request: with nested
/// layers, the innermost one's (every layer's: [`HeldLocks`]).
///
/// It lasts as long as the request, whatever clones of it exist (see [`HeldLock`]).
impl<S: Send + Sync> FromRequestParts<S> for HeldLock {
    type Rejection = MissingHeldLock;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<HeldLock>()
            .cloned()
            .ok_or(MissingHeldLock)
    }
}

/// `Option<HeldLock>`: `None` where no layer took a lock (e.g. the key extractor returned
/// `None`).
impl<S: Send + Sync> OptionalFromRequestParts<S> for HeldLock {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<HeldLock>().cloned())
    }
}

/// Every [`RedlockLayer`](crate::layer::RedlockLayer)'s lease for this request, outermost first.
impl<S: Send + Sync> FromRequestParts<S> for HeldLocks {
    type Rejection = MissingHeldLock;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<HeldLocks>()
            .cloned()
            .ok_or(MissingHeldLock)
    }
}

/// `Option<HeldLocks>`: `None` where no layer took a lock.
impl<S: Send + Sync> OptionalFromRequestParts<S> for HeldLocks {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<HeldLocks>().cloned())
    }
}

/// Names the lock a [`Locked<K>`] handler takes.
///
/// ```
/// use http::request::Parts;
/// use tower_redlock::LockOptions;
/// use tower_redlock::extract::LockKey;
/// use tower_redlock::layer::key::{self, KeyError, KeyExtractor};
///
/// struct Invoice;
///
/// impl LockKey for Invoice {
///     fn key(parts: &Parts) -> Result<String, KeyError> {
///         let id = key::param("id").extract(parts)?;
///         Ok(format!("invoice:{}", id.ok_or_else(|| KeyError::new("no invoice id"))?))
///     }
/// }
/// ```
pub trait LockKey {
    /// The key for this request.
    fn key(parts: &Parts) -> Result<String, KeyError>;

    /// Options of the acquisition (default: one attempt, the [`Redlock`]'s ttl).
    fn options() -> LockOptions {
        LockOptions::new().no_retry()
    }

    /// Which lease to take (default: [`LeaseMode::Exclusive`]): [`LeaseMode::Read`] shares
    /// the key with other readers, [`LeaseMode::Write`] excludes them, and
    /// [`LeaseMode::Permit`]`(n)` lets `n` holders in (the next one is rejected with
    /// `429 Too Many Requests`, [`Rejection::Capacity`]).
    ///
    /// ```
    /// use http::request::Parts;
    /// use tower_redlock::LeaseMode;
    /// use tower_redlock::extract::LockKey;
    /// use tower_redlock::layer::key::KeyError;
    ///
    /// /// Readers of report 7 share it; at most 3 exports per tenant go the other way.
    /// struct ReportRead;
    ///
    /// impl LockKey for ReportRead {
    ///     fn key(_: &Parts) -> Result<String, KeyError> {
    ///         Ok("report:7".to_owned())
    ///     }
    ///     fn mode() -> LeaseMode {
    ///         LeaseMode::Read
    ///     }
    /// }
    /// ```
    fn mode() -> LeaseMode {
        LeaseMode::Exclusive
    }
}

/// A handler-level lock: extracting it acquires the key [`K::key`](LockKey::key) derives
/// from the request, with the [`Redlock`] of the router state, found as axum's `State`
/// finds its value: [`FromRef`] (`Router::with_state(redlock)`, or a state struct with a
/// `Redlock` field and `#[derive(FromRef)]` or a hand-written `impl FromRef<AppState> for
/// Redlock`).
///
/// Rejects like [`RedlockLayer`](crate::layer::RedlockLayer): `423` when held elsewhere
/// (`429` when every permit is taken, see [`LockKey::mode`]), `503`, `400`. Derefs to [`HeldLock`]; dropped at the end of the handler, it is released in the
/// background — call `locked.into_inner().release().await` to release before answering.
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use http::request::Parts;
/// use tower_redlock::Redlock;
/// use tower_redlock::extract::{LockKey, Locked};
/// use tower_redlock::layer::key::KeyError;
///
/// struct Nightly;
///
/// impl LockKey for Nightly {
///     fn key(_: &Parts) -> Result<String, KeyError> {
///         Ok("job:nightly".to_owned())
///     }
/// }
///
/// async fn run_nightly(lock: Locked<Nightly>) -> String {
///     format!("running, {:?} of lease left", lock.remaining())
/// }
///
/// # fn app(redlock: Redlock) -> Router {
/// Router::new().route("/jobs/nightly", post(run_nightly)).with_state(redlock)
/// # }
/// ```
///
/// With a state of your own, tell axum where its `Redlock` is:
///
/// ```no_run
/// use axum::extract::FromRef;
/// use tower_redlock::Redlock;
///
/// #[derive(Clone)]
/// struct AppState {
///     redlock: Redlock,
///     // ... your database pool, settings ...
/// }
///
/// impl FromRef<AppState> for Redlock {
///     fn from_ref(state: &AppState) -> Redlock {
///         state.redlock.clone()
///     }
/// }
/// ```
pub struct Locked<K> {
    lock: HeldLock,
    key: PhantomData<fn() -> K>,
}

impl<K> Locked<K> {
    /// The lease.
    pub fn into_inner(self) -> HeldLock {
        self.lock
    }
}

impl<K> Deref for Locked<K> {
    type Target = HeldLock;

    fn deref(&self) -> &HeldLock {
        &self.lock
    }
}

impl<K> fmt::Debug for Locked<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Locked").field(&self.lock).finish()
    }
}

impl<S, K> FromRequestParts<S> for Locked<K>
where
    Redlock: FromRef<S>,
    S: Send + Sync,
    K: LockKey,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = K::key(parts)?;
        let lock = Redlock::from_ref(state)
            .acquire_mode_with(key, K::mode(), K::options())
            .await
            .map_err(|error| Rejection::of(error, K::mode()))?;
        Ok(Locked {
            lock,
            key: PhantomData,
        })
    }
}
