//! The acquire request and the nodes' votes on it.

use std::time::Duration;

use redis::{Cmd, Value};

use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::scripts::ACQUIRE;
use crate::redlock::core::validity;
use crate::redlock::lease::Claim;
use crate::redlock::node::reply::{AcquireReply, SetReply};
use crate::redlock::node::{Call, NodeError};
use crate::redlock::shared::calls;

/// What one node said to an acquire request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vote {
    /// Every key was free and is now ours; the node's fencing counter (0 without fencing).
    Yes { fence: u64 },
    /// A key is held by someone else, who has `pttl` ms left (negative: no expiry; `None`:
    /// not asked: a bare `SET` does not tell, see [`holder_pttl`]).
    Held { pttl: Option<i64> },
}

/// Whether an attempt on `keys` is a bare `SET NX PX` (one key, no fencing: the common
/// case) rather than the acquire script. A refused `SET` does not tell the holder's
/// remaining time; it is asked (`holder_pttl`) only when a contended error is returned.
pub(crate) fn bare_set(keys: &LockKeys, fencing: bool) -> bool {
    keys.len() == 1 && !fencing && keys.is_exclusive()
}

/// The acquire request, built once per attempt and sent as is to every node: a bare
/// `SET key token NX PX ttl`, or else one script that checks and sets every key, and bumps
/// the fencing counters (refreshing their expiry to `fence_ttl`), atomically.
/// Readers and writers have their own scripts (see `shared/`); `intent_ms`: how long a
/// refused writer's intent lasts (0: it will not try again, and leaves none).
pub(crate) fn acquire_call(
    claim: &Claim,
    ttl_ms: u64,
    fencing: bool,
    fence_ttl: Duration,
    intent_ms: u64,
) -> Call {
    let keys = &claim.keys;
    let fence_ttl_ms = validity::millis_ceil(fence_ttl);
    let token = claim.token.as_bytes();
    if let Some(call) = calls::acquire(keys, token, ttl_ms, fencing, fence_ttl_ms, intent_ms) {
        return call;
    }
    if bare_set(keys, fencing) {
        let mut cmd = Cmd::with_capacity(6, 64 + keys.lock_keys()[0].len());
        cmd.arg("SET")
            .arg(&keys.lock_keys()[0])
            .arg(claim.token.as_bytes())
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        return Call::Command(cmd);
    }
    Call::script(&ACQUIRE, 2 * keys.len(), |cmd| {
        cmd.arg(keys.lock_keys())
            .arg(keys.fence_keys())
            .arg(claim.token.as_bytes())
            .arg(ttl_ms)
            .arg(keys.len())
            .arg(if fencing { "1" } else { "0" })
            .arg(fence_ttl_ms);
    })
}

/// Reads a node's answer to the acquire request `call`.
pub(crate) fn vote(call: &Call, value: Value) -> Result<Vote, NodeError> {
    Ok(match call {
        Call::Command(_) => match SetReply::parse(&value)? {
            SetReply::Acquired => Vote::Yes { fence: 0 },
            SetReply::Held => Vote::Held { pttl: None },
        },
        Call::Script(_) => match AcquireReply::parse(&value)? {
            AcquireReply::Acquired { fence } => Vote::Yes { fence },
            AcquireReply::Held { pttl } => Vote::Held { pttl: Some(pttl) },
        },
    })
}
