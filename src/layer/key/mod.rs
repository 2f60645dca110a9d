//! Lock keys from requests: the [`KeyExtractor`] trait and ready-made extractors.
//!
//! An extractor looks at the request head and returns
//!
//! - `Ok(Some(key))`: lock `key` while the request runs,
//! - `Ok(None)`: let the request through without a lock,
//! - `Err(KeyError)`: refuse the request (`400 Bad Request`, or `500` for a
//!   [misconfiguration](KeyError::misconfigured)).
//!
//! Where a missing value most likely means a mistake, the ready-made extractors fail
//! closed (refuse the request) rather than run it unlocked; `.optional()` opts out where
//! that makes sense. Misconfigurations are logged once per extractor at `error` level
//! (target `tower_redlock::layer::key`), not per request.
//!
//! | extractor | key | missing value |
//! |---|---|---|
//! | [`param_as::<u64>("id")`](param_as) (axum) | the parsed path parameter, e.g. `42` for `042` | route without `{id}`: `500`; [`.optional()`](ParamAs::optional): unlocked. Does not parse: `400` |
//! | [`param("id")`](param) (axum) | the text of one path parameter, e.g. `042` | route without `{id}`: `500`; [`.optional()`](Param::optional): unlocked |
//! | [`route()`] (axum) | the matched route and its parameters, e.g. `/orders/{id}/pay?id=42` | fallback: unlocked |
//! | [`path()`] | the request path, decoded and normalised, e.g. `/orders/42/pay` | — |
//! | [`header("x-tenant")`](header) | the value of one header | `400`; [`.optional()`](Header::optional): unlocked |
//! | [`constant("global")`](constant) | always the same key: one request at a time | — (empty key: `500`) |
//! | [`prefixed("order:", k)`](prefixed) | `k`'s key with a prefix | as `k` |
//! | [`methods(&[..], k)`](methods), [`mutating(k)`](mutating) | `k`'s key, for some methods only | other methods: unlocked; no methods: `500` |
//! | a closure `Fn(&Parts) -> Option<String>` | whatever it returns | `None`: unlocked |
//! | [`try_fn(f)`](try_fn) with `f: Fn(&Parts) -> Result<Option<String>, E>` | an `Err` is a `400` | `None`: unlocked |
//!
//! Every path-based extractor (`param`, `param_as`, `route`, `path`) lets a request target
//! without a path (`CONNECT host:443`, `OPTIONS *`) through unlocked: no route can match it,
//! so the router answers with its own `404`/`405`.
//!
//! **The key is the text; two spellings of one resource are two keys.** `param`, `route`,
//! `path`, `header` and closures key on text: if `/orders/42` and `/orders/042` are one
//! order to your handler, they are still two keys, and two requests run at once. Key ids on
//! their parsed value with [`param_as`].
//!
//! **Prefix every request-derived key.** Keys from requests share one key space with the
//! keys handlers lock through `Locked<K>` and the engine (`redlock.acquire(..)`). An
//! unprefixed `param("id")` lets a client pick any key (`/orders/report:7/pay` holds
//! `report:7`); [`prefixed`] confines each route to keys of its own kind. Locking the same
//! key from a request and a job on purpose still works: give both the same prefix.
//!
//! ```
//! use http::request::Parts;
//! use tower_redlock::layer::key::{self, KeyExtractor};
//!
//! // POST/PUT/PATCH/DELETE on one order are serialized; reads are not locked.
//! let per_order = key::mutating(key::param_as::<u64>("id")).with_prefix("order:");
//!
//! // Any closure works too.
//! let per_tenant = |parts: &Parts| {
//!     parts.headers.get("x-tenant")?.to_str().ok().map(|t| format!("tenant:{t}"))
//! };
//! # let _ = (per_order, per_tenant);
//! ```

mod basic;
mod combine;
#[cfg(feature = "axum")]
mod routing;
mod text;

use std::borrow::Cow;
use std::fmt;

use http::request::Parts;
use http::{Method, StatusCode};

pub use self::basic::{Constant, Header, Path, constant, header, path, try_header};
pub use self::combine::{Methods, Prefixed, methods, mutating, prefixed};
#[cfg(feature = "axum")]
pub use self::routing::{Param, ParamAs, Route, param, param_as, route};

/// Derives the lock key of a request from its head.
///
/// Implemented for closures `Fn(&Parts) -> Option<String>`; wrap closures that can fail in
/// [`try_fn`]. Keys longer than [`MAX_KEY_LEN`](crate::redlock::MAX_KEY_LEN) bytes, or empty,
/// are refused by the engine with a `400`.
pub trait KeyExtractor {
    /// The key for this request; `Ok(None)` lets the request through without a lock.
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError>;

    /// Puts `prefix` in front of every key (see [`prefixed`]).
    fn with_prefix(self, prefix: impl Into<String>) -> Prefixed<Self>
    where
        Self: Sized,
    {
        prefixed(prefix, self)
    }

    /// Locks only requests with one of `methods` (see [`methods`]).
    fn for_methods(self, methods: &[Method]) -> Methods<Self>
    where
        Self: Sized,
    {
        self::methods(methods, self)
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String>,
{
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        Ok(self(parts))
    }
}

/// Why no key could be derived from a request.
///
/// Its message is shown to the client: never put the key itself (or secrets) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    message: Cow<'static, str>,
    status: StatusCode,
}

impl KeyError {
    /// The request is malformed (`400 Bad Request`).
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        KeyError {
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// The server is misconfigured, e.g. an extractor needs routing information that is not
    /// there (`500 Internal Server Error`).
    pub fn misconfigured(message: impl Into<Cow<'static, str>>) -> Self {
        KeyError {
            message: message.into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyError {}

/// Helps type inference for a closure extractor: `key::from_fn(|parts| ...)` needs no
/// annotation on `parts`.
pub fn from_fn<F>(f: F) -> F
where
    F: Fn(&Parts) -> Option<String>,
{
    f
}

/// An extractor from a closure that can fail: its error becomes a `400` whose detail is the
/// error's `Display` text.
///
/// ```
/// use tower_redlock::layer::key;
///
/// let by_account = key::try_fn(|parts| {
///     let Some(value) = parts.headers.get("x-account") else {
///         return Ok(None);
///     };
///     let id: u64 = value.to_str()?.parse()?;
///     Ok::<_, Box<dyn std::error::Error>>(Some(format!("account:{id}")))
/// });
/// # let _ = by_account;
/// ```
pub fn try_fn<F, E>(f: F) -> TryFn<F>
where
    F: Fn(&Parts) -> Result<Option<String>, E>,
    E: fmt::Display,
{
    TryFn(f)
}

/// See [`try_fn`].
#[derive(Clone, Copy)]
pub struct TryFn<F>(F);

impl<F> fmt::Debug for TryFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TryFn").finish_non_exhaustive()
    }
}

impl<F, E> KeyExtractor for TryFn<F>
where
    F: Fn(&Parts) -> Result<Option<String>, E>,
    E: fmt::Display,
{
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        (self.0)(parts).map_err(|error| KeyError::new(error.to_string()))
    }
}

#[cfg(test)]
mod tests;
