//! Simulated Redis nodes for deterministic tests: engines on nodes in this process, faults
//! injected per node, and the nodes' keys to look at afterwards. No `redis-server` needed,
//! and everything runs on `tokio::time`, so a test may pause time
//! (`tokio::runtime::Builder::start_paused`) and replay a seeded run exactly.
//!
//! The nodes answer the engine's requests as `redis-server` does (the crate's differential
//! tests check it); see [`Fault`] for what can go wrong with them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use tower_redlock::sim::{Fault, SimCluster};
//!
//! let cluster = SimCluster::new(3, 7);
//! let redlock = cluster.builder().build().await.unwrap();
//! cluster.inject(0, Fault::Partition(true));
//! let lock = redlock.try_acquire("k").await.unwrap(); // 2 of 3 is a quorum
//! assert!(cluster.keys(1).contains(&b"redlock:{k}:lock".to_vec()));
//! lock.release().await.unwrap();
//! # }
//! ```

use std::time::Duration;

use crate::redlock::sim::SimNode;
use crate::{Redlock, RedlockBuilder};

/// One fault (or its end) on one simulated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Every round trip takes `fixed` plus up to `jitter` (drawn from the node's seeded
    /// generator).
    Delay {
        /// Always added.
        fixed: Duration,
        /// A uniform share of it is added.
        jitter: Duration,
    },
    /// While on, requests are applied but their replies never come.
    DropReplies(bool),
    /// While on, requests and replies are lost (neither applied nor answered) and new
    /// connections fail; a connection that lost something stays silent afterwards.
    Partition(bool),
    /// Stops the node (`SIGSTOP`): requests wait, unapplied; keys keep expiring.
    Pause,
    /// Resumes a paused node.
    Resume,
    /// Clears delay, dropped replies, partition and pause.
    Heal,
    /// Restarts the node without its data: keys lost, connections broken.
    RestartEmpty,
    /// Restarts the node with its data (as `appendfsync always`): connections broken.
    RestartWithData,
}

/// Simulated Redis nodes shared by any number of engines in this process.
#[derive(Clone)]
pub struct SimCluster {
    nodes: Vec<SimNode>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl SimCluster {
    /// `nodes` empty nodes without faults; node `i`'s jitter is drawn from a generator
    /// seeded with `seed` and `i`.
    pub fn new(nodes: usize, seed: u64) -> SimCluster {
        let nodes = (0..nodes as u64)
            .map(|i| SimNode::with_seed(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        SimCluster { nodes }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A builder of an engine on these nodes (every other setting at its default; give no
    /// node URLs).
    pub fn builder(&self) -> RedlockBuilder {
        Redlock::builder().simulated_nodes(self.nodes.clone())
    }

    /// Sets (or ends) `fault` on node `node`; an index out of range does nothing.
    pub fn inject(&self, node: usize, fault: Fault) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        match fault {
            Fault::Delay { fixed, jitter } => n.set_delay(fixed, jitter),
            Fault::DropReplies(on) => n.drop_replies(on),
            Fault::Partition(on) => n.partition(on),
            Fault::Pause => n.pause(),
            Fault::Resume => n.resume(),
            Fault::Heal => n.heal(),
            Fault::RestartEmpty => n.restart_empty(),
            Fault::RestartWithData => n.restart_with_data(),
        }
    }

    /// Every key alive on node `node` now, sorted (empty for an index out of range).
    pub fn keys(&self, node: usize) -> Vec<Vec<u8>> {
        self.nodes.get(node).map(SimNode::keys).unwrap_or_default()
    }

    /// The value of `key` on node `node` now.
    pub fn value(&self, node: usize, key: &str) -> Option<Vec<u8>> {
        self.nodes.get(node).and_then(|n| n.value(key))
    }

    /// `PTTL` of `key` on node `node` now (`-2`: no such key or node).
    pub fn pttl(&self, node: usize, key: &str) -> i64 {
        self.nodes.get(node).map_or(-2, |n| n.pttl(key))
    }
}
