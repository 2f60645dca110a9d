//! A lease and its life: the state shared by the clones of a [`HeldLock`], its extension,
//! and its ending, which happens once: released on the nodes, or — when another task of
//! this process waits for the keys — handed over by the [`Turn`] that task's line installed
//! (see `handover/`, which implements it; this folder never names it).
//!
//! Its parts: [`held`], the public handle; [`extend`], extensions; [`timers`] and
//! [`batch`], when they happen and how often (the engine's batched automatic extension); [`release`], the release requests and how their answers
//! add up; [`barrier`], the swap a carried-over lease waits for; [`registry`], the live
//! leases shutdown ends; [`unfinished`], the guard that finishes a release dropped half-way.
//! Uses `node/`, `wake/`, `background/`, `config/` and `core/`.

mod barrier;
pub(crate) mod batch;
pub(crate) mod extend;
mod held;
mod registry;
pub(crate) mod release;
pub(crate) mod timers;
mod turn;
mod unfinished;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use self::barrier::Carried;
use self::registry::{LeaseId, Registry};
use self::timers::Timers;
use self::unfinished::Unfinished;
use crate::redlock::background::lifecycle::{Busy, Lifecycle};
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::telemetry::{self, KeyHash};
use crate::redlock::core::token::Token;
use crate::redlock::node::NodeSet;
use crate::redlock::wake::WakeHub;

pub(crate) use self::barrier::{Swap, SwapBarrier};
pub use self::held::HeldLock;
pub(crate) use self::turn::Turn;

/// What the leases of one engine share: the nodes, the timers that extend them, the
/// registry shutdown ends them from, and local wake-ups.
pub(crate) struct Leases {
    pub(crate) nodes: Arc<NodeSet>,
    pub(crate) wake: Arc<WakeHub>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) drift_factor: f64,
    pub(crate) timers: Timers,
    registry: Registry,
}

impl Leases {
    /// Starts the timers' task on the current runtime.
    pub(crate) fn start(
        nodes: Arc<NodeSet>,
        wake: Arc<WakeHub>,
        lifecycle: Arc<Lifecycle>,
        drift_factor: f64,
    ) -> Leases {
        Leases {
            nodes,
            wake,
            lifecycle,
            drift_factor,
            timers: Timers::start(batch::start_due),
            registry: Registry::default(),
        }
    }

    /// Every lease not yet released (for shutdown).
    pub(crate) fn live(&self) -> Vec<Arc<LeaseCore>> {
        self.registry.live()
    }
}

/// The keys and the token of one acquisition attempt.
pub(crate) struct Claim {
    pub(crate) keys: Arc<LockKeys>,
    pub(crate) token: Token,
}

impl Claim {
    pub(crate) fn new(keys: Arc<LockKeys>) -> Claim {
        Claim {
            keys,
            token: Token::generate(),
        }
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    Held,
    Lost,
    Released,
}

/// How a [`HeldLock::release`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// Our token is gone from the nodes: deleted, or handed on to the next holder waiting
    /// in this process (see [`HeldLock::release`]).
    Released,
    /// The keys had already expired: nothing was held any more.
    AlreadyExpired,
    /// The keys are held by someone else (ours expired and another client took them).
    OwnedByOther,
    /// Another clone of this [`HeldLock`] released it before.
    AlreadyReleased,
}

/// State shared by the clones of a [`HeldLock`] and the engine's scheduler.
pub(crate) struct LeaseCore {
    pub(crate) leases: Arc<Leases>,
    pub(crate) claim: Arc<Claim>,
    pub(crate) ttl: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) auto_extend: bool,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) fencing_token: Option<u64>,
    pub(crate) label: Arc<str>,
    pub(crate) acquired_at: Instant,
    /// `valid_until` as nanoseconds after `acquired_at`.
    valid_until: AtomicU64,
    state: watch::Sender<LeaseState>,
    pub(crate) runtime: Handle,
    /// Its place among the engine's live leases (see [`registry`]).
    id: LeaseId,
    /// This process's turn on the keys, if it queued for them: ends the lease when someone
    /// local follows (see [`Turn`]).
    turn: Mutex<Option<Box<dyn Turn>>>,
    /// Where the lease waits for its next extension or its validity end (see [`batch`]).
    schedule: Mutex<batch::Schedule>,
    /// The lease's one barrier: set when it was carried over from the previous local
    /// holder, whose swap to its token may still be under way (see [`barrier`]).
    carried: OnceLock<Carried>,
    /// Serialises extensions (see [`extend`](Self::extend)): held from before an
    /// extension's first request until its last reply is in or timed out.
    extending: Arc<tokio::sync::Mutex<()>>,
}

impl LeaseCore {
    pub(crate) fn valid_until(&self) -> Instant {
        self.acquired_at + Duration::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    pub(crate) fn set_valid_until(&self, at: Instant) {
        self.valid_until.store(self.nanos(at), Ordering::Release);
    }

    /// Lowers `valid_until` to `at`, if it is later.
    fn lower_valid_until(&self, at: Instant) {
        self.valid_until.fetch_min(self.nanos(at), Ordering::AcqRel);
    }

    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.acquired_at).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    pub(crate) fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Whether a waiter in another process is known to have marked the keys (learnt from
    /// a carried swap).
    pub(crate) fn is_marked(&self) -> bool {
        self.carried.get().is_some_and(Carried::marked)
    }

    /// Notes that this lease was carried over, its swap (`barrier`) still under way.
    pub(crate) fn set_carried(&self, barrier: Arc<SwapBarrier>) {
        let _ = self.carried.set(Carried::new(barrier));
    }

    /// The swap behind this carried-over lease was decided: the lease takes its fresh
    /// validity, or is lost (see [`Carried::apply`]).
    pub(crate) fn carried_settled(&self, swap: Swap) {
        if let Some(carried) = self.carried.get() {
            carried.apply(self, swap, false);
        }
    }

    /// Held → Lost. Returns whether this call made the change.
    pub(crate) fn mark_lost(&self) -> bool {
        let changed = self.state.send_if_modified(|s| {
            let held = *s == LeaseState::Held;
            if held {
                *s = LeaseState::Lost;
                // Counted before anyone waiting on `lost()` is woken.
                telemetry::lost(&self.label);
                telemetry::hold(&self.label, self.acquired_at.elapsed());
                telemetry::lease_ended(&self.label);
            }
            held
        });
        if changed {
            batch::unschedule(self);
            drop(self.take_turn());
            tracing::warn!(key = %KeyHash::of(&self.claim.keys.user), "Redlock lease lost");
        }
        changed
    }

    /// Held or Lost → Released. Returns `None` when it was released already, else whether
    /// it was still held.
    fn mark_released(&self) -> Option<bool> {
        let mut was_held = false;
        let changed = self.state.send_if_modified(|s| {
            was_held = *s == LeaseState::Held;
            let open = *s != LeaseState::Released;
            if open {
                *s = LeaseState::Released;
            }
            open
        });
        if was_held {
            telemetry::hold(&self.label, self.acquired_at.elapsed());
            telemetry::lease_ended(&self.label);
        }
        if !changed {
            return None;
        }
        batch::unschedule(self);
        self.leases.registry.remove(self.id);
        Some(was_held)
    }

    /// Ends the lease for every clone and releases it ([`finish`](Self::finish));
    /// `None` when it was released already.
    pub(crate) async fn end(self: &Arc<Self>) -> Option<Result<ReleaseOutcome, LockError>> {
        // Counted before it is marked released: see `lifecycle`.
        let busy = self.leases.lifecycle.enter();
        let was_held = self.mark_released()?;
        Some(self.finish(was_held, busy).await)
    }

    /// Takes this process's turn on the keys (to pass it on).
    fn take_turn(&self) -> Option<Box<dyn Turn>> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Passes the local turn on (dropping it lets the next local waiter go) and wakes local
    /// waiters: the lease no longer holds the keys.
    pub(crate) fn pass_turn<T>(&self, turn: T) {
        drop(turn);
        self.leases.wake.notify_local(self.claim.keys.channels());
    }

    /// Ends a lease that [`mark_released`](Self::mark_released) just closed (`was_held`: it
    /// was not lost): when another task of this process waits for it, carries it over to
    /// that task (through its [`Turn`]); else releases it on the nodes, then passes the
    /// local turn on and wakes local waiters. A lease that was itself carried over first waits for its own swap.
    ///
    /// Dropped before it completes (a client disconnect, a cancelled `with_lock`), it still
    /// happens: see [`Unfinished`]. `busy` counts it as work under way (for shutdown) until
    /// it completes or the janitor took the rest over.
    async fn finish(
        self: &Arc<Self>,
        was_held: bool,
        busy: Busy,
    ) -> Result<ReleaseOutcome, LockError> {
        let unfinished = Unfinished {
            core: Some(self.clone()),
            _busy: busy,
        };
        let result = self.finish_inner(was_held).await;
        unfinished.disarm();
        result
    }

    async fn finish_inner(self: &Arc<Self>, was_held: bool) -> Result<ReleaseOutcome, LockError> {
        let mut was_held = was_held;
        if let Some(carried) = self.carried.get() {
            // Carried over: on every node, whatever this lease sends follows its swap.
            was_held &= carried.settled().await != Swap::Failed;
        }
        let turn = self.take_turn();
        // The one ending decision. Shutting down, local waiters give up: nothing is handed
        // over.
        let hand_over = was_held
            && !self.leases.lifecycle.is_closing()
            && turn.as_ref().is_some_and(|turn| turn.has_followers());
        let span = tracing::debug_span!(
            "redlock.release",
            key = %KeyHash::of(&self.claim.keys.user),
            outcome = tracing::field::Empty,
            handed_over = hand_over,
        );
        let result = match turn {
            Some(turn) if hand_over => {
                tracing::Instrument::instrument(turn.hand_over(self.clone()), span.clone()).await
            }
            turn => {
                let released = release::release_on_nodes(self);
                let result = tracing::Instrument::instrument(released, span.clone()).await;
                self.pass_turn(turn);
                result
            }
        };
        let outcome = match &result {
            Ok(ReleaseOutcome::Released) => "released",
            Ok(ReleaseOutcome::AlreadyExpired) => "expired",
            Ok(ReleaseOutcome::OwnedByOther) => "owned_by_other",
            Ok(ReleaseOutcome::AlreadyReleased) => "already_released",
            Err(_) => "unavailable",
        };
        span.record("outcome", outcome);
        telemetry::release(&self.label, outcome);
        result
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::Redlock;
    use crate::testkit::LocalCluster;

    /// A carried swap settled after an extension took over never raises the validity the
    /// extension set (it may only be stale by then).
    #[tokio::test]
    async fn a_late_swap_settlement_never_raises_the_validity() {
        let cluster = LocalCluster::start(1).await.unwrap();
        let engine = Redlock::builder()
            .nodes(cluster.urls())
            .build()
            .await
            .unwrap();
        let lock = engine.acquire("late-settlement").await.unwrap();
        let core = lock.core();
        let now = Instant::now();
        let swap = |secs| Swap::Moved {
            valid_until: now + Duration::from_secs(secs),
            marked: false,
        };
        // Before any extension, the settlement sets the swap's validity, up or down.
        let barrier = SwapBarrier::new();
        core.set_carried(barrier.clone());
        core.carried_settled(swap(20));
        assert_eq!(lock.valid_until(), now + Duration::from_secs(20));
        // An extension applies the swap itself, then sets what it found.
        core.carried.get().unwrap().apply(core, swap(20), true);
        core.set_valid_until(now + Duration::from_secs(3));
        // The settlement's own call, late: stale, ignored.
        core.carried_settled(swap(20));
        assert_eq!(lock.valid_until(), now + Duration::from_secs(3));
        // Decided, so that the release (which waits for the swap) goes ahead.
        barrier.settle(swap(20));
        lock.release().await.unwrap();
    }
}
