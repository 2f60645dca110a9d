//! Passing lagging nodes by.
//!
//! Acquire, extend and release decide as soon as a quorum answered; the other nodes'
//! replies are read in the background, and count as *overdue* on their node until they
//! land. A node that lags (a busy host, a slow disk) piles them up as fast as requests
//! come, and each holds memory until it lands. So once a node has `node_backlog` more
//! overdue replies than the least-behind node, it is *behind*: its calls fail at once, as
//! "no" votes (releases still go, unawaited), until half of its backlog has landed.
//!
//! Two guards keep this from ever costing availability:
//! - the lag is relative: when every node's count rises together (a busy client, a burst
//!   of requests), nobody is behind;
//! - at most as many nodes as the quorum can spare (`total − quorum`) are behind at once:
//!   every call still reaches a quorum of nodes.

use std::sync::atomic::Ordering;

use super::client::Shared;

impl Shared {
    /// A reply of node `index` is left to the background. Returns `true` when this put the
    /// node behind.
    pub(crate) fn straggler_started(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        let overdue = node.add_overdue();
        if overdue < node.backlog() || node.is_behind() {
            return false;
        }
        let least = self.nodes.iter().map(|n| n.overdue()).min().unwrap_or(0);
        if overdue.saturating_sub(least) < node.backlog() {
            return false;
        }
        let spare = self.total() - self.quorum;
        let claimed = self
            .behind
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |behind| {
                (behind < spare).then_some(behind + 1)
            })
            .is_ok();
        if !claimed {
            return false;
        }
        if node.set_behind() {
            return true;
        }
        // Already flagged (a race with its own end): give the claim back.
        self.behind.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// A reply of node `index` left to the background landed or timed out. Returns `true`
    /// when the node caught up (is no longer behind).
    pub(crate) fn straggler_ended(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        let overdue = node.remove_overdue();
        if overdue <= node.backlog() / 2 && node.clear_behind() {
            self.behind.fetch_sub(1, Ordering::AcqRel);
            return true;
        }
        false
    }
}
