//! [`NodeSet`]: the engine's nodes, their quorum and the node timeout.

use std::ops::Index;
use std::time::Duration;

use super::member::Node;
use crate::redlock::background::janitor::Janitor;
use crate::redlock::config::node_url::NodeKind;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;

/// The engine's N nodes: a call goes to each, and a majority (`N / 2 + 1`) decides.
pub(crate) struct NodeSet {
    members: Box<[Node]>,
    quorum: usize,
    timeout: Duration,
    /// A node is a Redis Cluster: every lock's keys must share one hash slot.
    has_cluster: bool,
    /// Runs what is left of a call once its caller has decided (late replies, cleanups).
    pub(crate) janitor: Janitor,
}

impl NodeSet {
    /// `members` in order (a node's index is its position), each call bounded by `timeout`.
    pub(crate) fn new(members: Box<[Node]>, timeout: Duration, janitor: Janitor) -> NodeSet {
        let quorum = members.len() / 2 + 1;
        let has_cluster = members.iter().any(|node| node.kind() == NodeKind::Cluster);
        NodeSet {
            members,
            quorum,
            timeout,
            has_cluster,
            janitor,
        }
    }

    /// Checks, before anything is sent, that a lock over `keys` can be taken on every
    /// node: with a Redis Cluster among them, its keys must share one hash slot (a script's
    /// keys must, there). Free when no node is a Cluster.
    pub(crate) fn check_keys(&self, keys: &LockKeys) -> Result<(), LockError> {
        if self.has_cluster && keys.len() > 1 {
            keys.one_slot()?;
        }
        Ok(())
    }

    /// Number of nodes.
    pub(crate) fn total(&self) -> usize {
        self.members.len()
    }

    /// Nodes needed for a decision: `N / 2 + 1`.
    pub(crate) fn quorum(&self) -> usize {
        self.quorum
    }

    /// The per-node timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Node> {
        self.members.iter()
    }

    /// A reply of node `index` is left to the background. Returns `true` when this put the
    /// node behind.
    pub(crate) fn straggler_started(&self, index: usize) -> bool {
        let node = &self.members[index];
        let overdue = node.add_overdue();
        if overdue < node.backlog() || node.is_flagged_behind() {
            return false;
        }
        let least = self.members.iter().map(|n| n.overdue()).min().unwrap_or(0);
        if overdue.saturating_sub(least) < node.backlog() {
            return false;
        }
        node.availability().may_put_behind(index) && node.set_behind()
    }

    /// A reply of node `index` left to the background landed or timed out. Returns `true`
    /// when the node caught up (is no longer behind).
    pub(crate) fn straggler_ended(&self, index: usize) -> bool {
        let node = &self.members[index];
        let overdue = node.remove_overdue();
        overdue <= node.backlog() / 2 && node.clear_behind()
    }

    /// How many nodes a call made now does not reach at all: the skipped ones, and the
    /// behind ones while the budget lets them be passed by.
    pub(crate) fn unreached(&self) -> usize {
        self.members
            .iter()
            .filter(|node| node.is_skipped() || node.is_behind())
            .count()
    }
}

impl Index<usize> for NodeSet {
    type Output = Node;

    fn index(&self, index: usize) -> &Node {
        &self.members[index]
    }
}
