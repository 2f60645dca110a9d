//! [`Rejection`]: why a request did not run under its lock, and the default responses.

use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::key::KeyError;
use crate::redlock::LockError;
use crate::redlock::json::write_str as json_string;

/// The `tracing` target of per-request rejection logs (at `TRACE`, as axum's own).
pub(crate) const REJECTION_TARGET: &str = "tower_redlock::rejection";

/// Why a request was answered without running under its lock.
///
/// | cause | status | `Retry-After` |
/// |---|---|---|
/// | [`LockError::Contended`] | `423 Locked` | an estimate: see below |
/// | [`Rejection::Capacity`] (every permit taken) | `429 Too Many Requests` | yes |
/// | [`LockError::Unavailable`], [`LockError::Expired`] | `503 Service Unavailable` | yes |
/// | [`LockError::Lost`] (while the handler ran), [`LockError::ShutDown`] | `503 Service Unavailable` | no |
/// | [`LockError::InvalidKey`], [`KeyError::new`] | `400 Bad Request` | no |
/// | [`LockError::InvalidOptions`], [`KeyError::misconfigured`] | `500 Internal Server Error` | no |
///
/// Bodies are RFC 9457 `application/problem+json` documents:
///
/// ```json
/// {"type":"urn:tower-redlock:problem:locked","title":"Resource locked","status":423,
///  "detail":"Another request holds the lock on this resource.","retry_after_ms":1830}
/// ```
///
/// They never contain a lock key or token.
///
/// **`Retry-After` of a `423`** is an estimate of when the lock will be free, not a promise:
/// from [`RedlockLayer`](super::RedlockLayer), the route's typical hold (a moving average of
/// how long its requests held the lock), lowered to the holder's remaining ttl when known;
/// before the route has seen a hold, and from [`LockError::Contended`] elsewhere, the
/// holder's remaining ttl (see [`RedlockLayer`](super::RedlockLayer#retry-after-of-a-423)).
/// Rounded up to whole seconds, at least 1. A retry at that time may still find the lock
/// taken.
///
/// Each rejection is logged at `TRACE` on the `tower_redlock::rejection` target (as axum
/// logs its own on `axum::rejection`): enable it to see why requests were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No key could be derived from the request.
    Key(KeyError),
    /// The lock could not be acquired, or was lost while the handler ran
    /// ([`LockError::Lost`]).
    Lock(LockError),
    /// Every permit of the key is taken ([`RedlockLayer::permits`](super::RedlockLayer::permits)):
    /// `429 Too Many Requests`. Not `423 Locked`: the resource is not locked, its capacity
    /// is used up (RFC 6585 §4).
    #[non_exhaustive]
    Capacity {
        /// When a permit may be free (the estimate of a `423`'s, see above).
        retry_after: Duration,
    },
}

impl Rejection {
    /// The status of the default response.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Key(error) => error.status(),
            Rejection::Lock(error) => lock_status(error),
            Rejection::Capacity { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// When the client may retry (the default response's `Retry-After`): for a `423`, an
    /// estimate (see [`Rejection`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::Key(_) => None,
            Rejection::Lock(error) => error.retry_after(),
            Rejection::Capacity { retry_after } => {
                Some((*retry_after).max(Duration::from_millis(1)))
            }
        }
    }

    /// The default response: status, `Retry-After` when known, and a problem+json body.
    ///
    /// Handy as the fallback of a custom
    /// [`on_rejection`](super::RedlockLayer::on_rejection) handler.
    pub fn to_response(&self) -> Response<String> {
        let retry_after = self.retry_after();
        let mut response = Response::new(self.body_text());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        response
    }

    /// The default response's body: the problem+json document (never the key).
    pub fn body_text(&self) -> String {
        let (kind, title, detail) = self.describe();
        let status = self.status();
        let retry_after = self.retry_after();
        let mut body = String::with_capacity(192);
        body.push_str("{\"type\":");
        json_string(&mut body, &format!("urn:tower-redlock:problem:{kind}"));
        body.push_str(",\"title\":");
        json_string(&mut body, title);
        let _ = write!(body, ",\"status\":{}", status.as_u16());
        body.push_str(",\"detail\":");
        json_string(&mut body, &detail);
        if let Some(after) = retry_after {
            let _ = write!(body, ",\"retry_after_ms\":{}", ceil_millis(after));
        }
        body.push('}');
        body
    }

    /// `(type suffix, title, detail)` of the problem document.
    fn describe(&self) -> (&'static str, &'static str, String) {
        match self {
            Rejection::Key(error) if error.status().is_server_error() => (
                "lock-misconfigured",
                "Lock misconfigured",
                error.message().to_owned(),
            ),
            Rejection::Key(error) => (
                "invalid-lock-key",
                "Invalid lock key",
                error.message().to_owned(),
            ),
            Rejection::Capacity { .. } => (
                "capacity",
                "Too many concurrent requests",
                "Every permit of this resource is taken; retry later.".to_owned(),
            ),
            Rejection::Lock(error) => match error {
                LockError::Contended { .. } => (
                    "locked",
                    "Resource locked",
                    "Another request holds the lock on this resource.".to_owned(),
                ),
                LockError::Unavailable { .. } => (
                    "lock-unavailable",
                    "Lock service unavailable",
                    "Too few lock nodes answered; retry later.".to_owned(),
                ),
                LockError::Expired => (
                    "lock-unavailable",
                    "Lock service unavailable",
                    "The lock nodes answered too slowly; retry later.".to_owned(),
                ),
                LockError::ShutDown => (
                    "lock-unavailable",
                    "Lock service unavailable",
                    "This instance is shutting down; retry later.".to_owned(),
                ),
                LockError::Lost => (
                    "lock-lost",
                    "Lock lost",
                    "The lock was lost while the request was being processed.".to_owned(),
                ),
                LockError::InvalidKey { reason } => {
                    ("invalid-lock-key", "Invalid lock key", reason.clone())
                }
                LockError::InvalidOptions { .. } => (
                    "lock-misconfigured",
                    "Lock misconfigured",
                    "The lock options of this route are invalid.".to_owned(),
                ),
            },
        }
    }
}

fn lock_status(error: &LockError) -> StatusCode {
    match error {
        LockError::Contended { .. } => StatusCode::LOCKED,
        LockError::Unavailable { .. }
        | LockError::Expired
        | LockError::Lost
        | LockError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        LockError::InvalidKey { .. } => StatusCode::BAD_REQUEST,
        LockError::InvalidOptions { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Key(error) => write!(f, "no lock key: {error}"),
            Rejection::Lock(error) => fmt::Display::fmt(error, f),
            Rejection::Capacity { retry_after } => write!(
                f,
                "every permit is taken; retry after {} ms",
                retry_after.as_millis()
            ),
        }
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejection::Key(error) => Some(error),
            Rejection::Lock(error) => Some(error),
            Rejection::Capacity { .. } => None,
        }
    }
}

impl From<KeyError> for Rejection {
    fn from(error: KeyError) -> Self {
        Rejection::Key(error)
    }
}

impl From<LockError> for Rejection {
    fn from(error: LockError) -> Self {
        Rejection::Lock(error)
    }
}

/// Whole milliseconds, rounded up.
fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}

/// `Retry-After` seconds: rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contended_is_423_with_retry_after() {
        let rejection = Rejection::Lock(LockError::Contended {
            retry_after: Duration::from_millis(1500),
        });
        let response = rejection.to_response();
        assert_eq!(response.status(), StatusCode::LOCKED);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body = response.body();
        assert_eq!(*body, rejection.body_text());
        assert!(body.contains("\"status\":423"), "{body}");
        assert!(body.contains("\"retry_after_ms\":1500"), "{body}");
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2000)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_millis(Duration::from_micros(1001)), 2);
    }

    #[test]
    fn statuses() {
        let unavailable = LockError::unavailable(1, 5, 3);
        let cases = [
            (Rejection::Lock(unavailable), 503, true),
            (Rejection::Lock(LockError::Expired), 503, true),
            (Rejection::Lock(LockError::Lost), 503, false),
            (
                Rejection::Lock(LockError::InvalidKey {
                    reason: "empty".into(),
                }),
                400,
                false,
            ),
            (Rejection::Key(KeyError::new("bad \"x\"\n")), 400, false),
            (Rejection::Key(KeyError::misconfigured("m")), 500, false),
        ];
        for (rejection, status, retry) in cases {
            let response = rejection.to_response();
            assert_eq!(response.status().as_u16(), status, "{rejection}");
            assert_eq!(response.headers().contains_key(RETRY_AFTER), retry);
        }
    }
}
