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

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::time::Instant;

use super::acquire::{finish_in_background, warn_node};
use super::error::LockError;
use super::handoff::Handoff;
use super::lease::{Claim, HeldLock, LeaseCore, ReleaseOutcome};
use super::node::reply::ReleaseReply;
use super::queue::LocalTurn;
use super::release::{hand_on_call, release_outcome};
use super::validity;

/// What the swap behind a carried hand-off decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swap {
    /// Still under way.
    Pending,
    /// A quorum took the new token: the lease is valid until `valid_until`; `marked`: a
    /// waiter in another process marked the key.
    Moved { valid_until: Instant, marked: bool },
    /// No quorum took it: the lease is lost.
    Failed,
}

/// The swap behind a carried hand-off, and the lease that took it.
pub(crate) struct Carried {
    swap: watch::Sender<Swap>,
    taker: Mutex<Weak<LeaseCore>>,
}

impl Carried {
    fn new() -> Arc<Carried> {
        Arc::new(Carried {
            swap: watch::Sender::new(Swap::Pending),
            taker: Mutex::new(Weak::new()),
        })
    }

    /// Waits until the swap is decided.
    pub(crate) async fn settled(&self) -> Swap {
        let mut swap = self.swap.subscribe();
        match swap.wait_for(|s| *s != Swap::Pending).await {
            Ok(swap) => *swap,
            Err(_) => Swap::Failed,
        }
    }

    /// Calls `take` with the swap's state as of now; the lease it returns is carried over:
    /// it takes the swap's outcome, now or when it comes.
    pub(crate) fn take_with(
        self: &Arc<Self>,
        take: impl FnOnce(Swap) -> Option<HeldLock>,
    ) -> Option<HeldLock> {
        let mut taker = self.taker.lock().unwrap_or_else(|e| e.into_inner());
        let swap = *self.swap.borrow();
        let lock = take(swap)?;
        let core = lock.core();
        core.set_carried(self.clone());
        core.carried_settled(swap);
        if swap == Swap::Pending {
            *taker = Arc::downgrade(core);
        }
        Some(lock)
    }

    fn settle(&self, swap: Swap) {
        self.swap.send_replace(swap);
        // Under the lock `take_with` holds: a lease taken before is found here, one taken
        // after sees the outcome itself.
        let taker = self
            .taker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        if let Some(core) = taker {
            core.carried_settled(swap);
        }
    }
}

/// Settles the swap as failed if it was not settled (the release was dropped half-way):
/// the next holder must not go on believing in a swap nobody watches.
struct SettleOnDrop(Arc<Carried>);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if *self.0.swap.borrow() == Swap::Pending {
            self.0.settle(Swap::Failed);
        }
    }
}

/// Whether `core`'s lease, ending with a local follower waiting, can be carried over: not
/// with fencing, not marked by a waiter elsewhere, and with at least two node timeouts of
/// validity left (the swap's outcome comes within one).
pub(crate) fn can_carry(core: &LeaseCore) -> bool {
    let margin = core.shared.config.node_timeout.saturating_mul(2);
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
    let shared = &core.shared;
    let (total, quorum) = (shared.total(), shared.quorum);
    let next = Arc::new(Claim::new(core.claim.keys.clone()));
    // The new token's validity counts from before the first request, as for any acquisition.
    let start = Instant::now();
    let carried = Carried::new();
    let settle = SettleOnDrop(carried.clone());
    turn.pass(Handoff::carried(
        shared.clone(),
        next.clone(),
        core.ttl,
        core.valid_until(),
        carried,
    ));
    let ttl_ms = validity::millis_ceil(core.ttl);
    let mut fanout = shared.broadcast(hand_on_call(&core.claim, &next, ttl_ms, true));
    let (mut moved, mut marked, mut refused, mut failed) = (0, false, 0, 0);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ReleaseReply::parse(&v)) {
            Ok(ReleaseReply::HandedOver { marked: false }) => moved += 1,
            Ok(ReleaseReply::HandedOver { marked: true }) => (moved, marked) = (moved + 1, true),
            Ok(ReleaseReply::Released | ReleaseReply::Gone | ReleaseReply::NotOwner) => {
                refused += 1
            }
            Err(error) => {
                failed += 1;
                warn_node(shared, index, "carry", &error);
            }
        }
        if moved >= quorum || refused + failed > total - quorum {
            break;
        }
    }
    finish_in_background(shared, fanout);
    let drift = validity::drift(core.ttl, core.drift_factor);
    let fresh = validity::validity(core.ttl, start.elapsed(), drift);
    let swap = match fresh {
        Some(_) if moved >= quorum => Swap::Moved {
            valid_until: start + core.ttl.saturating_sub(drift),
            marked,
        },
        _ => Swap::Failed,
    };
    settle.0.settle(swap);
    if moved >= quorum {
        Ok(ReleaseOutcome::Released)
    } else {
        release_outcome(0, 0, refused, failed, total, quorum)
    }
}
