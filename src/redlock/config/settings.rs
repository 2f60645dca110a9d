//! [`Settings`]: the engine-wide settings every operation reads.

use std::time::Duration;

use super::retry::RetryPolicy;

/// Settings shared by every operation of one engine (checked by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) retry: RetryPolicy,
    pub(crate) node_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) fencing: bool,
    pub(crate) max_hold: Option<Duration>,
    /// How long fencing counters outlive their last use (see `fence_ttl.rs`).
    pub(crate) fence_ttl: Duration,
}
