//! The release requests: the script calls that delete a lease's token, or move it to the
//! next local holder, and how their answers add up to a [`ReleaseOutcome`].

use std::sync::Arc;

use super::{Claim, LeaseCore, Leases, ReleaseOutcome};
use crate::redlock::core::error::LockError;
use crate::redlock::core::scripts::{RELEASE, RELEASE_ONE};
use crate::redlock::node::reply::ReleaseReply;
use crate::redlock::node::{self, Call, Tally, broadcast, warn_node};
use crate::redlock::shared::calls;

/// How a release ended, from what the nodes found: our token was gone from some node
/// (`released`), else another token held the keys (`foreign`), else they had expired
/// (`expired`); when no node answered, the quorum was unavailable (per `tally`).
pub(crate) fn release_outcome(
    released: bool,
    foreign: bool,
    expired: bool,
    tally: &Tally,
) -> Result<ReleaseOutcome, LockError> {
    if released {
        Ok(ReleaseOutcome::Released)
    } else if foreign {
        Ok(ReleaseOutcome::OwnedByOther)
    } else if expired {
        Ok(ReleaseOutcome::AlreadyExpired)
    } else {
        Err(tally.unavailable())
    }
}

/// The release script call: deletes the keys that still hold our token; `announce`
/// publishes the release to waiters (not for cleanups of failed attempts).
pub(crate) fn release_call(claim: &Claim, announce: bool) -> Call {
    release_script(claim, announce, None)
}

/// The hand-off call: our token becomes `next`'s with a fresh `ttl_ms` expiry where the keys
/// hold it unmarked; elsewhere an announced release (see [`RELEASE`]). `carried`: the next
/// holder already runs (see `handover/carry.rs`): marked tokens move too, and nothing is deleted.
pub(crate) fn hand_on_call(claim: &Claim, next: &Claim, ttl_ms: u64, carried: bool) -> Call {
    release_script(claim, true, Some((next, ttl_ms, carried)))
}

fn release_script(claim: &Claim, announce: bool, next: Option<(&Claim, u64, bool)>) -> Call {
    let keys = &claim.keys;
    // A reader removes its own member (never handed on: see `shared/`).
    if let Some(call) = calls::release(keys, claim.token.as_bytes(), announce) {
        return call;
    }
    if announce && next.is_none() && keys.len() == 1 {
        return Call::script(&RELEASE_ONE, 1, |cmd| {
            cmd.arg(&keys.lock_keys()[0])
                .arg(claim.token.as_bytes())
                .arg(&keys.channels()[0]);
        });
    }
    Call::script(&RELEASE, keys.len(), |cmd| {
        cmd.arg(keys.lock_keys())
            .arg(claim.token.as_bytes())
            .arg(keys.len())
            .arg(if announce { "1" } else { "0" })
            .arg(keys.channels());
        if let Some((next, ttl_ms, carried)) = next {
            cmd.arg(next.token.as_bytes())
                .arg(ttl_ms)
                .arg(if carried { "1" } else { "0" });
        }
    })
}

/// Releases (without announcing it) on exactly `conn`: the cleanup of a failed or
/// cancelled acquisition, sent down the socket its request used.
pub(crate) async fn release_via(conn: node::Conn, call: Arc<Call>) {
    let _ = node::call_on(conn, &call).await;
}

/// Deletes `claim`'s token wherever it is, announced, and waits for every node's reply
/// (bounded by the node timeout).
pub(crate) async fn release_everywhere(leases: Arc<Leases>, claim: Arc<Claim>) {
    let rest = broadcast(&leases.nodes, release_call(&claim, true)).drain(&leases.nodes, |_| {});
    if let Some(rest) = rest {
        rest.await;
    }
}

/// Deletes `core`'s token from every node, announced; decides once a quorum released (the
/// stragglers still get their delete, in the background).
pub(crate) async fn release_on_nodes(core: &Arc<LeaseCore>) -> Result<ReleaseOutcome, LockError> {
    let nodes = &core.leases.nodes;
    let mut fanout = broadcast(nodes, release_call(&core.claim, true));
    let mut tally = Tally::new(nodes);
    let (mut expired, mut foreign) = (0, 0);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ReleaseReply::parse(&v)) {
            Ok(ReleaseReply::Released) => tally.yes(),
            Ok(ReleaseReply::Gone) => {
                tally.no();
                expired += 1;
            }
            Ok(ReleaseReply::NotOwner | ReleaseReply::HandedOver { .. }) => {
                tally.no();
                foreign += 1;
            }
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "release", &error);
            }
        }
        if tally.won() {
            break;
        }
    }
    fanout.finish_in_background(nodes);
    release_outcome(tally.yeses() > 0, foreign > 0, expired > 0, &tally)
}
