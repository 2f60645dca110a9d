//! Per-call options.

use std::sync::Arc;
use std::time::Duration;

use super::retry::RetryPolicy;

/// Options for one acquisition, overriding the [`Redlock`](crate::Redlock)'s defaults.
///
/// ```
/// use std::time::Duration;
/// use tower_redlock::{LockOptions, RetryPolicy};
///
/// let options = LockOptions::new()
///     .ttl(Duration::from_secs(5))
///     .retry(RetryPolicy::until(Duration::from_secs(2)))
///     .max_hold(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) auto_extend: Option<bool>,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) fencing: Option<bool>,
    pub(crate) label: Option<Arc<str>>,
    /// Leave a contended error's `retry_after` at this call's ttl instead of asking the
    /// holder's `PTTL` (one round trip, bare `SET` attempts only): for callers with a
    /// better estimate of their own (the layer's, see `layer::estimate`).
    pub(crate) skip_holder_ttl: bool,
}

impl LockOptions {
    /// Options that use every default of the [`Redlock`](crate::Redlock).
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease's time to live on the nodes (and the watchdog's extension length).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How to retry while the lock is contended or the quorum is unreachable.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// One attempt only (fail fast).
    pub fn no_retry(self) -> Self {
        self.retry(RetryPolicy::none())
    }

    /// Whether a watchdog keeps extending the lease while it is held (default: yes).
    pub fn auto_extend(mut self, on: bool) -> Self {
        self.auto_extend = Some(on);
        self
    }

    /// Stop auto-extending after this long: a liveness bound for runaway holders. The lease
    /// then runs out and [`HeldLock::lost`](crate::HeldLock::lost) resolves.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// Whether to issue a fencing token (overrides the builder's setting). With fencing,
    /// three node timeouts must fit in the ttl less the drift allowance, else the call fails
    /// with [`LockError::InvalidOptions`](crate::LockError::InvalidOptions).
    pub fn fencing(mut self, on: bool) -> Self {
        self.fencing = Some(on);
        self
    }

    /// The `lock` label of this lock's metrics (e.g. a route name). Keep the set of labels
    /// small: never pass raw keys with unbounded values.
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Skip the holder's `PTTL` lookup of a contended single-key, unfenced acquisition: its
    /// [`LockError::Contended`](crate::LockError::Contended) then carries this call's ttl.
    pub(crate) fn skip_holder_ttl(mut self, skip: bool) -> Self {
        self.skip_holder_ttl = skip;
        self
    }
}

/// Options with every default filled in and checked.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) ttl: Duration,
    pub(crate) drift: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) auto_extend: bool,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) fencing: bool,
    pub(crate) label: Arc<str>,
    pub(crate) skip_holder_ttl: bool,
}
