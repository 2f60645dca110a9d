//! Lock keys from requests: the [`KeyExtractor`] trait and ready-made extractors.
//!
//! An extractor looks at the request head and returns
//!
//! - `Ok(Some(key))`: lock `key` while the request runs,
//! - `Ok(None)`: let the request through without a lock,
//! - `Err(KeyError)`: refuse the request (`400 Bad Request`, or `500` for a
//!   [misconfiguration](KeyError::misconfigured)).
//!
//! | extractor | key |
//! |---|---|
//! | [`path()`] | the request path, e.g. `/orders/42/pay` |
//! | [`route()`] (axum) | the matched route and its parameters, e.g. `/orders/{id}/pay?id=42` |
//! | [`param("id")`](param) (axum) | the value of one path parameter, e.g. `42` |
//! | [`header("x-tenant")`](header) | the value of one header |
//! | [`constant("global")`](constant) | always the same key: one request at a time |
//! | [`prefixed("order:", k)`](prefixed) | `k`'s key with a prefix |
//! | [`methods(&[..], k)`](methods), [`mutating(k)`](mutating) | `k`'s key, for some methods only |
//! | a closure `Fn(&Parts) -> Option<String>` | whatever it returns |
//! | [`try_fn(f)`](try_fn) with `f: Fn(&Parts) -> Result<Option<String>, E>` | an `Err` is a `400` |
//!
//! ```
//! use http::request::Parts;
//! use tower_redlock::key::{self, KeyExtractor};
//!
//! // POST/PUT/PATCH/DELETE on one order are serialized; reads are not locked.
//! let per_order = key::mutating(key::param("id")).with_prefix("order:");
//!
//! // Any closure works too.
//! let per_tenant = |parts: &Parts| {
//!     parts.headers.get("x-tenant")?.to_str().ok().map(|t| format!("tenant:{t}"))
//! };
//! # let _ = (per_order, per_tenant);
//! ```

use std::borrow::Cow;
use std::fmt;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};

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
/// use tower_redlock::key;
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

/// The whole request path, as sent (percent-encoded, without the query).
pub fn path() -> Path {
    Path(())
}

/// See [`path()`].
#[derive(Debug, Clone, Copy)]
pub struct Path(());

impl KeyExtractor for Path {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        Ok(Some(parts.uri.path().to_owned()))
    }
}

/// The same key for every request: one request at a time, across every instance.
pub fn constant(key: impl Into<String>) -> Constant {
    Constant(key.into())
}

/// See [`constant`].
#[derive(Debug, Clone)]
pub struct Constant(String);

impl KeyExtractor for Constant {
    fn extract(&self, _parts: &Parts) -> Result<Option<String>, KeyError> {
        Ok(Some(self.0.clone()))
    }
}

/// The value of the header `name`.
///
/// A missing header lets the request through **unlocked** (`None`): combine it with a
/// [`try_fn`] if the header is mandatory. A value that is not UTF-8, or a header sent more
/// than once, is a `400`.
///
/// # Panics
///
/// When `name` is not a valid header name.
pub fn header<N>(name: N) -> Header
where
    N: TryInto<HeaderName>,
    N::Error: fmt::Debug,
{
    Header(name.try_into().expect("key::header: invalid header name"))
}

/// See [`header`].
#[derive(Debug, Clone)]
pub struct Header(HeaderName);

impl KeyExtractor for Header {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        let mut values = parts.headers.get_all(&self.0).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyError::new(format!(
                "the `{}` header must be sent once",
                self.0
            )));
        }
        match std::str::from_utf8(value.as_bytes()) {
            Ok(value) => Ok(Some(value.to_owned())),
            Err(_) => Err(KeyError::new(format!(
                "the `{}` header is not valid UTF-8",
                self.0
            ))),
        }
    }
}

/// Puts `prefix` in front of the keys of `inner`, e.g. to keep the keys of different routes
/// apart: `key::prefixed("order:", key::param("id"))`.
pub fn prefixed<K>(prefix: impl Into<String>, inner: K) -> Prefixed<K> {
    Prefixed {
        prefix: prefix.into(),
        inner,
    }
}

/// See [`prefixed`].
#[derive(Debug, Clone)]
pub struct Prefixed<K> {
    prefix: String,
    inner: K,
}

impl<K: KeyExtractor> KeyExtractor for Prefixed<K> {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        Ok(self
            .inner
            .extract(parts)?
            .map(|key| format!("{}{key}", self.prefix)))
    }
}

/// Locks requests whose method is one of `methods` (with `inner`'s key); others pass through
/// unlocked.
pub fn methods<K>(methods: &[Method], inner: K) -> Methods<K> {
    Methods {
        methods: methods.to_vec(),
        inner,
    }
}

/// Locks `POST`, `PUT`, `PATCH` and `DELETE` requests (with `inner`'s key); reads pass
/// through unlocked.
pub fn mutating<K>(inner: K) -> Methods<K> {
    methods(
        &[Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
        inner,
    )
}

/// See [`methods`].
#[derive(Debug, Clone)]
pub struct Methods<K> {
    methods: Vec<Method>,
    inner: K,
}

impl<K: KeyExtractor> KeyExtractor for Methods<K> {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        if self.methods.contains(&parts.method) {
            self.inner.extract(parts)
        } else {
            Ok(None)
        }
    }
}

#[cfg(feature = "axum")]
pub use self::routing::{Param, Route, param, route};

#[cfg(feature = "axum")]
mod routing {
    use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
    use futures_util::FutureExt;
    use http::request::Parts;

    use super::{KeyError, KeyExtractor};

    /// The matched axum route and its path parameters: `/orders/{id}/pay?id=42`. Values are
    /// percent-decoded, then `%` and `&` in them are escaped, so that different parameters
    /// never give the same key. The method is not part of the key.
    ///
    /// Routing information is there when the layer is applied with `Router::layer`,
    /// `Router::route_layer` or `MethodRouter::layer` (axum applies them per route). When the
    /// layer wraps a whole `Router` as a service, it falls back to the request path, like
    /// [`path()`](super::path). Requests routed to the fallback (no route matched) pass
    /// through unlocked.
    pub fn route() -> Route {
        Route(())
    }

    /// See [`route()`].
    #[derive(Debug, Clone, Copy)]
    pub struct Route(());

    impl KeyExtractor for Route {
        fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
            let Some(matched) = parts.extensions.get::<MatchedPath>() else {
                return Ok(match path_params(parts)? {
                    // Routed, but to the fallback: nothing to lock.
                    Some(_) => None,
                    // Outside routing.
                    None => Some(parts.uri.path().to_owned()),
                });
            };
            let mut key = matched.as_str().to_owned();
            if let Some(params) = path_params(parts)? {
                for (i, (name, value)) in params.iter().enumerate() {
                    key.push(if i == 0 { '?' } else { '&' });
                    key.push_str(name);
                    key.push('=');
                    for c in value.chars() {
                        match c {
                            '%' => key.push_str("%25"),
                            '&' => key.push_str("%26"),
                            c => key.push(c),
                        }
                    }
                }
            }
            Ok(Some(key))
        }
    }

    /// The percent-decoded value of the path parameter `name` (`{name}` in the route).
    ///
    /// Needs routing information: apply the layer with `Router::layer`,
    /// `Router::route_layer` or `MethodRouter::layer`. Wrapping a whole `Router` as a service
    /// is a misconfiguration: every request is refused with a `500` rather than silently left
    /// unlocked. A route without this parameter (or a fallback) passes through unlocked.
    pub fn param(name: impl Into<String>) -> Param {
        Param(name.into())
    }

    /// See [`param`].
    #[derive(Debug, Clone)]
    pub struct Param(String);

    impl KeyExtractor for Param {
        fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
            let Some(params) = path_params(parts)? else {
                return Err(KeyError::misconfigured(format!(
                    "key::param(\"{}\") found no routing information: apply RedlockLayer \
                     with Router::layer, Router::route_layer or MethodRouter::layer",
                    self.0
                )));
            };
            Ok(params
                .iter()
                .find(|(name, _)| *name == self.0)
                .map(|(_, value)| value.to_owned()))
        }
    }

    /// The path parameters axum stored in the extensions; `None` outside routing.
    fn path_params(parts: &Parts) -> Result<Option<RawPathParams>, KeyError> {
        // `RawPathParams` is the only public reader of the params and wants `&mut Parts`.
        let mut head = http::Request::new(()).into_parts().0;
        head.extensions = parts.extensions.clone();
        match RawPathParams::from_request_parts(&mut head, &()).now_or_never() {
            Some(Ok(params)) => Ok(Some(params)),
            Some(Err(
                axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_),
            )) => Err(KeyError::new("a path parameter is not valid UTF-8")),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, uri: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn ready_made_extractors() {
        let get = head(Method::GET, "/orders/42?x=1", &[("x-tenant", b"acme")]);
        assert_eq!(path().extract(&get), Ok(Some("/orders/42".into())));
        assert_eq!(constant("all").extract(&get), Ok(Some("all".into())));
        assert_eq!(header("X-Tenant").extract(&get), Ok(Some("acme".into())));
        assert_eq!(header("x-other").extract(&get), Ok(None));
        let p = path().with_prefix("p:");
        assert_eq!(p.extract(&get), Ok(Some("p:/orders/42".into())));
        assert_eq!(mutating(path()).extract(&get), Ok(None));
        let post = head(Method::POST, "/a", &[]);
        assert_eq!(mutating(path()).extract(&post), Ok(Some("/a".into())));
        assert_eq!(path().for_methods(&[Method::GET]).extract(&post), Ok(None));
    }

    #[test]
    fn bad_headers_are_400() {
        let bad = head(Method::GET, "/", &[("x-tenant", b"\xff\xfe")]);
        let err = header("x-tenant").extract(&bad).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let twice = head(Method::GET, "/", &[("x-tenant", b"a"), ("x-tenant", b"b")]);
        assert!(header("x-tenant").extract(&twice).is_err());
        let utf8 = head(Method::GET, "/", &[("x-tenant", "ключ".as_bytes())]);
        assert_eq!(header("x-tenant").extract(&utf8), Ok(Some("ключ".into())));
    }

    #[test]
    fn closures() {
        let get = head(Method::GET, "/x", &[]);
        let f = from_fn(|parts| Some(parts.uri.path().to_uppercase()));
        assert_eq!(f.extract(&get), Ok(Some("/X".into())));
        let t = try_fn(|_: &Parts| Err::<Option<String>, _>("nope"));
        assert_eq!(t.extract(&get), Err(KeyError::new("nope")));
    }
}
