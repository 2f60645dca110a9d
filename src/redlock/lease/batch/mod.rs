//! Batched auto-extension: one scheduler per engine extends every due lease with one
//! pipelined round trip per node, instead of a watchdog task and an extension fan-out per
//! lease.
//!
//! The engine's [`Timers`](crate::redlock::timers::Timers) map (deadline → weak lease) is the
//! only per-lease schedule: each held lease waits there for its next automatic extension
//! (every ~ttl/3, rounded down to a grid of ttl/30 so that leases acquired close together
//! come due together), or for the end of its validity. When the timers' task wakes, it
//! hands every due lease to [`start_due`], which takes the ones whose extension is due into
//! one batch and sends it (see [`send`]): per node, one `EXTEND_MANY` call per ≤ 1,000
//! leases of one connection lane, all written at once (one pipeline, one round trip) and
//! bounded by one deadline, the node timeout. A batch of more than 4,000 leases goes in
//! several such pipelines, one after the other (and one batch at a time per engine): a
//! node's work grows with the leases in a pipeline, and all of it must fit in the node
//! timeout. Per-lease state is the lease core plus one
//! timer-map entry: no task, no `Sleep`, no extension future.
//!
//! # Safety
//!
//! The rules of [`LeaseCore::extend`], applied to each lease of a batch:
//!
//! - *Compare-only*: per lease, `EXTEND_MANY` compares every key with the token (or the
//!   token with a waiter's `+` mark) and only if all match `PEXPIRE`s them; it never `SET`s,
//!   so an expired or foreign key is neither re-created nor extended. Its reply is one 1 or
//!   0 per lease, parsed in one place ([`ExtendManyReply`]); no lease's outcome depends on
//!   another's.
//! - *Validity from the batch's start*: `start` is taken before any lease is taken into the
//!   batch, so before its first request. Each lease's `valid_until` is lowered to
//!   `start + ttl − drift` when it is taken: from then on each node holds either the
//!   previous expiry or at least that, so a batch that fails, times out or is dropped
//!   half-way never leaves an overstated validity. A lease gets `start + ttl − drift` only
//!   on a quorum of "1" replies for it, counted per lease with the same quorum rule. (A
//!   lease in a later pipeline of a large batch keeps the batch's `start`, from before it
//!   waited: its validity is understated by that wait, never overstated.)
//! - *One extension at a time per lease*: a lease is taken only if its `extending` turn is
//!   free (`try_lock`: a user's `extend()` in flight, or a carried hand-off whose swap is not
//!   decided yet, leaves it to the next tick), and the batch holds that turn until every
//!   node's reply to it is in or timed out (late replies are read by the janitor). So a
//!   user's extension and the batch's are queued one after the other on each node's
//!   connection — the batch's calls go down the lane of each lease's first key, the one
//!   every call on those keys uses — and the last to finish is the latest on the nodes.
//! - *Per-node timeout, node error = "no"*: one deadline per node for the whole batch; a
//!   node that fails, times out, or gives a malformed reply votes "no" for every lease of
//!   the calls concerned.
//! - *Lost before validity ends*: while a lease is in a batch, its timer entry waits for its
//!   (lowered) validity end, so `lost()` fires then even if no reply ever comes. A lease
//!   refused by more than N − quorum nodes is lost at once; one that got no quorum otherwise
//!   is retried in a later batch after `retry_pause` (the same jitter for the whole batch,
//!   so that its leases are retried together, not in step with other batches), and is lost
//!   when its validity ends.
//! - *Cancellation*: batches run on the engine's tasks (the timers' task takes them, a task
//!   of the engine's runtime sends them, the janitor reads late replies), never on a
//!   caller's future. A dropped `HeldLock` is only skipped by later batches (its entry's
//!   weak reference no longer upgrades, or its state is no longer held).
//!
//! Leases without auto-extension, or past their hold limit, only wait for their validity
//! end (and are lost then, unless a user extension moved it).
//!
//! [`ExtendManyReply`]: crate::redlock::node::reply::ExtendManyReply

mod alone;
mod send;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::timers::{RESOLUTION, TimerKey, Timers};
use super::{LeaseCore, LeaseState, Swap};
use crate::redlock::core::telemetry;
use crate::redlock::core::validity;

#[cfg(all(test, feature = "testkit"))]
pub(crate) use send::extend_many_call;

/// Where a lease waits in the engine's timer map, and why.
pub(crate) struct Schedule {
    /// Its entry in the timer map now.
    key: TimerKey,
    /// When its next automatic extension is due; `None`: none any more (auto-extension off,
    /// or the hold limit reached): the lease only waits for its validity end.
    next_extend: Option<Instant>,
}

impl Schedule {
    /// The schedule of a lease acquired at `acquired_at`: its first extension, if any, and
    /// its entry (not inserted yet: see [`LeaseCore::schedule_first`]).
    pub(crate) fn first(
        timers: &Timers,
        acquired_at: Instant,
        valid_until: Instant,
        ttl: Duration,
        auto_extend: bool,
        hold_limit: Option<Instant>,
    ) -> Schedule {
        let next_extend = next_extension(timers, acquired_at, ttl, auto_extend, hold_limit);
        Schedule {
            key: timers.key(wake(next_extend, valid_until)),
            next_extend,
        }
    }
}

/// Pause between extension attempts after a failed one.
pub(crate) fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
}

/// How far ahead of its due time a lease may be extended, so that leases acquired close
/// together share a batch: ttl/30.
fn slack(ttl: Duration) -> Duration {
    ttl / 30
}

/// When the automatic extension after one that started at `start` is due (every ~ttl/3,
/// rounded down to the grid of [`slack`]), or `None` when there is none.
fn next_extension(
    timers: &Timers,
    start: Instant,
    ttl: Duration,
    auto_extend: bool,
    hold_limit: Option<Instant>,
) -> Option<Instant> {
    let next = start + ttl / 3;
    (auto_extend && hold_limit.is_none_or(|limit| next < limit))
        .then(|| timers.grid_down(next, slack(ttl)))
}

/// When a lease waiting for its next extension (if any) wakes: then, or at its validity end
/// if that comes first.
fn wake(next_extend: Option<Instant>, valid_until: Instant) -> Instant {
    next_extend.map_or(valid_until, |at| at.min(valid_until))
}

/// A lease taken into a batch: its core, and its extension turn, held until every node's
/// reply to the batch is in or timed out.
pub(crate) struct Member {
    core: Arc<LeaseCore>,
    turn: OwnedMutexGuard<()>,
}

/// How one lease's extension in a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A quorum extended it.
    Extended,
    /// More than N − quorum nodes no longer hold its token: lost for good.
    Refused,
    /// No quorum either way (nodes failed or timed out): retried until the validity ends.
    Unavailable,
}

/// Takes the due leases: those whose extension is due go into one batch, sent on a task of
/// the engine's runtime; the rest wait again (or are lost, at their validity end). Called
/// by the timers' task.
pub(crate) fn start_due(due: Vec<Arc<LeaseCore>>) {
    // Before any lease is taken: each one's validity counts from here.
    let start = Instant::now();
    let (batch, alone): (Vec<Member>, Vec<Member>) = due
        .into_iter()
        .filter_map(|core| {
            let turn = take_due(&core, start)?;
            Some(Member { core, turn })
        })
        .partition(alone::batched);
    for member in alone {
        // The engine's own task, as for a batch.
        drop(tokio::spawn(alone::extend_alone(member, start)));
    }
    let Some(first) = batch.first() else {
        return;
    };
    let leases = first.core.leases.clone();
    // The engine's own task: no caller can drop a batch half-way.
    drop(tokio::spawn(send::extend_all(leases, start, batch)));
}

/// Puts a new lease's entry into the timer map.
pub(crate) fn schedule_first(core: &Arc<LeaseCore>) {
    let schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
    core.leases.timers.schedule(schedule.key, core);
}

/// Takes the lease out of the timer map (it ended).
pub(crate) fn unschedule(core: &LeaseCore) {
    // Under the lock: a move that saw the lease held has put its entry in by now.
    let schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
    core.leases.timers.cancel(schedule.key);
}

/// Its validity was lowered to `valid_until` (an extension about to be sent): if its
/// entry waits for later, it is moved there, so that the lease is declared lost by then.
pub(crate) fn wake_by(core: &Arc<LeaseCore>, valid_until: Instant) {
    let mut schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
    if schedule.key.at() > valid_until {
        wake_at(core, &mut schedule, valid_until);
    }
}

/// Moves the lease's entry to `at` (nothing once it ended).
fn wake_at(core: &Arc<LeaseCore>, schedule: &mut Schedule, at: Instant) {
    if core.state() != LeaseState::Held {
        return;
    }
    let timers = &core.leases.timers;
    timers.cancel(schedule.key);
    schedule.key = timers.key(at);
    timers.schedule(schedule.key, core);
}

/// The lease came due at `start`: lost if its validity has ended; taken into the batch
/// (its turn returned) if its extension is due and nothing else extends it now; else
/// put back to wait.
fn take_due(core: &Arc<LeaseCore>, start: Instant) -> Option<OwnedMutexGuard<()>> {
    if core.state() != LeaseState::Held {
        return None;
    }
    // Due within the timers' resolution counts as due (they wake that much early).
    let horizon = start + RESOLUTION;
    if horizon >= core.valid_until() {
        core.mark_lost();
        return None;
    }
    let mut schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
    if schedule.next_extend.is_none_or(|at| at > horizon) {
        // Woken for its validity end, which a user's extension moved; or early.
        let at = wake(schedule.next_extend, core.valid_until());
        wake_at(core, &mut schedule, at);
        return None;
    }
    let retry = (start + retry_pause(core.ttl)).min(core.valid_until());
    // A user's extension in flight: it goes first; this one waits for the next tick.
    let Ok(turn) = core.extending.clone().try_lock_owned() else {
        wake_at(core, &mut schedule, retry);
        return None;
    };
    if let Some(carried) = core.carried.get() {
        // Carried over: the extension must follow the swap to our token on every node.
        match carried.settled().now_or_never() {
            None | Some(Swap::Pending) => {
                wake_at(core, &mut schedule, retry);
                return None;
            }
            Some(Swap::Failed) => {
                drop(schedule);
                core.mark_lost();
                return None;
            }
            Some(swap) => carried.apply(core, swap, true),
        }
    }
    let valid_until = core.valid_until();
    if horizon >= valid_until {
        drop(schedule);
        core.mark_lost();
        return None;
    }
    let drift = validity::drift(core.ttl, core.drift_factor);
    // Whatever becomes of the batch, a quorum holds at least the lower of the two.
    core.lower_valid_until(start + core.ttl.saturating_sub(drift));
    // While the batch is out, the entry waits for the validity end: lost then, whatever
    // the replies.
    let at = core.valid_until();
    wake_at(core, &mut schedule, at);
    Some(turn)
}

/// Applies what the batch that started at `start` decided for this lease; `retry_at`:
/// when a lease without a quorum is tried again.
fn settle(core: &Arc<LeaseCore>, outcome: Outcome, start: Instant, retry_at: Instant) {
    match outcome {
        Outcome::Extended => {
            let drift = validity::drift(core.ttl, core.drift_factor);
            let Some(validity) = validity::validity(core.ttl, Duration::ZERO, drift) else {
                core.mark_lost();
                return;
            };
            let mut schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
            if core.state() != LeaseState::Held {
                return;
            }
            core.set_valid_until(start + validity);
            schedule.next_extend = next_extension(
                &core.leases.timers,
                start,
                core.ttl,
                core.auto_extend,
                hold_limit(core),
            );
            let at = wake(schedule.next_extend, core.valid_until());
            wake_at(core, &mut schedule, at);
        }
        Outcome::Refused => {
            telemetry::extend_failed(&core.label);
            // A quorum no longer has our token: the lock is gone for good.
            core.mark_lost();
        }
        Outcome::Unavailable => {
            telemetry::extend_failed(&core.label);
            let mut schedule = core.schedule.lock().unwrap_or_else(|e| e.into_inner());
            let at = retry_at.min(core.valid_until());
            wake_at(core, &mut schedule, at);
        }
    }
}

/// When the hold limit ends, if there is one.
fn hold_limit(core: &LeaseCore) -> Option<Instant> {
    core.max_hold
        .and_then(|limit| core.acquired_at.checked_add(limit))
}
