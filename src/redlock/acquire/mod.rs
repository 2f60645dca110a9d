//! Acquisition: one attempt on every node at once, decided at quorum ([`attempt`]),
//! retried per policy, waiting in this process's line for the keys when local hand-over is
//! on (see `handover/`) and woken by the holder's release (see `wake/`).
//!
//! - [`vote`]: the request and the nodes' votes; [`attempt`]: one attempt; [`guard`]: the
//!   circuit breaker around it;
//! - [`cleanup`]: undoing what a failed or cancelled attempt left, late replies included;
//! - [`permits`]: one of `N` permits, tried in a random rotation;
//! - [`fence`]: the fencing write-back; [`contention`]: marking a held lock awaited and
//!   asking its holder's time left.
//!
//! Uses `lease/`, `handover/`, `wake/`, `node/`, `config/` and `core/`; the engine's state
//! ([`Engine`]) gives them.

mod attempt;
mod cleanup;
mod contention;
mod fence;
mod guard;
mod permits;
mod vote;

use std::sync::Arc;

use rand::Rng;
use tokio::time::Instant;

use self::contention::{Mark, mark_awaited, settle, withdraw_intent};
use self::guard::guarded_attempt;
pub(crate) use self::permits::attempt;
use self::vote::bare_set;
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::telemetry::{self, KeyHash};
use crate::redlock::engine::Engine;
use crate::redlock::handover::LocalTurn;
use crate::redlock::lease::HeldLock;
use crate::redlock::wake::Interest;

/// Acquires with retries, per the resolved options.
pub(crate) async fn acquire(
    engine: &Arc<Engine>,
    keys: Arc<LockKeys>,
    options: Resolved,
) -> Result<HeldLock, LockError> {
    let span = tracing::debug_span!(
        "redlock.acquire",
        key = %KeyHash::of(&keys.user),
        keys = keys.len(),
        attempts = tracing::field::Empty,
        nodes = tracing::field::Empty,
        validity_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let first = Instant::now();
    let result =
        tracing::Instrument::instrument(retry_loop(engine, &keys, &options), span.clone()).await;
    let outcome = telemetry::acquire_outcome(&result.as_ref().map(drop));
    span.record("outcome", outcome);
    telemetry::acquire(&options.label, outcome, first.elapsed());
    result
}

async fn retry_loop(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let first = Instant::now();
    let waits = options.retry.max_attempts() > 1;
    // A deadline too far to represent is no deadline.
    let deadline = options
        .retry
        .overall_deadline()
        .and_then(|d| first.checked_add(d));
    let mut turn: Option<LocalTurn> = None;
    let mut interest: Option<Interest> = None;
    let mut finished = 0u32;
    let mut looked_again = false;
    let wake = &engine.leases.wake;
    // Shared leases never take the local hand-over path (see `shared/`).
    let queues = engine
        .queues
        .as_ref()
        .filter(|_| waits && keys.is_exclusive());
    if let Some(queues) = queues.filter(|q| q.is_busy(&keys.queue_id())) {
        // Others of this process already wait: queue behind them instead of barging in.
        let Some((local, _)) = queues.turn(&keys.queue_id(), deadline).await else {
            let error = LockError::Contended {
                retry_after: options.ttl,
            };
            return Err(settle(engine, keys, options, error).await);
        };
        let local = match handed_on(local, options) {
            Ok(lock) => return Ok(lock),
            Err(local) => local,
        };
        turn = Some(local);
        interest = Some(wake.interest(keys.channels()).await);
    }
    loop {
        if let Some(interest) = interest.as_mut() {
            interest.mark_seen();
        }
        let error = match guarded_attempt(engine, keys, options).await {
            Ok(lock) => {
                if finished > 0 {
                    withdraw_intent(engine, keys);
                }
                tracing::Span::current().record("attempts", finished + 1);
                lock.hold_turn(turn.map(|turn| Box::new(turn) as _));
                return Ok(lock);
            }
            Err(error) => error,
        };
        finished = finished.saturating_add(1);
        tracing::Span::current().record("attempts", finished);
        let contended = matches!(error, LockError::Contended { .. });
        // The holder's remaining time, when known, caps the sleep.
        let hint = match &error {
            LockError::Contended { retry_after } if !bare_set(keys, options.fencing) => {
                Some(*retry_after)
            }
            _ => None,
        };
        let unit = rand::rng().random::<f64>();
        let Some(sleep) = options
            .retry
            .next_sleep(finished, first.elapsed(), unit, hint)
        else {
            return Err(settle(engine, keys, options, error).await);
        };
        if waits && contended && interest.is_none() {
            // First contention. With local hand-over on, waiters of one process line up
            // locally, so that only one of them competes on the nodes; the lease passes the
            // turn on when it ends.
            let mut waited = false;
            if let Some(queues) = queues {
                let Some((local, was_waited)) = queues.turn(&keys.queue_id(), deadline).await
                else {
                    return Err(settle(engine, keys, options, error).await);
                };
                let local = match handed_on(local, options) {
                    Ok(lock) => {
                        tracing::Span::current().record("attempts", finished);
                        return Ok(lock);
                    }
                    Err(local) => local,
                };
                turn = Some(local);
                waited = was_waited;
            }
            // Listen for the holder's release from now on. A release that happened before
            // costs no more than the fallback timer.
            interest = Some(wake.interest(keys.channels()).await);
            if waited {
                // The turn came when a local holder let go: look again at once, without
                // counting it as a retry.
                finished -= 1;
                continue;
            }
        }
        match interest.as_mut().filter(|_| contended) {
            Some(interest) => {
                if mark_awaited(engine, keys).await == Mark::Free && !looked_again {
                    // Released between our attempt and the mark: no wake-up will come.
                    // Once per sleep: a key set with one key free reads as free on every
                    // try, and would loop without sleeping.
                    looked_again = true;
                    continue;
                }
                looked_again = false;
                tokio::select! {
                    biased;
                    () = interest.released() => {}
                    () = tokio::time::sleep(sleep) => {}
                }
            }
            None => tokio::time::sleep(sleep).await,
        }
    }
}

/// The lease the previous local holder handed on with the turn, if there is one this
/// waiter can take (on the keys the turn was taken for: the waiter's); else the turn back.
fn handed_on(turn: LocalTurn, options: &Resolved) -> Result<HeldLock, LocalTurn> {
    let handoff = turn.take_handoff();
    match handoff.and_then(|h| h.into_lock(turn.id(), options)) {
        Some(lock) => {
            lock.hold_turn(Some(Box::new(turn)));
            Ok(lock)
        }
        None => Err(turn),
    }
}
