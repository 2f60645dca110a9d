//! Local hand-over: the optimisation for waiters of one process, behind one switch
//! ([`RedlockBuilder::local_handover`](crate::RedlockBuilder::local_handover), on by
//! default).
//!
//! - [`queue`]: waiters for the same keys line up (FIFO), so only one of them competes on
//!   the nodes;
//! - [`handoff`]: a lease released with someone in line moves to a fresh token for them in
//!   one round trip, the keys never free in between;
//! - [`carry`]: with enough validity left, the next holder starts at once, on the ending
//!   lease's validity, while that swap runs.
//!
//! The lease never names this folder: a queued acquisition gives its lease the line's
//! [`LocalTurn`] as a [`Turn`], which ends the lease by handing it over (below). Each
//! module states its safety argument; the tests that break when it is violated are in
//! `tests/engine/handoff.rs`, `tests/engine/safety_*.rs` and the simulation (`tests/sim`).
//! Uses `lease/`, `node/`, `config/` and `core/`.

pub(crate) mod carry;
pub(crate) mod handoff;
pub(crate) mod queue;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

pub(crate) use self::queue::{LocalQueues, LocalTurn};
use crate::redlock::core::error::LockError;
use crate::redlock::lease::release::release_on_nodes;
use crate::redlock::lease::{LeaseCore, ReleaseOutcome, Turn};

impl Turn for LocalTurn {
    fn has_followers(&self) -> bool {
        LocalTurn::has_followers(self)
    }

    /// Carries the lease over to the next holder when it can (see [`carry`]); else hands
    /// it on after one round trip (see [`handoff`]) unless fencing is on or the validity
    /// ran out; else releases it. Then the turn passes on.
    fn hand_over(
        self: Box<Self>,
        lease: Arc<LeaseCore>,
    ) -> BoxFuture<'static, Result<ReleaseOutcome, LockError>> {
        let turn = *self;
        Box::pin(async move {
            if carry::can_carry(&lease) {
                return carry::carry(&lease, turn).await;
            }
            if lease.fencing_token.is_none() && Instant::now() < lease.valid_until() {
                let (result, handoff) = handoff::transfer(&lease).await;
                match handoff {
                    Some(handoff) => turn.pass(handoff),
                    None => lease.pass_turn(turn),
                }
                return result;
            }
            let result = release_on_nodes(&lease).await;
            lease.pass_turn(turn);
            result
        })
    }
}
