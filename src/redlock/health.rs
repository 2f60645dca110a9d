//! Health: per-node reachability, latency, version and memory, the quorum, and a real
//! test-lock round trip on a reserved key.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::breaker::BreakerState;
use super::client::{Redlock, Shared};
use super::fanout::Fanout;
use super::node::Call;
use super::options::LockOptions;

/// The reserved key of the health check's test lock.
pub const HEALTH_KEY: &str = "__tower_redlock_health__";

/// One node's health.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct NodeHealth {
    /// Position in the configured node list.
    pub index: usize,
    /// The node URL, password redacted.
    pub url: String,
    /// Whether the node answered `PING` within the node timeout.
    pub reachable: bool,
    /// Round-trip time of the `PING`.
    pub latency: Option<Duration>,
    /// `redis_version` from `INFO`.
    pub redis_version: Option<String>,
    /// `used_memory` from `INFO`, in bytes.
    pub used_memory: Option<u64>,
    /// Why the node is not reachable.
    pub error: Option<String>,
    /// Whether locks were skipping the node when the check began: it had stopped answering
    /// and had not answered a probe since. An answer to this check's `PING` ends that.
    pub skipped: bool,
    /// Whether locks were passing the node by when the check began: too many of its
    /// replies were overdue (see
    /// [`RedlockBuilder::node_backlog`](crate::RedlockBuilder::node_backlog)).
    pub behind: bool,
}

/// The result of [`Redlock::health`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HealthReport {
    /// Every node, in configured order.
    pub nodes: Vec<NodeHealth>,
    /// Nodes that answered.
    pub reachable: usize,
    /// Nodes needed for a quorum.
    pub quorum: usize,
    /// Whether enough nodes answered to form a quorum.
    pub quorum_reachable: bool,
    /// Whether a real lock on a reserved key could be acquired and released.
    pub test_lock_ok: bool,
    /// How long the test lock's acquire + release took.
    pub test_lock_latency: Option<Duration>,
    /// The test lock's error, if any.
    pub test_lock_error: Option<String>,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
}

impl HealthReport {
    /// `true` when a quorum is reachable and the test lock worked.
    pub fn is_healthy(&self) -> bool {
        self.quorum_reachable && self.test_lock_ok
    }

    /// The report as a JSON object (no serde needed).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + 160 * self.nodes.len());
        let _ = write!(
            out,
            r#"{{"status":"{}","reachable":{},"quorum":{},"quorum_reachable":{},"test_lock_ok":{},"test_lock_latency_ms":{},"test_lock_error":{},"breaker":"{}","nodes":["#,
            if self.is_healthy() { "up" } else { "down" },
            self.reachable,
            self.quorum,
            self.quorum_reachable,
            self.test_lock_ok,
            opt_ms(self.test_lock_latency),
            opt_str(self.test_lock_error.as_deref()),
            breaker_name(self.breaker),
        );
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"index":{},"url":{},"reachable":{},"skipped":{},"behind":{},"latency_ms":{},"redis_version":{},"used_memory":{},"error":{}}}"#,
                node.index,
                json_str(&node.url),
                node.reachable,
                node.skipped,
                node.behind,
                opt_ms(node.latency),
                opt_str(node.redis_version.as_deref()),
                node.used_memory
                    .map_or_else(|| "null".to_owned(), |m| m.to_string()),
                opt_str(node.error.as_deref()),
            );
        }
        out.push_str("]}");
        out
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Disabled => "disabled",
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "null".to_owned(),
        |d| format!("{:.3}", d.as_secs_f64() * 1e3),
    )
}

fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads `field:value` from an `INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Node `index` before its check: not known to be reachable.
fn unchecked(shared: &Shared, index: usize) -> NodeHealth {
    let node = &shared.nodes[index];
    NodeHealth {
        index,
        url: node.url.redacted().to_owned(),
        reachable: false,
        latency: None,
        redis_version: None,
        used_memory: None,
        error: None,
        skipped: node.is_skipped(),
        behind: node.is_behind(),
    }
}

async fn probe(shared: Arc<Shared>, index: usize) -> (usize, NodeHealth) {
    let node = &shared.nodes[index];
    let mut health = unchecked(&shared, index);
    let start = Instant::now();
    match node.query(&Call::Command(redis::cmd("PING"))).await {
        Ok(_) => {
            health.reachable = true;
            health.latency = Some(start.elapsed());
            node.answered();
        }
        Err(e) => {
            health.error = Some(e.to_string());
            return (index, health);
        }
    }
    let mut info = redis::cmd("INFO");
    info.arg("server").arg("memory");
    if let Ok(value) = node.query(&Call::Command(info)).await {
        let text = match value {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => String::new(),
        };
        health.redis_version = info_field(&text, "redis_version").map(str::to_owned);
        health.used_memory = info_field(&text, "used_memory").and_then(|m| m.parse().ok());
    }
    (index, health)
}

impl Redlock {
    /// Checks every node (`PING`, `INFO`) and takes a real test lock on a reserved key.
    ///
    /// Every call is bounded by the node timeout, so this returns within a few of them
    /// even when nodes are down.
    pub async fn health(&self) -> HealthReport {
        let shared = &self.shared;
        // Two calls per node (PING, then INFO), each bounded by the node timeout.
        let limit = shared.config.node_timeout.saturating_mul(2);
        let mut fanout = Fanout::new(shared.total(), limit, |index| {
            let shared = shared.clone();
            async move {
                let (index, health) = probe(shared, index).await;
                (index, Ok::<_, super::node::NodeError>(health))
            }
        });
        let mut nodes = Vec::with_capacity(shared.total());
        while let Some((index, health)) = fanout.next().await {
            // A node whose check ran out of time is in the report too, as unreachable.
            nodes.push(health.unwrap_or_else(|error| NodeHealth {
                error: Some(error.to_string()),
                ..unchecked(shared, index)
            }));
        }
        nodes.sort_by_key(|n| n.index);
        let reachable = nodes.iter().filter(|n| n.reachable).count();
        let start = Instant::now();
        let options = LockOptions::new().no_retry().auto_extend(false);
        let test = match self.acquire_with(HEALTH_KEY, options).await {
            Ok(lock) => lock.release().await.map(drop),
            Err(e) => Err(e),
        };
        HealthReport {
            reachable,
            quorum: shared.quorum,
            quorum_reachable: reachable >= shared.quorum,
            test_lock_ok: test.is_ok(),
            test_lock_latency: test.is_ok().then(|| start.elapsed()),
            test_lock_error: test.err().map(|e| e.to_string()),
            breaker: shared.breaker.state(),
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_and_json_escaping() {
        let info = "# Server\r\nredis_version:7.0.15\r\nused_memory:1234\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "used_memory"), Some("1234"));
        assert_eq!(info_field(info, "nope"), None);
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
