//! A lease: its state shared by the clones of a [`HeldLock`] and the engine's scheduler, and
//! its release (carried over, handed on, or deleted), which happens once.
//!
//! Its parts: `held`, the public handle ([`HeldLock`]); `extend`, extensions; [`batch`],
//! the engine's batched automatic extension; and `unfinished`, the guard that finishes a
//! release dropped half-way.

pub(crate) mod batch;
mod extend;
mod held;
mod unfinished;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use super::acquire::{finish_in_background, warn_node};
use super::carry::{self, Carried, Swap};
use super::client::Shared;
use super::error::LockError;
use super::handoff;
use super::keys::LockKeys;
use super::lifecycle::Busy;
use super::node::reply::ReleaseReply;
use super::queue::LocalTurn;
use super::registry::LeaseId;
use super::release::{release_call, release_outcome};
use super::telemetry::{self, KeyHash};
use super::token::Token;

pub use held::HeldLock;
use unfinished::Unfinished;

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

/// How a lease that was still open ends on the nodes.
enum Ending {
    /// Carried over to the next local holder at once (see [`carry`]).
    Carry(LocalTurn),
    /// Released, or handed on to the next local holder (`hand_on`), then the turn passed.
    Release {
        hand_on: bool,
        turn: Option<LocalTurn>,
    },
}

/// State shared by the clones of a [`HeldLock`] and the engine's scheduler.
pub(crate) struct LeaseCore {
    pub(crate) shared: Arc<Shared>,
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
    /// Its place among the engine's live leases (see [`registry`](super::registry)).
    id: LeaseId,
    /// This process's turn on the key, passed on when the lease ends.
    turn: std::sync::Mutex<Option<LocalTurn>>,
    /// Where the lease waits for its next extension or its validity end (see [`batch`]).
    schedule: std::sync::Mutex<batch::Schedule>,
    /// Set when the lease was carried over from the previous local holder (see
    /// [`carry`]): the swap to its token, maybe still under way.
    carried: OnceLock<Arc<Carried>>,
    /// A waiter in another process marked the keys (learnt from a carried swap).
    marked: AtomicBool,
    /// Serialises extensions (see [`extend`](Self::extend)): held from before an
    /// extension's first request until its last reply is in or timed out.
    extending: Arc<tokio::sync::Mutex<()>>,
    /// Whether an extension took over from the carried swap: from then on the swap's
    /// settlement no longer sets the validity (see [`carried_settled`](Self::carried_settled)).
    extended: std::sync::Mutex<bool>,
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

    /// Whether a waiter in another process is known to have marked the keys.
    pub(crate) fn is_marked(&self) -> bool {
        self.marked.load(Ordering::Relaxed)
    }

    /// Notes that this lease was carried over, its swap still under way.
    pub(crate) fn set_carried(&self, carried: Arc<Carried>) {
        let _ = self.carried.set(carried);
    }

    /// The swap behind this carried-over lease was decided: the lease takes its fresh
    /// validity, or is lost.
    ///
    /// Called by the swap's settlement and by the first extension, which waits for the swap
    /// and applies it itself before it sends anything (so its own outcome is the latest on
    /// every node). Once an extension did, the swap's validity is stale: a settlement that
    /// comes later (it notifies waiters before it calls this) leaves the validity alone
    /// instead of raising it over what that extension found.
    pub(crate) fn carried_settled(&self, swap: Swap) {
        self.apply_swap(swap, false);
    }

    /// [`carried_settled`](Self::carried_settled); `by_extension`: an extension takes over.
    fn apply_swap(&self, swap: Swap, by_extension: bool) {
        match swap {
            Swap::Moved {
                valid_until,
                marked,
            } => {
                let mut extended = self.extended.lock().unwrap_or_else(|e| e.into_inner());
                if !*extended {
                    self.marked.store(marked, Ordering::Relaxed);
                    self.set_valid_until(valid_until);
                }
                *extended |= by_extension;
            }
            Swap::Failed => {
                self.mark_lost();
            }
            Swap::Pending => {}
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
            self.unschedule();
            self.take_turn();
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
        self.unschedule();
        self.shared.leases.remove(self.id);
        Some(was_held)
    }

    /// Ends the lease for every clone and releases it ([`finish`](Self::finish));
    /// `None` when it was released already.
    pub(crate) async fn end(self: &Arc<Self>) -> Option<Result<ReleaseOutcome, LockError>> {
        // Counted before it is marked released: see `lifecycle`.
        let busy = self.shared.lifecycle.enter();
        let was_held = self.mark_released()?;
        Some(self.finish(was_held, busy).await)
    }

    /// Takes this process's turn on the key (to pass it on).
    fn take_turn(&self) -> Option<LocalTurn> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Ends a lease that [`mark_released`](Self::mark_released) just closed (`was_held`: it
    /// was not lost): when another task of this process waits for it, carries it over to
    /// that task at once (see [`carry`]) or hands it on after one round trip (see
    /// [`handoff`]); else releases it on the nodes, then passes the local turn on and wakes
    /// local waiters. A lease that was itself carried over first waits for its own swap.
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
        // Shutting down, local waiters give up: nothing is handed on.
        let followed = was_held
            && !self.shared.lifecycle.is_closing()
            && turn.as_ref().is_some_and(LocalTurn::has_followers);
        let ending = match turn {
            Some(turn) if followed && carry::can_carry(self) => Ending::Carry(turn),
            turn => {
                let hand_on =
                    followed && self.fencing_token.is_none() && Instant::now() < self.valid_until();
                Ending::Release { hand_on, turn }
            }
        };
        self.release_nodes(ending).await
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// Deletes our token from every node, or moves it to the next local holder (carried
    /// over or handed on); decides once a quorum has answered. Then passes the local turn
    /// on and wakes local waiters.
    async fn release_nodes(self: &Arc<Self>, ending: Ending) -> Result<ReleaseOutcome, LockError> {
        let span = tracing::debug_span!(
            "redlock.release",
            key = %KeyHash::of(&self.claim.keys.user),
            outcome = tracing::field::Empty,
            handed_on = !matches!(ending, Ending::Release { hand_on: false, .. }),
        );
        let result = match ending {
            Ending::Carry(turn) => {
                tracing::Instrument::instrument(carry::carry(self, turn), span.clone()).await
            }
            Ending::Release { hand_on, turn } => {
                let (result, handoff) = if hand_on {
                    tracing::Instrument::instrument(handoff::transfer(self), span.clone()).await
                } else {
                    let released =
                        tracing::Instrument::instrument(self.release_inner(), span.clone());
                    (released.await, None)
                };
                match (turn, handoff) {
                    (Some(turn), Some(handoff)) => turn.pass(handoff),
                    (turn, _) => {
                        drop(turn);
                        self.shared.wake.notify_local(self.claim.keys.channels());
                    }
                }
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

    async fn release_inner(self: &Arc<Self>) -> Result<ReleaseOutcome, LockError> {
        let total = self.shared.total();
        let quorum = self.shared.quorum;
        let mut fanout = self.shared.broadcast(release_call(&self.claim, true));
        let (mut released, mut expired, mut foreign, mut failed) = (0, 0, 0, 0);
        while let Some((index, reply)) = fanout.next().await {
            match reply.and_then(|v| ReleaseReply::parse(&v)) {
                Ok(ReleaseReply::Released) => released += 1,
                Ok(ReleaseReply::Gone) => expired += 1,
                Ok(ReleaseReply::NotOwner | ReleaseReply::HandedOver { .. }) => foreign += 1,
                Err(error) => {
                    failed += 1;
                    warn_node(&self.shared, index, "release", &error);
                }
            }
            if released >= quorum {
                break;
            }
        }
        // Stragglers still get their delete, without the caller waiting for them.
        finish_in_background(&self.shared, fanout);
        release_outcome(released, foreign, expired, failed, total, quorum)
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
        core.carried_settled(swap(20));
        assert_eq!(lock.valid_until(), now + Duration::from_secs(20));
        // An extension applies the swap itself, then sets what it found.
        core.apply_swap(swap(20), true);
        core.set_valid_until(now + Duration::from_secs(3));
        // The settlement's own call, late: stale, ignored.
        core.carried_settled(swap(20));
        assert_eq!(lock.valid_until(), now + Duration::from_secs(3));
        lock.release().await.unwrap();
    }
}
