//! Extension of a lease: compare-only, validity counted from the start of the call, one
//! at a time per lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::{Claim, LeaseCore, LeaseState, batch};
use crate::redlock::core::error::LockError;
use crate::redlock::core::scripts::EXTEND;
use crate::redlock::core::telemetry::{self, KeyHash};
use crate::redlock::core::validity;
use crate::redlock::node::reply::ExtendReply;
use crate::redlock::node::{Call, NodeSet, Tally, broadcast, node_failed, warn_node};
use crate::redlock::shared::calls;

/// Extends every key to `ttl` from now, if a quorum still holds our token.
///
/// Validity counts from the start of this call. Compare-only: never re-creates an
/// expired key; refuses once the local validity has lapsed; a failure deletes nothing.
///
/// `valid_until` never overstates what a quorum of nodes holds. An extension sets each
/// key's expiry, shorter or longer than before, so two of them racing (a user's
/// `extend(60 s)` and the watchdog's `extend(ttl)`, or two clones) could land in one
/// order on the nodes and finish in the other here. So:
/// - extensions of a lease run one at a time, and each holds its turn until its
///   outcome is applied to the lease and every reply of its fan-out is in or timed
///   out (the late ones are read in the background; see [`extension_round`]): the
///   next one's requests are queued after all of its requests, on
///   each node's connection, and so run after them. The outcome of the last extension
///   to finish is then the latest on the nodes that answered it. (A request whose
///   connection is replaced meanwhile loses that order; it timed out first.)
/// - before its first request, `valid_until` is lowered to `start + ttl − drift`:
///   from then on each node holds either its previous expiry or at least that, so the
///   lower of the two is safe whatever becomes of the requests (a failure, a timeout,
///   the call dropped half-way). On quorum it is set to `start + ttl − drift`.
/// - a carried-over lease first waits for its swap and applies it itself (see
///   [`carried_settled`](Self::carried_settled)).
pub(crate) async fn extend(core: &Arc<LeaseCore>, ttl: Duration) -> Result<(), LockError> {
    let span = tracing::debug_span!(
        "redlock.extend",
        key = %KeyHash::of(&core.claim.keys.user),
        ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        ok = tracing::field::Empty,
    );
    let result = tracing::Instrument::instrument(extend_inner(core, ttl), span.clone()).await;
    span.record("ok", result.is_ok());
    if result.is_err() {
        telemetry::extend_failed(&core.label);
    }
    result
}

/// The extension call of one lease: a reader's own (see `shared/`), else [`EXTEND`].
pub(crate) fn extend_call(claim: &Claim, ttl_ms: u64) -> Call {
    let keys = &claim.keys;
    if let Some(call) = calls::extend(keys, claim.token.as_bytes(), ttl_ms) {
        return call;
    }
    Call::script(&EXTEND, keys.len(), |cmd| {
        cmd.arg(keys.lock_keys())
            .arg(claim.token.as_bytes())
            .arg(ttl_ms)
            .arg(keys.len());
    })
}

async fn extend_inner(core: &Arc<LeaseCore>, ttl: Duration) -> Result<(), LockError> {
    // Our turn: held until every reply of this extension is in (see `extend`).
    let turn = core.extending.clone().lock_owned().await;
    if let Some(carried) = core.carried.get() {
        // Carried over: the extension must follow the swap to our token on every node.
        let swap = carried.settled().await;
        carried.apply(core, swap, true);
    }
    let start = Instant::now();
    if core.state() != LeaseState::Held {
        return Err(LockError::Lost);
    }
    if start >= core.valid_until() {
        core.mark_lost();
        return Err(LockError::Lost);
    }
    let drift = validity::drift(ttl, core.drift_factor);
    // Whatever becomes of the requests, a quorum holds at least the lower of the two.
    core.lower_valid_until(start + ttl.saturating_sub(drift));
    // The timers must declare it lost by then if nothing raises it again.
    batch::wake_by(core, core.valid_until());
    let call = extend_call(&core.claim, validity::millis_ceil(ttl));
    extension_round(&core.leases.nodes, call, turn, |tally| {
        if tally.won() {
            let Some(validity) = validity::validity(ttl, Duration::ZERO, drift) else {
                return Err(LockError::Expired);
            };
            if core.state() != LeaseState::Held {
                return Err(LockError::Lost);
            }
            core.set_valid_until(start + validity);
            return Ok(());
        }
        if tally.refused() {
            // A quorum no longer has our token: the lock is gone for good.
            core.mark_lost();
            return Err(LockError::Lost);
        }
        Err(tally.unavailable())
    })
    .await
}

/// One extension of a lease: `call` to every node, the replies tallied until the outcome
/// is decided, then `settle(&tally)` — with `turn` still held — and the late replies read
/// in the background, `turn` held until they are all in or timed out.
///
/// The order is the safety argument of [`extend`]: the next extension of the lease (the
/// next turn) starts only after this one's outcome is applied to the lease, so it cannot
/// lower `valid_until` first and have this one's outcome raise it again afterwards; and
/// its requests are queued after every request of this one.
pub(crate) async fn extension_round<R>(
    nodes: &Arc<NodeSet>,
    call: Call,
    turn: OwnedMutexGuard<()>,
    settle: impl FnOnce(&Tally) -> R,
) -> R {
    let mut fanout = broadcast(nodes, call);
    let mut tally = Tally::new(nodes);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ExtendReply::parse(&v)) {
            Ok(ExtendReply::Extended) => tally.yes(),
            Ok(ExtendReply::NotOwner) => tally.no(),
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "extend", &error);
            }
        }
        if tally.decided() {
            break;
        }
    }
    let settled = settle(&tally);
    let engine = nodes.clone();
    let rest = fanout.drain(nodes, move |(index, reply)| {
        if let Err(error) = reply {
            node_failed(&engine, index, &error);
        }
    });
    match rest {
        Some(rest) => nodes.janitor.run(async move {
            rest.await;
            drop(turn);
        }),
        None => drop(turn),
    }
    settled
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Mutex;

    use super::{extend_call, extension_round};
    use crate::Redlock;
    use crate::redlock::sim::SimNode;

    async fn engine(nodes: &[SimNode]) -> Redlock {
        Redlock::builder()
            .simulated_nodes(nodes.to_vec())
            .ttl(Duration::from_secs(3))
            .node_timeout(Duration::from_millis(500))
            .no_circuit_breaker()
            .build()
            .await
            .unwrap()
    }

    /// The outcome is applied with the turn held (one node: no late reply, so a turn
    /// given up before `settle` would be free there), and the turn stays held while a
    /// late reply is outstanding (a paused node), until that node's timeout.
    #[tokio::test(start_paused = true)]
    async fn the_turn_passes_on_after_the_outcome_and_the_late_replies() {
        for (n, paused) in [(1, None), (3, Some(2))] {
            let nodes: Vec<SimNode> = (0..n).map(SimNode::with_seed).collect();
            let redlock = engine(&nodes).await;
            let lock = redlock.acquire("turn").await.unwrap();
            if let Some(i) = paused {
                nodes[i].pause();
            }
            let core = lock.core();
            let turns = Arc::new(Mutex::new(()));
            let turn = turns.clone().lock_owned().await;
            let call = extend_call(&core.claim, 3_000);
            let held_while_settling = extension_round(&core.leases.nodes, call, turn, |tally| {
                assert!(tally.won(), "{n} nodes: {tally:?}");
                turns.try_lock().is_err()
            })
            .await;
            assert!(held_while_settling, "{n} nodes: settled without the turn");
            if paused.is_some() {
                assert!(turns.try_lock().is_err(), "given up before the late reply");
            }
            let free = tokio::time::timeout(Duration::from_secs(60), turns.lock()).await;
            assert!(free.is_ok(), "{n} nodes: the turn was never given up");
            if let Some(i) = paused {
                nodes[i].resume();
            }
            lock.release().await.unwrap();
        }
    }
}
