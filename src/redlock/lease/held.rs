//! [`HeldLock`]: the public handle on a lease, shared by its clones, released once.

use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use super::batch::{self, Schedule};
use super::extend;
use super::{Claim, LeaseCore, LeaseState, Leases, ReleaseOutcome, Turn};
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::telemetry;
use crate::redlock::core::validity;

/// Releases the lease in the background when the last clone drops.
struct LeaseHandle {
    core: Arc<LeaseCore>,
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        // Counted before it is marked released: see `lifecycle`.
        let busy = self.core.leases.lifecycle.enter();
        if let Some(was_held) = self.core.mark_released() {
            let core = self.core.clone();
            // Never block in Drop: the release runs on the runtime the lease was made on.
            self.core.runtime.spawn(async move {
                let _ = core.finish(was_held, busy).await;
            });
        }
    }
}

/// A held lock: a quorum lease on one or more keys.
///
/// Clones share one lease. While any clone lives, the engine extends the lease every
/// ~ttl/3 (together with the other leases due then, see `lease/batch`); when extension cannot reach a quorum before the validity ends, the lease is
/// lost: [`is_held`](HeldLock::is_held) turns false and [`ended`](HeldLock::ended)
/// resolves. [`release`](HeldLock::release) deletes it at once; dropping the last clone
/// releases it in the background.
///
/// **Keep it bound for as long as the work needs the lock.** Dropping the last clone
/// releases the lock, so `redlock.acquire("k").await?;` as a statement (or
/// `let _ = ...`, which drops at once too) locks nothing: the compiler warns about the
/// first (`#[must_use]`). Bind it instead:
///
/// ```no_run
/// # #![deny(unused_must_use)]
/// # async fn demo(redlock: tower_redlock::Redlock) -> Result<(), tower_redlock::LockError> {
/// let _lock = redlock.acquire("report:7").await?; // held until the end of the scope
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// # #![deny(unused_must_use)]
/// # async fn demo(redlock: tower_redlock::Redlock) -> Result<(), tower_redlock::LockError> {
/// redlock.acquire("report:7").await?; // warns: released at once, nothing is locked
/// # Ok(()) }
/// ```
///
/// A lease taken by [`RedlockLayer`](crate::layer::RedlockLayer) lasts as long as its request, not
/// as long as its clones: the layer releases it (for every clone) when the response is
/// produced — with `hold_until_body_end`, at the body's last frame —, or when the response
/// future or body is dropped (the client went away). A clone moved into a spawned task, an
/// `on_upgrade` closure or shared state then sees `is_held() == false` and `ended()`
/// resolved. Work that must stay locked beyond the request takes its own lease
/// (`Locked<K>`, or [`Redlock::acquire`](crate::Redlock::acquire) in that task).
///
/// The token never leaves the process: it is not in `Debug` output, not in responses, not
/// in logs.
#[derive(Clone)]
#[must_use = "dropping the last clone of a HeldLock releases the lock at once: bind it \
              (`let _lock = ...`) for as long as the work needs the lock"]
pub struct HeldLock {
    inner: Arc<LeaseHandle>,
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("keys", &self.keys())
            .field("fencing_token", &self.fencing_token())
            .field("remaining", &self.remaining())
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl HeldLock {
    pub(crate) fn start(
        leases: Arc<Leases>,
        claim: Arc<Claim>,
        options: &Resolved,
        fencing_token: Option<u64>,
        acquired_at: Instant,
        valid_until: Instant,
    ) -> HeldLock {
        let drift_factor = leases.drift_factor;
        // No task: the engine's timers hand the lease to the batched extension when due.
        let schedule = Schedule::first(
            &leases.timers,
            acquired_at,
            valid_until,
            options.ttl,
            options.auto_extend,
            options
                .max_hold
                .and_then(|limit| acquired_at.checked_add(limit)),
        );
        let id = leases.registry.next_id();
        let core = LeaseCore {
            leases,
            claim,
            ttl: options.ttl,
            drift_factor,
            auto_extend: options.auto_extend,
            max_hold: options.max_hold,
            fencing_token,
            label: options.label.clone(),
            acquired_at,
            valid_until: AtomicU64::new(0),
            state: watch::Sender::new(LeaseState::Held),
            runtime: Handle::current(),
            id,
            turn: std::sync::Mutex::new(None),
            schedule: std::sync::Mutex::new(schedule),
            carried: OnceLock::new(),
            extending: Arc::default(),
        };
        core.set_valid_until(valid_until);
        let core = Arc::new(core);
        core.leases.registry.add(id, &core);
        telemetry::lease_started(&core.label);
        batch::schedule_first(&core);
        HeldLock {
            inner: Arc::new(LeaseHandle { core }),
        }
    }

    /// Keeps this process's turn on the key until the lease ends.
    pub(crate) fn hold_turn(&self, turn: Option<Box<dyn Turn>>) {
        if turn.is_some() {
            *self.core().turn.lock().unwrap_or_else(|e| e.into_inner()) = turn;
        }
    }

    pub(crate) fn core(&self) -> &Arc<LeaseCore> {
        &self.inner.core
    }

    /// The (first) key this lease holds, as given by the caller (without the prefix).
    pub fn key(&self) -> &str {
        &self.core().claim.keys.user[0]
    }

    /// Every key this lease holds, sorted.
    pub fn keys(&self) -> &[String] {
        &self.core().claim.keys.user
    }

    /// The fencing token, when fencing is on: it strictly increases across successive
    /// holders of a key (see the crate docs for the assumptions). Pass it to the resource
    /// you protect so that it can refuse writes from a holder whose lease ran out.
    pub fn fencing_token(&self) -> Option<u64> {
        self.core().fencing_token
    }

    /// When the lease's validity ends (monotonic clock), unless extended.
    pub fn valid_until(&self) -> Instant {
        self.core().valid_until()
    }

    /// Validity left; zero once lost, released or expired.
    pub fn remaining(&self) -> Duration {
        if self.core().state() != LeaseState::Held {
            return Duration::ZERO;
        }
        self.valid_until().saturating_duration_since(Instant::now())
    }

    /// `true` while the lease is held and its validity has not run out.
    pub fn is_held(&self) -> bool {
        self.core().state() == LeaseState::Held && Instant::now() < self.valid_until()
    }

    /// Resolves once the lease no longer protects anything, whatever the reason:
    /// - **lost**: it expired, or a quorum of nodes became unreachable or no longer holds
    ///   our token (`is_released()` is `false` then, unless it was released since);
    /// - **released**: by [`release`](HeldLock::release) on any clone, by the last clone
    ///   dropping, by [`RedlockLayer`](crate::layer::RedlockLayer) when its request ends, or by
    ///   [`Redlock::shutdown`](crate::Redlock::shutdown).
    ///
    /// Either way, work done under the lock must stop. The future does not borrow the lock,
    /// so it can be raced against work:
    ///
    /// ```no_run
    /// # async fn demo(lock: tower_redlock::HeldLock) {
    /// tokio::select! {
    ///     _ = lock.ended() => eprintln!("lease lost or released: stop writing"),
    ///     _ = async { /* long job */ } => {}
    /// }
    /// # }
    /// ```
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.core().subscribe();
        async move {
            let _ = state.wait_for(|s| *s != LeaseState::Held).await;
        }
    }

    /// The same as [`ended`](HeldLock::ended): resolves when the lease is lost **or
    /// released**, despite its name.
    ///
    /// It keeps that meaning on purpose: code that stops its work when `lost()` resolves
    /// must stop too once the lease was released under it (say, a task spawned from a
    /// handler, whose lease [`RedlockLayer`](crate::layer::RedlockLayer) releases when the
    /// request ends), or it would go on unlocked. New code should call `ended()`, which
    /// says what it means.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.ended()
    }

    /// Resolves once the lease is lost (not when it is released).
    pub(crate) fn lost_only(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.core().subscribe();
        async move {
            if state.wait_for(|s| *s == LeaseState::Lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// `true` once any clone called [`release`](HeldLock::release).
    pub fn is_released(&self) -> bool {
        self.core().state() == LeaseState::Released
    }

    /// Extends the lease so that it is valid for `ttl` from the start of this call (minus
    /// the drift allowance). Fails with [`LockError::Lost`] once the validity has lapsed or a
    /// quorum no longer holds our token; a failed extension never deletes the lock.
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        validity::check_ttl(ttl, self.core().drift_factor).map_err(|reason| {
            LockError::InvalidOptions {
                reason: format!("ttl of {ttl:?} {reason}"),
            }
        })?;
        extend::extend(self.core(), ttl).await
    }

    /// Releases the lease on every node (for all clones). Returns once a quorum confirmed;
    /// the remaining nodes are released in the background.
    ///
    /// When another task of this process waits for the same keys, the lease is handed on
    /// to it instead, in the same single round trip: the nodes switch to its fresh token,
    /// so the keys are never free in between (not with fencing on, nor when a waiter in
    /// another process is waiting too).
    pub async fn release(self) -> Result<ReleaseOutcome, LockError> {
        // The next local waiter goes now: with the lease handed on, or finding the nodes
        // free.
        let core = self.core().clone();
        core.end()
            .await
            .unwrap_or(Ok(ReleaseOutcome::AlreadyReleased))
    }
}
