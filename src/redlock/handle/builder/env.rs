//! Configuration from environment variables ([`RedlockBuilder::with_env`]).
//!
//! An error names the variable and what is wrong with it, never its value: `REDLOCK_NODES`
//! may carry passwords, and a value that failed to parse may be a secret pasted into the
//! wrong variable.

use std::time::Duration;

use super::RedlockBuilder;
use crate::redlock::config::retry::RetryPolicy;
use crate::redlock::core::error::ConfigError;

/// Reads the `REDLOCK_*` variables through `get` over `builder`'s settings (see
/// [`RedlockBuilder::with_env`]).
pub(super) fn apply(
    builder: &mut RedlockBuilder,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match get("REDLOCK_NODES") {
        Some(list) => {
            builder.nodes = node_list(&list);
            if builder.nodes.is_empty() {
                return Err(invalid("REDLOCK_NODES", "no node URL in the list"));
            }
        }
        None if builder.nodes.is_empty() => {
            return Err(invalid(
                "REDLOCK_NODES",
                "not set; give comma-separated redis:// URLs",
            ));
        }
        None => {}
    }
    if let Some(ms) = get("REDLOCK_TTL_MS") {
        builder.ttl = millis("REDLOCK_TTL_MS", &ms)?;
    }
    if let Some(ms) = get("REDLOCK_NODE_TIMEOUT_MS") {
        builder.node_timeout = millis("REDLOCK_NODE_TIMEOUT_MS", &ms)?;
    }
    if let Some(prefix) = get("REDLOCK_KEY_PREFIX") {
        builder.key_prefix = prefix;
    }
    if let Some(on) = get("REDLOCK_FENCING") {
        builder.fencing = boolean("REDLOCK_FENCING", &on)?;
    }
    if let Some(path) = get("REDLOCK_TLS_CA") {
        builder.tls_root = Some(tls_ca(&path)?);
    }
    if let Some(factor) = get("REDLOCK_DRIFT_FACTOR") {
        builder.drift_factor = drift_factor(&factor)?;
    }
    if let Some(ms) = get("REDLOCK_MAX_HOLD_MS") {
        let limit = millis("REDLOCK_MAX_HOLD_MS", &ms)?;
        if limit.is_zero() {
            return Err(invalid(
                "REDLOCK_MAX_HOLD_MS",
                "must be at least 1 (leave it unset for no limit)",
            ));
        }
        builder.max_hold = Some(limit);
    }
    if let Some(n) = get("REDLOCK_NODE_BACKLOG") {
        builder.node_backlog = match n.trim().parse::<usize>() {
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
        builder.pool_size = match n.trim().parse::<usize>() {
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
        builder.retry = retry_until(builder.retry, deadline);
    }
    Ok(())
}

/// The node URLs of a `REDLOCK_NODES` list: comma-separated, where a piece without
/// `://` continues the previous URL's host list (a Cluster's seeds, a Sentinel group):
/// `redis://a:6379,redis+cluster://c1:7000,c2:7000,redis+sentinel://s1:26379,s2:26379/m`
/// is three nodes.
fn node_list(list: &str) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for piece in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match nodes.last_mut() {
            Some(previous) if !piece.contains("://") => {
                previous.push(',');
                previous.push_str(piece);
            }
            _ => nodes.push(piece.to_owned()),
        }
    }
    nodes
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

#[cfg(test)]
mod tests {
    use super::node_list;

    #[test]
    fn a_node_list_keeps_multi_host_urls_whole() {
        assert_eq!(
            node_list(
                " redis://a:6379, redis+cluster://:pw@c1:7000,c2:7000 ,\
                 redis+sentinel://s1:26379,s2:26379/orders,unix:///run/r.sock,"
            ),
            [
                "redis://a:6379",
                "redis+cluster://:pw@c1:7000,c2:7000",
                "redis+sentinel://s1:26379,s2:26379/orders",
                "unix:///run/r.sock",
            ]
        );
        assert_eq!(
            node_list("redis://a:1,redis://b:2"),
            ["redis://a:1", "redis://b:2"]
        );
        // A host after a standalone URL joins it, and the URL is then refused as a whole.
        assert_eq!(node_list("redis://a:1,b:2"), ["redis://a:1,b:2"]);
        assert!(node_list(" , ").is_empty());
    }
}
