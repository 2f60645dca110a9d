//! The guard that finishes a release dropped half-way.

use std::sync::Arc;

use super::LeaseCore;
use super::release::release_everywhere;
use crate::redlock::background::lifecycle::Busy;

/// A release under way ([`LeaseCore::finish`]). Dropped before it completed, it hands the
/// rest to the engine's background task: the lease is already marked released, so nothing
/// else would release it, and the keys would stay until they expire.
///
/// The rest: after the lease's own carried swap (if any) is decided, our token is deleted
/// from every node (announced), then the local turn, if this lease still has it, is passed
/// on and local waiters are woken. Whatever the dropped release had started has its own
/// drop path: a hand-off's fresh token is released by the dropped `Handoff`
/// (see `handover/handoff.rs`); a carried swap is settled as failed, so the next holder
/// learns its lease is lost and releases the fresh token itself (see `handover/carry.rs`); a turn taken out of
/// the lease is passed on as it drops. A request of ours that the dropped release had
/// already sent runs before this release on the node's connection, so it cannot set our
/// token again after it.
///
/// Disarmed when the release completes: no task, no allocation on that path.
pub(super) struct Unfinished {
    pub(super) core: Option<Arc<LeaseCore>>,
    /// Dropped after the janitor took the rest over (fields drop after `drop` ran).
    pub(super) _busy: Busy,
}

impl Unfinished {
    pub(super) fn disarm(mut self) {
        self.core = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(core) = self.core.take() else {
            return;
        };
        let leases = core.leases.clone();
        leases.nodes.janitor.run(async move {
            if let Some(carried) = core.carried.get() {
                carried.settled().await;
            }
            release_everywhere(core.leases.clone(), core.claim.clone()).await;
            core.pass_turn(core.take_turn());
        });
    }
}
