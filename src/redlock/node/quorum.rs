//! [`Tally`]: the one quorum count behind every decision (acquire, extend, release, hand-off,
//! fencing write-back, mark).
//!
//! Each node's answer to one call is counted once, as a *yes* (it did what was asked), a
//! *no* (it answered and refused) or a *failure* (an error or a timeout: a "no" vote that
//! may hide a yes). A call is decided as soon as a quorum said yes ([`won`](Tally::won)),
//! or so many nodes said no or failed that a quorum of yeses can no longer come
//! ([`lost`](Tally::lost)).

use super::set::NodeSet;
use crate::redlock::core::error::LockError;

/// The answers of the nodes to one call, counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    total: usize,
    quorum: usize,
    yes: usize,
    no: usize,
    failed: usize,
}

impl Tally {
    /// An empty tally for a call to every node of `nodes`.
    pub(crate) fn new(nodes: &NodeSet) -> Tally {
        Tally::of(nodes.total(), nodes.quorum())
    }

    /// An empty tally for `total` nodes that decide at `quorum`.
    pub(crate) fn of(total: usize, quorum: usize) -> Tally {
        Tally {
            total,
            quorum,
            yes: 0,
            no: 0,
            failed: 0,
        }
    }

    /// Counts a node that did what was asked.
    pub(crate) fn yes(&mut self) {
        self.yes += 1;
    }

    /// Counts a node that answered and refused.
    pub(crate) fn no(&mut self) {
        self.no += 1;
    }

    /// Counts a node that failed or timed out.
    pub(crate) fn failed(&mut self) {
        self.failed += 1;
    }

    /// Nodes that said yes.
    pub(crate) fn yeses(&self) -> usize {
        self.yes
    }

    /// Nodes that answered and refused.
    pub(crate) fn noes(&self) -> usize {
        self.no
    }

    /// A quorum said yes.
    pub(crate) fn won(&self) -> bool {
        self.yes >= self.quorum
    }

    /// A quorum of yeses can no longer come: more than `N − quorum` nodes said no or failed.
    pub(crate) fn lost(&self) -> bool {
        self.no + self.failed > self.total - self.quorum
    }

    /// Won or lost.
    pub(crate) fn decided(&self) -> bool {
        self.won() || self.lost()
    }

    /// More than `N − quorum` nodes *answered* no: whatever the failed ones hid, a quorum
    /// refuses (for a lease: our token is gone for good).
    pub(crate) fn refused(&self) -> bool {
        self.no > self.total - self.quorum
    }

    /// A quorum answered no.
    pub(crate) fn quorum_said_no(&self) -> bool {
        self.no >= self.quorum
    }

    /// Every node is counted.
    pub(crate) fn complete(&self) -> bool {
        self.yes + self.no + self.failed == self.total
    }

    /// The error for a call that was not decided by answers: the quorum is unavailable,
    /// with the nodes that did not fail counted as reachable.
    pub(crate) fn unavailable(&self) -> LockError {
        LockError::unavailable(self.total - self.failed, self.total, self.quorum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_decided_by_a_quorum_of_yeses_or_by_too_many_others() {
        let mut five = Tally::of(5, 3);
        five.yes();
        five.yes();
        five.no();
        five.failed();
        assert!(
            !five.decided(),
            "two yeses and two others: the fifth decides"
        );
        five.yes();
        assert!(five.won() && !five.lost());

        let mut five = Tally::of(5, 3);
        five.no();
        five.failed();
        assert!(!five.lost(), "two of five may fail");
        five.failed();
        assert!(
            five.lost() && !five.refused(),
            "lost, but only one node refused"
        );
        assert!(matches!(
            five.unavailable(),
            LockError::Unavailable {
                reachable: 3,
                total: 5,
                required: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_refusal_needs_more_than_the_nodes_the_quorum_can_spare() {
        let mut three = Tally::of(3, 2);
        three.no();
        assert!(!three.refused());
        three.no();
        assert!(three.refused() && three.quorum_said_no());
        three.yes();
        assert!(three.complete());
    }
}
