//! The release requests: the script calls that delete a lease's token, or move it to the
//! next local holder, and how their answers add up to a [`ReleaseOutcome`].

use std::sync::Arc;

use super::error::LockError;
use super::lease::{Claim, ReleaseOutcome};
use super::node::{self, Call};
use super::scripts::{RELEASE, RELEASE_ONE};

/// How a release ended, from the nodes' answers: our token was gone from some node (it
/// released), else another token held the keys, else they had expired; when no node
/// answered, the quorum was unavailable.
pub(crate) fn release_outcome(
    released: usize,
    foreign: usize,
    expired: usize,
    failed: usize,
    total: usize,
    quorum: usize,
) -> Result<ReleaseOutcome, LockError> {
    if released > 0 {
        Ok(ReleaseOutcome::Released)
    } else if foreign > 0 {
        Ok(ReleaseOutcome::OwnedByOther)
    } else if expired > 0 {
        Ok(ReleaseOutcome::AlreadyExpired)
    } else {
        Err(LockError::unavailable(total - failed, total, quorum))
    }
}

/// The release script call: deletes the keys that still hold our token; `announce`
/// publishes the release to waiters (not for cleanups of failed attempts).
pub(crate) fn release_call(claim: &Claim, announce: bool) -> Call {
    release_script(claim, announce, None)
}

/// The hand-off call: our token becomes `next`'s with a fresh `ttl_ms` expiry where the keys
/// hold it unmarked; elsewhere an announced release (see [`RELEASE`]). `carried`: the next
/// holder already runs (see [`carry`](super::carry)): marked tokens move too, and nothing is deleted.
pub(crate) fn hand_on_call(claim: &Claim, next: &Claim, ttl_ms: u64, carried: bool) -> Call {
    release_script(claim, true, Some((next, ttl_ms, carried)))
}

fn release_script(claim: &Claim, announce: bool, next: Option<(&Claim, u64, bool)>) -> Call {
    let keys = &claim.keys;
    if announce && next.is_none() && keys.len() == 1 {
        return Call::script(&RELEASE_ONE, 2, |cmd| {
            cmd.arg(&keys.lock_keys()[0])
                .arg(&keys.channels()[0])
                .arg(claim.token.as_bytes());
        });
    }
    Call::script(&RELEASE, 2 * keys.len(), |cmd| {
        cmd.arg(keys.lock_keys())
            .arg(keys.channels())
            .arg(claim.token.as_bytes())
            .arg(keys.len())
            .arg(if announce { "1" } else { "0" });
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
