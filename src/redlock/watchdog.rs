//! The watchdog: extends a lease every ~ttl/3 and declares it lost when it cannot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until};

use super::error::LockError;
use super::lease::{LeaseCore, LeaseState};

/// Pause between extension attempts after a failed one.
fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
}

/// Work the watchdog's task also carries: reading the acquire replies still on their way,
/// so that those nodes take the lease too (one task per lease instead of two).
pub(crate) type Stragglers = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the watchdog of a lease; the returned handle stops it (and the stragglers).
pub(crate) fn spawn(core: Arc<LeaseCore>, stragglers: Option<Stragglers>) -> AbortHandle {
    let runtime = core.runtime.clone();
    let watch = run(core);
    match stragglers {
        Some(stragglers) => runtime
            .spawn(async move {
                futures_util::future::join(stragglers, watch).await;
            })
            .abort_handle(),
        None => runtime.spawn(watch).abort_handle(),
    }
}

async fn run(core: Arc<LeaseCore>) {
    let mut state = core.subscribe();
    let mut renewed_at = core.acquired_at;
    loop {
        let valid_until = core.valid_until();
        let hold_limit = core
            .max_hold
            .and_then(|limit| core.acquired_at.checked_add(limit));
        let next = renewed_at + core.ttl / 3;
        let extending = core.auto_extend && hold_limit.is_none_or(|limit| next < limit);
        let wake = if extending {
            next.min(valid_until)
        } else {
            valid_until
        };
        tokio::select! {
            () = sleep_until(wake) => {}
            changed = state.changed() => {
                if changed.is_err() || *state.borrow() != LeaseState::Held {
                    return;
                }
                continue;
            }
        }
        if !extending || Instant::now() >= core.valid_until() {
            core.mark_lost();
            return;
        }
        // Extend; on a transient failure try again until the validity ends.
        loop {
            let started = Instant::now();
            let deadline = core.valid_until();
            let outcome = tokio::select! {
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
