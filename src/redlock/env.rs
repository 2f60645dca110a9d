//! Configuration from environment variables ([`RedlockBuilder::with_env`]).
//!
//! An error names the variable and what is wrong with it, never its value: `REDLOCK_NODES`
//! may carry passwords, and a value that failed to parse may be a secret pasted into the
//! wrong variable.

use std::time::Duration;

use super::builder::RedlockBuilder;
use super::error::ConfigError;
use super::retry::RetryPolicy;

impl RedlockBuilder {
    /// Reads these variables over the current settings (an unset variable changes
    /// nothing):
    ///
    /// | variable | setting | value |
    /// |---|---|---|
    /// | `REDLOCK_NODES` | [`nodes`](Self::nodes) | comma-separated `redis://` / `rediss://` URLs (required unless nodes were given) |
    /// | `REDLOCK_TTL_MS` | [`ttl`](Self::ttl) | milliseconds |
    /// | `REDLOCK_NODE_TIMEOUT_MS` | [`node_timeout`](Self::node_timeout) | milliseconds |
    /// | `REDLOCK_KEY_PREFIX` | [`key_prefix`](Self::key_prefix) | text |
    /// | `REDLOCK_FENCING` | [`fencing`](Self::fencing) | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) |
    /// | `REDLOCK_TLS_CA` | `tls_root_certificate` | path of a PEM file (feature `tls`) |
    /// | `REDLOCK_DRIFT_FACTOR` | [`drift_factor`](Self::drift_factor) | a number in `[0, 0.5)` |
    /// | `REDLOCK_MAX_HOLD_MS` | [`max_hold`](Self::max_hold) | milliseconds, at least 1 |
    /// | `REDLOCK_NODE_BACKLOG` | [`node_backlog`](Self::node_backlog) | a whole number, at least 1 |
    /// | `REDLOCK_POOL_SIZE` | [`pool_size`](Self::pool_size) | a whole number, 1 to 64 |
    /// | `REDLOCK_RETRY_MS` | [`retry`](Self::retry)'s overall deadline | milliseconds; `0`: one attempt, no retry |
    ///
    /// A value that cannot be used is a [`ConfigError::InvalidEnv`] naming the variable.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// Like [`with_env`](Self::with_env), reading variables through `get` (e.g. from a map,
    /// in tests, or from a secrets store).
    pub fn with_vars(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        match get("REDLOCK_NODES") {
            Some(list) => {
                self.nodes = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if self.nodes.is_empty() {
                    return Err(invalid("REDLOCK_NODES", "no node URL in the list"));
                }
            }
            None if self.nodes.is_empty() => {
                return Err(invalid(
                    "REDLOCK_NODES",
                    "not set; give comma-separated redis:// URLs",
                ));
            }
            None => {}
        }
        if let Some(ms) = get("REDLOCK_TTL_MS") {
            self.ttl = millis("REDLOCK_TTL_MS", &ms)?;
        }
        if let Some(ms) = get("REDLOCK_NODE_TIMEOUT_MS") {
            self.node_timeout = millis("REDLOCK_NODE_TIMEOUT_MS", &ms)?;
        }
        if let Some(prefix) = get("REDLOCK_KEY_PREFIX") {
            self.key_prefix = prefix;
        }
        if let Some(on) = get("REDLOCK_FENCING") {
            self.fencing = boolean("REDLOCK_FENCING", &on)?;
        }
        if let Some(path) = get("REDLOCK_TLS_CA") {
            self.tls_root = Some(tls_ca(&path)?);
        }
        if let Some(factor) = get("REDLOCK_DRIFT_FACTOR") {
            self.drift_factor = drift_factor(&factor)?;
        }
        if let Some(ms) = get("REDLOCK_MAX_HOLD_MS") {
            let limit = millis("REDLOCK_MAX_HOLD_MS", &ms)?;
            if limit.is_zero() {
                return Err(invalid(
                    "REDLOCK_MAX_HOLD_MS",
                    "must be at least 1 (leave it unset for no limit)",
                ));
            }
            self.max_hold = Some(limit);
        }
        if let Some(n) = get("REDLOCK_NODE_BACKLOG") {
            self.node_backlog = match n.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(invalid(
                        "REDLOCK_NODE_BACKLOG",
                        "expected a whole number, at least 1",
                    ));
                }
            };
        }
        if let Some(n) = get("REDLOCK_POOL_SIZE") {
            self.pool_size = match n.trim().parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "REDLOCK_POOL_SIZE",
                        "expected a whole number from 1 to 64",
                    ));
                }
            };
        }
        if let Some(ms) = get("REDLOCK_RETRY_MS") {
            let deadline = millis("REDLOCK_RETRY_MS", &ms)?;
            self.retry = retry_until(self.retry, deadline);
        }
        Ok(self)
    }
}

fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::InvalidEnv {
        var,
        reason: reason.to_owned(),
    }
}

fn millis(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| invalid(var, "expected a whole number of milliseconds"))
}

fn boolean(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            var,
            "expected true or false (or 1/0, yes/no, on/off)",
        )),
    }
}

fn drift_factor(value: &str) -> Result<f64, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(factor) if factor.is_finite() && (0.0..0.5).contains(&factor) => Ok(factor),
        _ => Err(invalid(
            "REDLOCK_DRIFT_FACTOR",
            "expected a number in [0, 0.5), e.g. 0.01",
        )),
    }
}

/// The retry policy with overall deadline `deadline` (zero: one attempt). The policy's
/// backoff is kept; one that made a single attempt gets the default backoff.
fn retry_until(current: RetryPolicy, deadline: Duration) -> RetryPolicy {
    if deadline.is_zero() {
        RetryPolicy::none()
    } else if current.max_attempts() > 1 {
        current.deadline(deadline)
    } else {
        RetryPolicy::until(deadline)
    }
}

/// The PEM certificates of the file at `path`.
#[cfg(feature = "tls")]
fn tls_ca(path: &str) -> Result<Vec<u8>, ConfigError> {
    const VAR: &str = "REDLOCK_TLS_CA";
    let pem = std::fs::read(path.trim()).map_err(|error| ConfigError::InvalidEnv {
        var: VAR,
        reason: format!("cannot read the file it names: {}", error.kind()),
    })?;
    let has_certificate = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----");
    if !has_certificate {
        return Err(invalid(VAR, "the file it names holds no PEM certificate"));
    }
    Ok(pem)
}

/// Without TLS support, a CA cannot be used: refused rather than ignored (the deployment
/// expects its nodes to be verified against it).
#[cfg(not(feature = "tls"))]
fn tls_ca(_path: &str) -> Result<Vec<u8>, ConfigError> {
    Err(invalid(
        "REDLOCK_TLS_CA",
        "set, but this build has no TLS support (enable the `tls` feature)",
    ))
}
