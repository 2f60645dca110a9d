//! [`RedlockBuilder::build`](super::RedlockBuilder::build): checks the settings, then
//! wires the engine: nodes, leases, local hand-over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::RedlockBuilder;
use crate::redlock::background::janitor::Janitor;
use crate::redlock::background::lifecycle::Lifecycle;
use crate::redlock::config::fence_ttl;
use crate::redlock::config::node_url::NodeUrl;
use crate::redlock::config::settings::Settings;
use crate::redlock::core::error::ConfigError;
use crate::redlock::core::telemetry;
use crate::redlock::core::validity;
use crate::redlock::engine::Engine;
use crate::redlock::handle::Redlock;
use crate::redlock::lease::Leases;
use crate::redlock::node::backlog::Availability;
use crate::redlock::node::breaker::Breaker;
use crate::redlock::node::{Node, NodeSet};
use crate::redlock::ops::health::settings;
use crate::redlock::sim::SimNode;
use crate::redlock::wake::WakeHub;

const MAX_PREFIX_LEN: usize = 256;

/// Most connections per node [`RedlockBuilder::pool_size`] accepts.
const MAX_POOL_SIZE: usize = 64;

/// Most simulated nodes [`RedlockBuilder::in_memory`] accepts.
const MAX_IN_MEMORY: usize = 64;

/// Checks `builder`'s settings, makes the nodes and connects to them, and starts the engine.
pub(super) async fn build(builder: RedlockBuilder) -> Result<Redlock, ConfigError> {
    let RedlockBuilder {
        nodes,
        ttl,
        retry,
        drift_factor,
        node_timeout,
        node_backlog,
        pool_size,
        key_prefix,
        fencing,
        max_hold,
        fence_ttl,
        breaker,
        labeler,
        tls_root,
        simulated,
        local_handover,
    } = builder;
    if let Some(simulated) = &simulated {
        if !nodes.is_empty() {
            return Err(ConfigError::InvalidInMemory(
                "node URLs were given too: use in_memory or nodes, not both".to_owned(),
            ));
        }
        if !(1..=MAX_IN_MEMORY).contains(&simulated.len()) {
            return Err(ConfigError::InvalidInMemory(format!(
                "{} nodes; 1 to {MAX_IN_MEMORY} allowed",
                simulated.len()
            )));
        }
    } else if nodes.is_empty() {
        return Err(ConfigError::NoNodes);
    }
    if !drift_factor.is_finite() || !(0.0..0.5).contains(&drift_factor) {
        return Err(ConfigError::InvalidDriftFactor(drift_factor));
    }
    validity::check_ttl(ttl, drift_factor)
        .map_err(|reason| ConfigError::InvalidTtl { ttl, reason })?;
    if node_backlog == 0 {
        return Err(ConfigError::InvalidNodeBacklog(node_backlog));
    }
    if !(1..=MAX_POOL_SIZE).contains(&pool_size) {
        return Err(ConfigError::InvalidPoolSize(pool_size));
    }
    if node_timeout.is_zero() {
        return Err(ConfigError::InvalidNodeTimeout {
            timeout: node_timeout,
            reason: "must be larger than zero".to_owned(),
        });
    }
    if node_timeout >= ttl {
        return Err(ConfigError::InvalidNodeTimeout {
            timeout: node_timeout,
            reason: format!("must be smaller than the ttl of {ttl:?}"),
        });
    }
    if fencing {
        validity::check_fenced_timeout(ttl, drift_factor, node_timeout).map_err(|reason| {
            ConfigError::InvalidNodeTimeout {
                timeout: node_timeout,
                reason,
            }
        })?;
    }
    let fence_ttl = fence_ttl::resolve(fence_ttl, ttl, max_hold)?;
    if key_prefix.len() > MAX_PREFIX_LEN {
        return Err(ConfigError::InvalidKeyPrefix(format!(
            "{} bytes long; at most {MAX_PREFIX_LEN} allowed",
            key_prefix.len()
        )));
    }
    if key_prefix.chars().any(char::is_control) {
        return Err(ConfigError::InvalidKeyPrefix(
            "contains control characters".to_owned(),
        ));
    }
    // The hash tag that keeps one lock's keys in one Cluster slot follows the prefix: a brace
    // in the prefix would become the tag and put every lock in one slot.
    if key_prefix.contains(['{', '}']) {
        return Err(ConfigError::InvalidKeyPrefix(
            "contains `{` or `}` (the lock key's hash tag follows the prefix)".to_owned(),
        ));
    }
    retry.validate()?;
    // Checked before anything spawns a task or makes a timer (which would panic).
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ConfigError::NoRuntime);
    }

    let (nodes, wake) = match simulated {
        Some(simulated) => simulated_nodes(simulated, node_timeout, node_backlog)?,
        None => redis_nodes(&nodes, node_timeout, node_backlog, pool_size, tls_root)?,
    };
    let (total, quorum) = (nodes.len(), nodes.len() / 2 + 1);
    if total % 2 == 0 {
        tracing::warn!(
            nodes = total,
            quorum,
            "an even number of Redlock nodes tolerates no more failures than {} nodes \
             would: the quorum is {quorum} of {total}; use an odd count",
            total - 1
        );
    }
    // Connect to every node at once (bounded by the node timeout), so that a burst of
    // first requests does not queue behind connection set-up. Down nodes are fine.
    futures_util::future::join_all(nodes.iter().map(Node::warm_up)).await;
    telemetry::engine_started(nodes.len());
    let lifecycle = Arc::new(Lifecycle::default());
    let janitor = Janitor::start(lifecycle.clone());
    let nodes = Arc::new(NodeSet::new(nodes, node_timeout, janitor));
    let engine = Arc::new(Engine {
        leases: Arc::new(Leases::start(nodes, wake, lifecycle, drift_factor)),
        settings: Settings {
            ttl,
            drift_factor,
            retry,
            node_timeout,
            key_prefix,
            fencing,
            max_hold,
            fence_ttl,
        },
        breaker: Breaker::new(breaker),
        queues: local_handover.then(Arc::default),
        labeler,
        no_label: Arc::from(""),
    });
    // Settings that break locks (eviction, no persistence) are logged, not refused.
    settings::log_in_background(&engine);
    Ok(Redlock { engine })
}

/// Parses the node URLs and makes the nodes and wake-on-release for them.
fn redis_nodes(
    raw: &[String],
    node_timeout: Duration,
    node_backlog: usize,
    pool_size: usize,
    tls_root: Option<Vec<u8>>,
) -> Result<(Box<[Node]>, Arc<WakeHub>), ConfigError> {
    let mut seen = HashSet::new();
    let mut parsed = Vec::with_capacity(raw.len());
    for (index, raw) in raw.iter().enumerate() {
        let url = NodeUrl::parse_at(index, raw)?;
        if !seen.insert(url.identity()) {
            return Err(ConfigError::DuplicateNode {
                index,
                url: url.redacted().to_owned(),
            });
        }
        parsed.push(url);
    }
    let availability = availability_of(parsed.len());
    let wake = Arc::new(WakeHub::new(&parsed, node_timeout, tls_root.as_deref()));
    let nodes = parsed
        .into_iter()
        .enumerate()
        .map(|(index, url)| {
            let redacted = url.redacted().to_owned();
            Node::new(
                url,
                index,
                availability.clone(),
                node_timeout,
                node_backlog,
                pool_size,
                tls_root.as_deref(),
            )
            .map_err(|_| ConfigError::InvalidNodeUrl {
                index,
                url: redacted,
                reason: "the Redis client rejected it".to_owned(),
            })
        })
        .collect::<Result<Box<[Node]>, _>>()?;
    Ok((nodes, wake))
}

/// Nodes on simulated nodes. Wake-on-release has no pub/sub connection to make: waiters
/// hear this engine's releases directly and notice others' on the fallback timer.
fn simulated_nodes(
    simulated: Vec<SimNode>,
    node_timeout: Duration,
    node_backlog: usize,
) -> Result<(Box<[Node]>, Arc<WakeHub>), ConfigError> {
    let availability = availability_of(simulated.len());
    let wake = Arc::new(WakeHub::new(&[], node_timeout, None));
    let nodes = simulated
        .into_iter()
        .enumerate()
        .map(|(index, node)| {
            let url = NodeUrl::in_memory(index)?;
            Ok(Node::simulated(
                url,
                index,
                availability.clone(),
                node_timeout,
                node_backlog,
                node,
            ))
        })
        .collect::<Result<Box<[Node]>, ConfigError>>()?;
    Ok((nodes, wake))
}

fn availability_of(total: usize) -> Arc<Availability> {
    Arc::new(Availability::new(total, total / 2 + 1))
}
