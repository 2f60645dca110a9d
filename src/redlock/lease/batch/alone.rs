//! A lease the batch cannot carry — a reader, whose extension updates its own member of the
//! readers ZSET, not `EXTEND_MANY`'s compare of the lock key (see `shared/`) — is extended
//! alone, under the batch's rules: taken by `take_due` (validity lowered, turn held), one
//! fan-out of its own call, settled by `settle` as soon as decided, its turn held until
//! every reply is in or timed out. It runs on an engine task, never a caller's.

use rand::Rng;
use tokio::time::Instant;

use super::{Member, Outcome, retry_pause, settle};
use crate::redlock::core::keys::Shape;
use crate::redlock::core::validity;
use crate::redlock::lease::extend::{extend_call, extension_round};

/// Whether the batch can carry `member` (else it is extended alone).
pub(super) fn batched(member: &Member) -> bool {
    !matches!(member.core.claim.keys.shape, Shape::Read { .. })
}

/// Extends `member` alone (the batch that took it started at `start`).
pub(super) async fn extend_alone(member: Member, start: Instant) {
    let Member { core, turn } = member;
    let call = extend_call(&core.claim, validity::millis_ceil(core.ttl));
    extension_round(&core.leases.nodes, call, turn, |tally| {
        let outcome = if tally.won() {
            Outcome::Extended
        } else if tally.refused() {
            Outcome::Refused
        } else {
            Outcome::Unavailable
        };
        let jitter = rand::rng().random_range(1.0..1.5);
        let retry_at = Instant::now() + retry_pause(core.ttl).mul_f64(jitter);
        settle(&core, outcome, start, retry_at);
    })
    .await;
}
