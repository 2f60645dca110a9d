//! The watchdog: extends a lease every ~ttl/3 and declares it lost when it cannot.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::{LeaseCore, LeaseState};
use crate::redlock::core::error::LockError;

/// Pause between extension attempts after a failed one.
fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
}

/// When the watchdog next has work, counting from the last renewal: the next extension
/// (every ~ttl/3, while auto-extension is on and the hold limit allows), or else the end of
/// the validity (the lease is lost then). The flag says whether it is an extension.
pub(crate) fn next_wake(core: &LeaseCore, renewed_at: Instant) -> (Instant, bool) {
    first_wake(
        renewed_at,
        core.valid_until(),
        core.ttl,
        core.auto_extend,
        core.max_hold
            .and_then(|limit| core.acquired_at.checked_add(limit)),
    )
}

/// [`next_wake`] from its parts (for a lease still being built).
pub(crate) fn first_wake(
    renewed_at: Instant,
    valid_until: Instant,
    ttl: Duration,
    auto_extend: bool,
    hold_limit: Option<Instant>,
) -> (Instant, bool) {
    let next = renewed_at + ttl / 3;
    let extending = auto_extend && hold_limit.is_none_or(|limit| next < limit);
    if extending {
        (next.min(valid_until), true)
    } else {
        (valid_until, false)
    }
}

/// Starts the watchdog task of a lease whose first deadline has come (see
/// [`Timers`](super::timers::Timers)); it runs until the lease is lost or released.
pub(crate) fn start(core: Arc<LeaseCore>) {
    let runtime = core.runtime.clone();
    // A runtime that has shut down drops the task: its leases are gone with it.
    drop(runtime.spawn(run(core)));
}

async fn run(core: Arc<LeaseCore>) {
    let mut state = core.subscribe();
    let mut renewed_at = core.acquired_at;
    loop {
        if *state.borrow_and_update() != LeaseState::Held {
            return;
        }
        let (wake, extending) = next_wake(&core, renewed_at);
        tokio::select! {
            biased;
            () = sleep_until(wake) => {}
            changed = state.changed() => {
                if changed.is_err() || *state.borrow() != LeaseState::Held {
                    return;
                }
                continue;
            }
        }
        if Instant::now() >= core.valid_until() {
            core.mark_lost();
            return;
        }
        if !extending {
            // Extended by hand meanwhile: wait for the new end.
            continue;
        }
        // Extend; on a transient failure try again until the validity ends.
        loop {
            let started = Instant::now();
            let deadline = core.valid_until();
            let outcome = tokio::select! {
                biased;
                outcome = core.extend(core.ttl) => outcome,
                () = sleep_until(deadline) => Err(LockError::Lost),
            };
            match outcome {
                Ok(()) => {
                    renewed_at = started;
                    break;
                }
                Err(LockError::Lost) | Err(LockError::Expired) => {
                    core.mark_lost();
                    return;
                }
                Err(_) => {
                    let deadline = core.valid_until();
                    sleep_until((Instant::now() + retry_pause(core.ttl)).min(deadline)).await;
                    if Instant::now() >= deadline {
                        core.mark_lost();
                        return;
                    }
                }
            }
        }
    }
}
