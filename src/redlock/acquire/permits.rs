//! One of `N` permits: each permit is an ordinary lease on its own key (see `shared/` for
//! why not a counter). One attempt tries them one after the other, from a random one on,
//! and stops at the first won: a holder owns exactly one.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::attempt::attempt_one;
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::{LockKeys, Shape};
use crate::redlock::engine::Engine;
use crate::redlock::lease::HeldLock;

/// One attempt: on the key set, or for permits on each permit in turn until one is won.
pub(crate) async fn attempt(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    match &keys.shape {
        Shape::Permits { slots } => attempt_any(engine, slots, options).await,
        _ => attempt_one(engine, keys, options).await,
    }
}

/// One attempt on each permit in a random rotation; the first won is the lease. Every
/// permit held: contended, retry after the soonest holder's time; any other failure (no
/// quorum) ends the attempt.
async fn attempt_any(
    engine: &Arc<Engine>,
    slots: &[Arc<LockKeys>],
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let first = rand::rng().random_range(0..slots.len());
    let mut soonest: Option<Duration> = None;
    for slot in slots.iter().cycle().skip(first).take(slots.len()) {
        match attempt_one(engine, slot, options).await {
            Err(LockError::Contended { retry_after }) => {
                soonest = Some(soonest.map_or(retry_after, |s| s.min(retry_after)));
            }
            result => return result,
        }
    }
    Err(LockError::Contended {
        retry_after: soonest.unwrap_or(options.ttl),
    })
}
