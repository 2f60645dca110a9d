//! Passing lagging nodes by, within the failure budget the quorum leaves.
//!
//! Acquire, extend and release decide as soon as a quorum answered; the other nodes'
//! replies are read in the background, and count as *overdue* on their node until they
//! land. A node that lags (a busy host, a slow disk) piles them up as fast as requests
//! come, and each holds memory until it lands. So once a node has `node_backlog` more
//! overdue replies than the least-behind node, it is *behind*: its calls fail at once, as
//! "no" votes, until half of its backlog has landed. Calls that must reach it (releases,
//! fencing write-backs: [`Call::must_reach`](super::Call::must_reach)) still go,
//! unanswered, on its connection.
//!
//! # The budget
//!
//! A quorum can spare `total − quorum` nodes. Nodes that are down or frozen (*skipped*, see
//! [`recovery`](super::recovery)) already spend that budget, and passing a node by spends
//! it too. So:
//! - a node is put behind only while the nodes unavailable now (skipped or behind, each
//!   counted once) are fewer than `total − quorum`;
//! - and since a node can be skipped at any time, each call checks the budget again
//!   ([`Availability::passes_by`]): while more nodes are skipped or behind than the quorum
//!   can spare, no node is passed by — calls go to the lagging nodes and wait for them,
//!   slower, but never short of a quorum because of pass-by.
//!
//! So pass-by alone never makes a call reach fewer nodes than a quorum: every call is sent
//! to at least `quorum` nodes unless more than `total − quorum` nodes are *skipped* (then
//! the quorum is unavailable whatever we do). Racing updates can at worst put one node too
//! many behind for a moment; the per-call check then passes nobody by, so the error is
//! always on the side of sending.
//!
//! The lag is relative, too: when every node's count rises together (a busy client, a
//! burst of requests), nobody is behind.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::redlock::core::telemetry;

/// Which nodes calls do not reach now: skipped ones, and those passed by. One per engine,
/// shared by its nodes (each reads the others' state to check the budget).
#[derive(Debug)]
pub(crate) struct Availability {
    /// How many nodes the quorum can spare: `total − quorum`.
    spare: usize,
    skipped: Box<[AtomicBool]>,
    behind: Box<[AtomicBool]>,
}

impl Availability {
    /// Every node available, for `total` nodes of which `quorum` must answer.
    pub(crate) fn new(total: usize, quorum: usize) -> Availability {
        let flags = || (0..total).map(|_| AtomicBool::new(false)).collect();
        Availability {
            spare: total.saturating_sub(quorum),
            skipped: flags(),
            behind: flags(),
        }
    }

    /// Nodes skipped or behind now, each counted once.
    pub(crate) fn unavailable(&self) -> usize {
        (0..self.skipped.len())
            .filter(|&i| self.is_skipped(i) || self.is_flagged_behind(i))
            .count()
    }

    /// Whether the budget allows passing behind nodes by now: skipped and behind nodes
    /// together are no more than the quorum can spare.
    pub(crate) fn passes_by(&self) -> bool {
        self.unavailable() <= self.spare
    }

    /// Whether putting node `index` behind stays within the budget.
    pub(super) fn may_put_behind(&self, index: usize) -> bool {
        // A skipped node is unavailable already: flagging it costs nothing more.
        self.is_skipped(index) || self.unavailable() < self.spare
    }

    pub(crate) fn is_skipped(&self, index: usize) -> bool {
        self.skipped[index].load(Ordering::SeqCst)
    }

    pub(crate) fn set_skipped(&self, index: usize, skipped: bool) {
        // A swap costs what a sequentially consistent store does, and tells a change.
        if self.skipped[index].swap(skipped, Ordering::SeqCst) != skipped {
            telemetry::node_up(index, !skipped);
        }
    }

    pub(crate) fn is_flagged_behind(&self, index: usize) -> bool {
        self.behind[index].load(Ordering::SeqCst)
    }

    /// Flags node `index` behind; `false` when it already was.
    pub(crate) fn set_behind(&self, index: usize) -> bool {
        let changed = !self.behind[index].swap(true, Ordering::SeqCst);
        if changed {
            telemetry::node_behind(index, true);
        }
        changed
    }

    /// Clears node `index`'s behind flag; `false` when it was not set.
    pub(crate) fn clear_behind(&self, index: usize) -> bool {
        let changed =
            self.is_flagged_behind(index) && self.behind[index].swap(false, Ordering::SeqCst);
        if changed {
            telemetry::node_behind(index, false);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redlock::node::NodeSet;

    const BACKLOG: usize = 2;

    /// An engine on five nodes that refuse connections (nothing is sent in these tests).
    async fn engine() -> crate::Redlock {
        crate::Redlock::builder()
            .nodes((0..5).map(|db| format!("redis://127.0.0.1:1/{db}")))
            .node_backlog(BACKLOG)
            .build()
            .await
            .unwrap()
    }

    /// Leaves a backlog of node `index`'s replies to the background.
    fn lag(shared: &NodeSet, index: usize) {
        for _ in 0..BACKLOG {
            shared.straggler_started(index);
        }
    }

    /// Nodes a call does not reach: skipped or passed by.
    fn unreached(shared: &NodeSet) -> usize {
        (0..shared.total())
            .filter(|&i| shared[i].is_skipped() || shared[i].is_behind())
            .count()
    }

    fn passed_by(shared: &NodeSet) -> Vec<usize> {
        (0..shared.total())
            .filter(|&i| shared[i].is_behind())
            .collect()
    }

    #[tokio::test]
    async fn with_a_node_skipped_only_one_lagging_node_is_passed_by() {
        let redlock = engine().await;
        let shared = redlock.engine.nodes();
        shared[4].skip();
        lag(shared, 0);
        lag(shared, 1);
        assert_eq!(passed_by(shared), [0]);
        // Calls still go to three nodes: 1, 2 and 3.
        assert_eq!(unreached(shared), 2);
    }

    #[tokio::test]
    async fn a_node_skipped_while_two_lag_stops_passing_them_by() {
        let redlock = engine().await;
        let shared = redlock.engine.nodes();
        lag(shared, 0);
        lag(shared, 1);
        assert_eq!(passed_by(shared), [0, 1]);
        shared[4].skip();
        // Passing both by would leave two nodes of five: calls go to them again.
        assert_eq!(passed_by(shared), [] as [usize; 0]);
        assert_eq!(unreached(shared), 1);
        // Once the node answers again, the budget allows passing them by again.
        shared[4].answered();
        assert_eq!(passed_by(shared), [0, 1]);
    }

    /// Five nodes: the quorum (3) can spare two.
    fn five() -> Availability {
        Availability::new(5, 3)
    }

    #[test]
    fn skipped_nodes_spend_the_budget_of_behind_ones() {
        let nodes = five();
        nodes.set_skipped(4, true);
        assert!(nodes.may_put_behind(0));
        assert!(nodes.set_behind(0));
        // One skipped and one behind: the quorum can spare no more.
        assert!(!nodes.may_put_behind(1));
        assert!(nodes.passes_by());
        // A skipped node may also be flagged: it is unavailable already.
        assert!(nodes.may_put_behind(4));
    }

    #[test]
    fn a_node_skipped_while_two_are_behind_stops_all_pass_by() {
        let nodes = five();
        assert!(nodes.set_behind(0));
        assert!(nodes.set_behind(1));
        assert!(nodes.passes_by());
        nodes.set_skipped(4, true);
        // Three unavailable of five: passing the lagging two by would leave two nodes.
        assert_eq!(nodes.unavailable(), 3);
        assert!(!nodes.passes_by());
        nodes.set_skipped(4, false);
        assert!(nodes.passes_by());
    }

    #[test]
    fn a_node_both_skipped_and_behind_counts_once() {
        let nodes = five();
        nodes.set_skipped(0, true);
        assert!(nodes.set_behind(0));
        assert!(nodes.set_behind(1));
        assert_eq!(nodes.unavailable(), 2);
        assert!(nodes.passes_by());
    }
}
