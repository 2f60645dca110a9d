//! Health: per-node reachability, latency, version and memory, the quorum, and a real
//! test-lock round trip.
//!
//! The test lock is one of the engine's own locks: every check takes a fresh random key
//! in the internal namespace ([`LockKeys::internal`]), which no user key can name, so two
//! checks at once (in one process or on two instances) never contend, and no client can
//! make the check fail by holding a key. It is a single attempt made directly, past the
//! circuit breaker (which it neither consults nor feeds) and past the acquire metrics (its
//! label records nothing), without fencing (a fencing counter per random key would stay on
//! the nodes for `fence_ttl`). The JSON views are in [`json`] (and `serialize`, with the
//! `serde` feature); the settings check ([`Redlock::check_config`](crate::Redlock::check_config)) in [`settings`].

mod json;
#[cfg(feature = "serde")]
mod serialize;
pub(crate) mod settings;

pub use settings::{NodeSettings, SettingWarning, SettingsReport};

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::redlock::acquire;
use crate::redlock::config::node_url::NodeKind;
use crate::redlock::config::options::LockOptions;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::telemetry;
use crate::redlock::engine::Engine;
use crate::redlock::node::breaker::BreakerState;
use crate::redlock::node::{Call, Fanout, NodeError};

/// One node's health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// Position in the configured node list.
    pub index: usize,
    /// The node URL, password redacted.
    pub url: String,
    /// What kind of Redis the node is.
    pub kind: NodeKind,
    /// For a Cluster or Sentinel node, its current primary (a Cluster's: every primary,
    /// comma-separated) as `host:port`, when known.
    pub primary: Option<String>,
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

/// The result of [`Redlock::health`](crate::Redlock::health). As JSON: [`to_json`](HealthReport::to_json) (public)
/// and [`to_json_detailed`](HealthReport::to_json_detailed); with the `serde` feature,
/// `Serialize` writes the detailed document, byte for byte.
#[derive(Debug, Clone, PartialEq)]
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

    /// The public view: `status` (`up`/`down`), `reachable`, `quorum`,
    /// `quorum_reachable`, `test_lock_ok`, `breaker` (`closed`, `open`, `half_open`,
    /// `disabled`), and per node only `index`, `reachable`, `skipped` and `behind`. No node
    /// URL, Redis version, memory figure, latency or error text: safe to serve to anyone who
    /// can reach the health route.
    ///
    /// [`to_json_detailed`](HealthReport::to_json_detailed) has everything.
    pub fn to_json(&self) -> String {
        json::document(self, json::View::Public)
    }

    /// The detailed view: the public fields plus `test_lock_latency_us` and
    /// `test_lock_error`, and per node its redacted `url`, `PING` `latency_us`,
    /// `redis_version`, `used_memory` (bytes) and `error` (`null` when unknown). For
    /// operators only (an internal port, an authenticated route): it tells where the nodes
    /// are and what they run. With the `serde` feature, serializing the report gives this
    /// document.
    pub fn to_json_detailed(&self) -> String {
        json::document(self, json::View::Detailed)
    }
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
fn unchecked(engine: &Engine, index: usize) -> NodeHealth {
    let node = &engine.nodes()[index];
    NodeHealth {
        index,
        url: node.url.redacted().to_owned(),
        kind: node.kind(),
        primary: None,
        reachable: false,
        latency: None,
        redis_version: None,
        used_memory: None,
        error: None,
        skipped: node.is_skipped(),
        behind: node.is_behind(),
    }
}

async fn probe(engine: Arc<Engine>, index: usize) -> (usize, NodeHealth) {
    let node = &engine.nodes()[index];
    let mut health = unchecked(&engine, index);
    let start = Instant::now();
    match node.query(&Call::Command(redis::cmd("PING"))).await {
        Ok(_) => {
            health.reachable = true;
            health.latency = Some(start.elapsed());
            health.primary = node.primary();
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

/// Takes and releases a lock on a fresh internal key: one attempt, past the breaker and the
/// metrics (see the module docs).
async fn test_lock(engine: &Arc<Engine>) -> Result<(), LockError> {
    let keys = Arc::new(LockKeys::internal(&engine.settings.key_prefix, "health"));
    let options = LockOptions::new()
        .no_retry()
        .auto_extend(false)
        .fencing(false)
        .label(telemetry::internal_label());
    let resolved = engine.resolve(&options, &keys.user)?;
    let lock = acquire::attempt(engine, &keys, &resolved).await?;
    lock.release().await.map(drop)
}

/// Checks every node (`PING`, `INFO`) and takes a real test lock (see
/// [`Redlock::health`](crate::Redlock::health)).
pub(crate) async fn check(engine: &Arc<Engine>) -> HealthReport {
    // Two calls per node (PING, then INFO), each bounded by the node timeout.
    let total = engine.nodes().total();
    let limit = engine.nodes().timeout().saturating_mul(2);
    let mut fanout = Fanout::new(total, limit, |index| {
        let engine = engine.clone();
        async move {
            let (index, health) = probe(engine, index).await;
            (index, Ok::<_, NodeError>(health))
        }
    });
    let mut nodes = Vec::with_capacity(total);
    while let Some((index, health)) = fanout.next().await {
        // A node whose check ran out of time is in the report too, as unreachable.
        nodes.push(health.unwrap_or_else(|error| NodeHealth {
            error: Some(error.to_string()),
            ..unchecked(engine, index)
        }));
    }
    nodes.sort_by_key(|n| n.index);
    let reachable = nodes.iter().filter(|n| n.reachable).count();
    let start = Instant::now();
    let test = test_lock(engine).await;
    let quorum = engine.nodes().quorum();
    HealthReport {
        reachable,
        quorum,
        quorum_reachable: reachable >= quorum,
        test_lock_ok: test.is_ok(),
        test_lock_latency: test.is_ok().then(|| start.elapsed()),
        test_lock_error: test.err().map(|e| e.to_string()),
        breaker: engine.breaker.state(),
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nused_memory:1234\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "used_memory"), Some("1234"));
        assert_eq!(info_field(info, "nope"), None);
    }

    #[test]
    fn internal_keys_are_fresh_and_out_of_user_reach() {
        let a = LockKeys::internal("p:", "health");
        let b = LockKeys::internal("p:", "health");
        assert_ne!(a.lock_keys(), b.lock_keys());
        let lock = &a.lock_keys()[0];
        assert!(lock.starts_with("p:internal:{health:"), "{lock}");
        assert!(lock.ends_with("}:lock"), "{lock}");
        assert_eq!(lock.len(), "p:internal:{health:}:lock".len() + 32);
        assert!(a.fence_keys()[0].ends_with("}:fence"));
        assert!(a.channels()[0].ends_with("}:released"));
        // Whatever text a user key has, its Redis names start with `{` after the prefix,
        // never with `internal:`.
        let suffix = lock.strip_prefix("p:").unwrap();
        for user in [
            suffix,
            lock.as_str(),
            "internal:lock:health:0",
            "internal:{health:0}",
            "__tower_redlock_health__",
        ] {
            let keys = LockKeys::new("p:", [user]).unwrap();
            let names = keys
                .lock_keys()
                .iter()
                .chain(keys.fence_keys())
                .chain(keys.channels());
            for name in names {
                assert!(!name.starts_with("p:internal:"), "{name}");
                assert_ne!(name, lock);
            }
        }
    }
}
