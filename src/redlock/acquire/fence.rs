//! The fencing write-back: every node's counter raised to the token just issued.

use std::sync::Arc;

use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::scripts::FENCE_SYNC;
use crate::redlock::core::validity;
use crate::redlock::engine::Engine;
use crate::redlock::node::reply::FenceSynced;
use crate::redlock::node::{Call, Tally, broadcast, warn_node};

/// Raises the fencing counters of every node to `token` and waits until a quorum confirmed.
///
/// The write goes to every node that will later vote ([`FENCE_SYNC`] must reach every
/// node): answered ones confirm; the rest get it in the background, a node passed by
/// unanswered on its connection, a skipped one on the connection it stopped answering on
/// (see [`node`](crate::redlock::node)). Each later holder's quorum then overlaps a quorum whose
/// counters are ≥ `token`, so its `INCR` yields more.
///
/// What is guaranteed, precisely: a later token is larger than `token` unless, when the
/// later holder acquires, a majority of nodes have counters below `token` — nodes that lost
/// their data since, and nodes this write-back did not reach: one that could not be reached
/// at all (down, its connection dead) counts as one that lost its data, as does one so far
/// behind that the write has not landed yet. Fewer than a majority of such nodes can never
/// make a token go backwards. A counter that expired counts as lost data: the write-back
/// (like the acquire script) raises every counter's expiry to `fence_ttl`, so that happens
/// only after `fence_ttl` without a fenced acquisition of the key (see
/// [`fence_ttl`](crate::redlock::config::fence_ttl)).
pub(crate) async fn sync_fence(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    token: u64,
) -> Result<(), LockError> {
    let nodes = engine.nodes();
    let fence_ttl_ms = validity::millis_ceil(engine.settings.fence_ttl);
    let mut fanout = broadcast(
        nodes,
        Call::script(&FENCE_SYNC, keys.len(), |cmd| {
            cmd.arg(keys.fence_keys()).arg(token).arg(fence_ttl_ms);
        }),
    );
    let mut tally = Tally::new(nodes);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| FenceSynced::parse(&v)) {
            Ok(FenceSynced) => tally.yes(),
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "fence sync", &error);
            }
        }
        if tally.won() {
            // The rest still get the write, in the background.
            fanout.finish_in_background(nodes);
            return Ok(());
        }
        if tally.lost() {
            break;
        }
    }
    Err(tally.unavailable())
}
