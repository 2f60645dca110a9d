//! Carried hand-off: the next local holder starts at once, on the ending lease's validity,
//! while the swap to its own fresh token is under way.
//!
//! A [local hand-off](super::handoff) costs the next holder one round trip: the swap must
//! reach a quorum before it may act. But until the ending lease's validity runs out, the
//! keys are held by this process at a quorum anyway (by the old token, or by the new one
//! where the swap landed): mutual exclusion across processes does not depend on the swap,
//! and the local queue gives the turn to exactly one task. So when enough validity is left,
//! the next holder starts now, on that validity, and the swap runs meanwhile:
//!
//! - the swap moves the old token to the next holder's fresh CSPRNG token with a fresh
//!   expiry (validity counted from the start of the call, as for any acquisition). It never
//!   deletes anything, so the keys stay ours while the next holder runs: a token marked by
//!   a waiter in another process moves too, mark included, and the next holder's own end
//!   then releases and announces, so the waiter elsewhere gets its chance after at most one
//!   more local turn;
//! - decided at quorum, the next holder's lease takes the fresh validity; when the swap
//!   fails, the lease is lost ([`HeldLock::lost`](crate::HeldLock::lost) resolves) — with at
//!   least one node timeout of the old validity still left, so the signal comes in time;
//! - the next holder's own release (or hand-off) waits until the swap is decided, so that
//!   on every node it follows the swap.
//!
//! Not with fencing (every holder needs a new fencing token), nor when a waiter elsewhere
//! marked the key, nor with less than two node timeouts of validity left: then the
//! [hand-off](super::handoff) waits for its swap.

use std::sync::Arc;

use tokio::time::Instant;

use super::handoff::Handoff;
use super::queue::LocalTurn;
use crate::redlock::core::error::LockError;
use crate::redlock::core::validity;
use crate::redlock::lease::release::hand_on_call;
use crate::redlock::lease::{Claim, LeaseCore, ReleaseOutcome, Swap, SwapBarrier};
use crate::redlock::node::reply::ReleaseReply;
use crate::redlock::node::{Tally, broadcast, warn_node};

/// Settles the swap as failed if it was not settled (the release was dropped half-way):
/// the next holder must not go on believing in a swap nobody watches.
struct SettleOnDrop(Arc<SwapBarrier>);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if self.0.is_pending() {
            self.0.settle(Swap::Failed);
        }
    }
}

/// Whether `core`'s lease, ending with a local follower waiting, can be carried over: not
/// with fencing, not marked by a waiter elsewhere, and with at least two node timeouts of
/// validity left (the swap's outcome comes within one).
pub(crate) fn can_carry(core: &LeaseCore) -> bool {
    let margin = core.leases.nodes.timeout().saturating_mul(2);
    core.fencing_token.is_none()
        && !core.is_marked()
        && Instant::now()
            .checked_add(margin)
            .is_some_and(|t| t < core.valid_until())
}

/// Hands `core`'s lease to the next local holder at once (through `turn`), then swaps the
/// keys to the holder's fresh token. Returns how the ending lease was released.
pub(crate) async fn carry(
    core: &Arc<LeaseCore>,
    turn: LocalTurn,
) -> Result<ReleaseOutcome, LockError> {
    let leases = &core.leases;
    let nodes = &leases.nodes;
    let next = Arc::new(Claim::new(core.claim.keys.clone()));
    // The new token's validity counts from before the first request, as for any acquisition.
    let start = Instant::now();
    let barrier = SwapBarrier::new();
    let settle = SettleOnDrop(barrier.clone());
    turn.pass(Handoff::carried(
        leases.clone(),
        next.clone(),
        core.ttl,
        core.valid_until(),
        barrier,
    ));
    let ttl_ms = validity::millis_ceil(core.ttl);
    let mut fanout = broadcast(nodes, hand_on_call(&core.claim, &next, ttl_ms, true));
    let (mut tally, mut marked) = (Tally::new(nodes), false);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ReleaseReply::parse(&v)) {
            Ok(ReleaseReply::HandedOver { marked: by_other }) => {
                tally.yes();
                marked |= by_other;
            }
            Ok(ReleaseReply::Released | ReleaseReply::Gone | ReleaseReply::NotOwner) => tally.no(),
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "carry", &error);
            }
        }
        if tally.decided() {
            break;
        }
    }
    fanout.finish_in_background(nodes);
    let drift = validity::drift(core.ttl, core.drift_factor);
    let fresh = validity::validity(core.ttl, start.elapsed(), drift);
    let swap = match fresh {
        Some(_) if tally.won() => Swap::Moved {
            valid_until: start + core.ttl.saturating_sub(drift),
            marked,
        },
        _ => Swap::Failed,
    };
    settle.0.settle(swap);
    if tally.won() {
        Ok(ReleaseOutcome::Released)
    } else if tally.noes() > 0 {
        // Refused: our token had gone where it was asked.
        Ok(ReleaseOutcome::AlreadyExpired)
    } else {
        Err(tally.unavailable())
    }
}
