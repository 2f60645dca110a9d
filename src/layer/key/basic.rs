//! Extractors that need no routing: [`path()`], [`constant`], [`header`].

use http::HeaderName;
use http::request::Parts;

use super::text::{LogOnce, names_no_path, normalize_path, refuse_control};
use super::{KeyError, KeyExtractor};

/// The request path (without the query), percent-decoded and normalised: `/orders/42/pay`,
/// `/orders/%34%32/pay/` and `//orders/./42/pay` all give `/orders/42/pay`.
///
/// What is normalised: every `%XX` is decoded; empty (`//`) and `.` segments are dropped;
/// `..` removes the segment before it (never above the root); a trailing slash is dropped
/// (the root stays `/`); a `%` or `/` inside a segment is written back as `%25` / `%2F` (so
/// `a%2Fb` and `a/b` stay two keys). A few paths a router tells apart (`/a/` and `/a`) thus
/// share a key, which only locks more.
///
/// **The key is the text; two spellings of one resource are two keys**: `/orders/42` and
/// `/orders/042` are two keys even if the handler parses both as `42` — use
/// [`param_as`](super::param_as) for ids.
///
/// Missing value: a request target without a path (the authority form of `CONNECT`,
/// `OPTIONS *`) passes through unlocked, to the router's own `404`/`405`. Refused with a
/// `400`: a bad percent-encoding (`%ZZ`), a path that is not UTF-8 once decoded, or one with
/// a control character.
pub fn path() -> Path {
    Path(())
}

/// See [`path()`].
#[derive(Debug, Clone, Copy)]
pub struct Path(());

impl KeyExtractor for Path {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        if names_no_path(parts) {
            return Ok(None);
        }
        normalize_path(parts.uri.path()).map(Some)
    }
}

/// The same key for every request: one request at a time, across every instance.
///
/// Never missing. An empty `key` is a misconfiguration: every request is refused with a
/// `500` (logged once) instead of a `400` per request.
pub fn constant(key: impl Into<String>) -> Constant {
    Constant {
        key: key.into(),
        log: LogOnce::default(),
    }
}

/// See [`constant`].
#[derive(Debug, Clone)]
pub struct Constant {
    key: String,
    log: LogOnce,
}

impl KeyExtractor for Constant {
    fn extract(&self, _parts: &Parts) -> Result<Option<String>, KeyError> {
        if self.key.is_empty() {
            return Err(self.log.misconfigured(KeyError::misconfigured(
                "key::constant(\"\") is an empty key",
            )));
        }
        Ok(Some(self.key.clone()))
    }
}

/// The value of the header `name`, as sent.
///
/// **The key is the text; two spellings of one resource are two keys** (`Acme` and `acme`,
/// ` acme` with a space). Prefix it: see [`prefixed`](super::prefixed).
///
/// Missing value: a request without the header (or with an empty value) is refused with a
/// `400`, so that a client cannot skip the lock by leaving the header out;
/// [`Header::optional`] lets such requests through unlocked instead. Also a `400`: a value
/// that is not UTF-8, has a control character, or a header sent more than once.
///
/// An invalid `name` does not panic: every request is refused with a `500` (logged once).
/// Use [`try_header`] to get the error when the layer is built, e.g. for a name read from
/// configuration.
pub fn header<N>(name: N) -> Header
where
    N: TryInto<HeaderName>,
{
    Header {
        name: name.try_into().ok(),
        optional: false,
        log: LogOnce::default(),
    }
}

/// [`header`], or the error when `name` is not a valid header name.
///
/// ```
/// use tower_redlock::layer::key;
///
/// assert!(key::try_header("x-tenant").is_ok());
/// assert!(key::try_header("x tenant").is_err());
/// ```
pub fn try_header<N>(name: N) -> Result<Header, N::Error>
where
    N: TryInto<HeaderName>,
{
    Ok(header(name.try_into()?))
}

/// See [`header`].
#[derive(Debug, Clone)]
pub struct Header {
    /// `None`: the name given was invalid.
    name: Option<HeaderName>,
    optional: bool,
    log: LogOnce,
}

impl Header {
    /// Lets requests without the header (or with an empty value) through **unlocked**
    /// instead of refusing them with a `400`. For a header that only some clients send
    /// on purpose; never for one that names what must not run twice.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl KeyExtractor for Header {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        let Some(name) = &self.name else {
            return Err(self.log.misconfigured(KeyError::misconfigured(
                "key::header was given an invalid header name",
            )));
        };
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(KeyError::new(format!(
                "the `{name}` header must be sent once"
            )));
        }
        let value = match first {
            Some(value) if !value.is_empty() => value,
            _ if self.optional => return Ok(None),
            _ => return Err(KeyError::new(format!("the `{name}` header is required"))),
        };
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
            return Err(KeyError::new(format!(
                "the `{name}` header is not valid UTF-8"
            )));
        };
        refuse_control(value, || format!("the `{name}` header"))?;
        Ok(Some(value.to_owned()))
    }
}
