//! Extractors built on another one: [`prefixed`], [`methods`], [`mutating`].

use http::Method;
use http::request::Parts;

use super::text::LogOnce;
use super::{KeyError, KeyExtractor};

/// Puts `prefix` in front of the keys of `inner`: `key::prefixed("order:",
/// key::param_as::<u64>("id"))` locks `order:42`.
///
/// Prefix every request-derived key. Keys share one key space with the keys handlers lock
/// through `Locked<K>` and the engine (`redlock.acquire("report:7")`): without a prefix, a
/// client chooses the key (`POST /orders/report:7/pay` would hold `report:7`). With one
/// prefix per resource kind, a request can only reach keys of its kind — and a job that
/// locks `order:42` on purpose still excludes the request for order 42.
///
/// Missing value: as `inner` (`None` stays `None`, an error stays an error).
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

/// Locks requests whose method is one of `methods` (with `inner`'s key); requests with
/// another method pass through unlocked, on purpose.
///
/// Missing value: an empty `methods` list would lock nothing, which is surely a mistake:
/// every request is refused with a `500` (logged once). For a method in the list, as
/// `inner`.
pub fn methods<K>(methods: &[Method], inner: K) -> Methods<K> {
    Methods {
        methods: methods.to_vec(),
        inner,
        log: LogOnce::default(),
    }
}

/// Locks `POST`, `PUT`, `PATCH` and `DELETE` requests (with `inner`'s key); reads (`GET`,
/// `HEAD`, `OPTIONS`, ...) pass through unlocked, on purpose. Otherwise as `inner`.
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
    log: LogOnce,
}

impl<K: KeyExtractor> KeyExtractor for Methods<K> {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        if self.methods.is_empty() {
            return Err(self.log.misconfigured(KeyError::misconfigured(
                "key::methods was given no method: it would lock nothing",
            )));
        }
        if self.methods.contains(&parts.method) {
            self.inner.extract(parts)
        } else {
            Ok(None)
        }
    }
}
