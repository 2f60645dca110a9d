//! [`HeldLock`]: a held lease, shared by its clones, extended by a watchdog, released once.

use std::fmt;
use std::future::Future;
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
use super::node::{Call, int};
use super::options::Resolved;
use super::queue::LocalTurn;
use super::release::{release_call, release_outcome};
use super::scripts::EXTEND;
use super::telemetry::{self, KeyHash};
use super::timers::TimerKey;
use super::token::Token;
use super::validity;
use super::watchdog;

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

/// State shared by the clones of a [`HeldLock`] and its watchdog.
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
    /// This process's turn on the key, passed on when the lease ends.
    turn: std::sync::Mutex<Option<LocalTurn>>,
    /// Where the lease waits for its watchdog (see [`Timers`](super::timers::Timers)).
    timer: TimerKey,
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
            }
            held
        });
        if changed {
            self.shared.timers.cancel(self.timer);
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
        }
        if !changed {
            return None;
        }
        self.shared.timers.cancel(self.timer);
        Some(was_held)
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
    /// happens: see [`Unfinished`].
    async fn finish(self: &Arc<Self>, was_held: bool) -> Result<ReleaseOutcome, LockError> {
        let unfinished = Unfinished(Some(self.clone()));
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
        let followed = was_held && turn.as_ref().is_some_and(LocalTurn::has_followers);
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

    /// Extends every key to `ttl` from now, if a quorum still holds our token.
    ///
    /// Validity counts from the start of this call. Compare-only: never re-creates an
    /// expired key; refuses once the local validity has lapsed; a failure deletes nothing.
    ///
    /// `valid_until` never overstates what a quorum of nodes holds. An extension sets each
    /// key's expiry, shorter or longer than before, so two of them racing (a user's
    /// `extend(60 s)` and the watchdog's `extend(ttl)`, or two clones) could land in one
    /// order on the nodes and finish in the other here. So:
    /// - extensions of a lease run one at a time, and each holds its turn until every
    ///   reply of its fan-out is in or timed out (the late ones are read in the
    ///   background): the next one's requests are queued after all of its requests, on
    ///   each node's connection, and so run after them. The outcome of the last extension
    ///   to finish is then the latest on the nodes that answered it. (A request whose
    ///   connection is replaced meanwhile loses that order; it timed out first.)
    /// - before its first request, `valid_until` is lowered to `start + ttl − drift`:
    ///   from then on each node holds either its previous expiry or at least that, so the
    ///   lower of the two is safe whatever becomes of the requests (a failure, a timeout,
    ///   the call dropped half-way). On quorum it is set to `start + ttl − drift`.
    /// - a carried-over lease first waits for its swap and applies it itself (see
    ///   [`carried_settled`](Self::carried_settled)).
    pub(crate) async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        let span = tracing::debug_span!(
            "redlock.extend",
            key = %KeyHash::of(&self.claim.keys.user),
            ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ok = tracing::field::Empty,
        );
        let result = tracing::Instrument::instrument(self.extend_inner(ttl), span.clone()).await;
        span.record("ok", result.is_ok());
        if result.is_err() {
            telemetry::extend_failed(&self.label);
        }
        result
    }

    async fn extend_inner(&self, ttl: Duration) -> Result<(), LockError> {
        // Our turn: held until every reply of this extension is in (see `extend`).
        let turn = self.extending.clone().lock_owned().await;
        if let Some(carried) = self.carried.get() {
            // Carried over: the extension must follow the swap to our token on every node.
            let swap = carried.settled().await;
            self.apply_swap(swap, true);
        }
        let start = Instant::now();
        if self.state() != LeaseState::Held {
            return Err(LockError::Lost);
        }
        if start >= self.valid_until() {
            self.mark_lost();
            return Err(LockError::Lost);
        }
        let drift = validity::drift(ttl, self.drift_factor);
        // Whatever becomes of the requests, a quorum holds at least the lower of the two.
        self.lower_valid_until(start + ttl.saturating_sub(drift));
        let ttl_ms = validity::millis_ceil(ttl);
        let (shared, claim) = (&self.shared, &self.claim);
        let total = shared.total();
        let keys = &claim.keys;
        let mut fanout = shared.broadcast(Call::script(&EXTEND, keys.len(), |cmd| {
            cmd.arg(keys.lock_keys())
                .arg(claim.token.as_bytes())
                .arg(ttl_ms)
                .arg(keys.len());
        }));
        let (mut ok, mut refused, mut failed) = (0, 0, 0);
        while let Some((index, reply)) = fanout.next().await {
            match reply.and_then(|v| int(&v)) {
                Ok(1) => ok += 1,
                Ok(_) => refused += 1,
                Err(error) => {
                    failed += 1;
                    warn_node(shared, index, "extend", &error);
                }
            }
            if ok >= shared.quorum || refused + failed > total - shared.quorum {
                break;
            }
        }
        // The late replies are read in the background, and the next extension waits for
        // them.
        let engine = shared.clone();
        let rest = fanout.drain(shared, move |(index, reply)| {
            if let Err(error) = reply {
                engine.node_failed(index, &error);
            }
        });
        if let Some(rest) = rest {
            shared.janitor.run(async move {
                rest.await;
                drop(turn);
            });
        }
        if ok >= shared.quorum {
            let Some(validity) = validity::validity(ttl, Duration::ZERO, drift) else {
                return Err(LockError::Expired);
            };
            if self.state() != LeaseState::Held {
                return Err(LockError::Lost);
            }
            self.set_valid_until(start + validity);
            return Ok(());
        }
        if refused > total - shared.quorum {
            // A quorum no longer has our token: the lock is gone for good.
            self.mark_lost();
            return Err(LockError::Lost);
        }
        Err(LockError::unavailable(total - failed, total, shared.quorum))
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
            match reply.and_then(|v| int(&v)) {
                Ok(1) => released += 1,
                Ok(0) => expired += 1,
                Ok(_) => foreign += 1,
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

/// A release under way ([`LeaseCore::finish`]). Dropped before it completed, it hands the
/// rest to the engine's background task: the lease is already marked released, so nothing
/// else would release it, and the keys would stay until they expire.
///
/// The rest: after the lease's own carried swap (if any) is decided, our token is deleted
/// from every node (announced), then the local turn, if this lease still has it, is passed
/// on and local waiters are woken. Whatever the dropped release had started has its own
/// drop path: a hand-off's fresh token is released by the dropped [`Handoff`]
/// (see [`handoff`]); a carried swap is settled as failed, so the next holder learns its
/// lease is lost and releases the fresh token itself (see [`carry`]); a turn taken out of
/// the lease is passed on as it drops. A request of ours that the dropped release had
/// already sent runs before this release on the node's connection, so it cannot set our
/// token again after it.
///
/// Disarmed when the release completes: no task, no allocation on that path.
struct Unfinished(Option<Arc<LeaseCore>>);

impl Unfinished {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(core) = self.0.take() else {
            return;
        };
        let shared = core.shared.clone();
        shared.janitor.run(async move {
            if let Some(carried) = core.carried.get() {
                carried.settled().await;
            }
            handoff::release_everywhere(core.shared.clone(), core.claim.clone()).await;
            drop(core.take_turn());
            core.shared.wake.notify_local(core.claim.keys.channels());
        });
    }
}

/// Releases the lease in the background when the last clone drops.
struct LeaseHandle {
    core: Arc<LeaseCore>,
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        if let Some(was_held) = self.core.mark_released() {
            let core = self.core.clone();
            // Never block in Drop: the release runs on the runtime the lease was made on.
            self.core.runtime.spawn(async move {
                let _ = core.finish(was_held).await;
            });
        }
    }
}

/// A held lock: a quorum lease on one or more keys.
///
/// Clones share one lease. While any clone lives, a watchdog extends the lease every
/// ~ttl/3; when extension cannot reach a quorum before the validity ends, the lease is
/// lost: [`lost`](HeldLock::lost) resolves and [`is_held`](HeldLock::is_held) turns false.
/// [`release`](HeldLock::release) deletes it at once; dropping the last clone releases it in
/// the background.
///
/// A lease taken by [`RedlockLayer`](crate::RedlockLayer) lasts as long as its request, not
/// as long as its clones: the layer releases it (for every clone) when the response is
/// produced — with `hold_until_body_end`, at the body's last frame —, or when the response
/// future or body is dropped (the client went away). A clone moved into a spawned task, an
/// `on_upgrade` closure or shared state then sees `is_held() == false` and `lost()`
/// resolved. Work that must stay locked beyond the request takes its own lease
/// (`Locked<K>`, or [`Redlock::acquire`](crate::Redlock::acquire) in that task).
///
/// The token never leaves the process: it is not in `Debug` output, not in responses, not
/// in logs.
#[derive(Clone)]
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
        shared: Arc<Shared>,
        claim: Arc<Claim>,
        options: &Resolved,
        fencing_token: Option<u64>,
        acquired_at: Instant,
        valid_until: Instant,
    ) -> HeldLock {
        let drift_factor = shared.config.drift_factor;
        // No task until the watchdog has work: the engine's timers start it when due.
        let (first_wake, _) = watchdog::first_wake(
            acquired_at,
            valid_until,
            options.ttl,
            options.auto_extend,
            options
                .max_hold
                .and_then(|limit| acquired_at.checked_add(limit)),
        );
        let timer = shared.timers.key(first_wake);
        let core = LeaseCore {
            shared,
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
            turn: std::sync::Mutex::new(None),
            timer,
            carried: OnceLock::new(),
            marked: AtomicBool::new(false),
            extending: Arc::default(),
            extended: std::sync::Mutex::new(false),
        };
        core.set_valid_until(valid_until);
        let core = Arc::new(core);
        core.shared.timers.schedule(core.timer, &core);
        HeldLock {
            inner: Arc::new(LeaseHandle { core }),
        }
    }

    /// Keeps this process's turn on the key until the lease ends.
    pub(crate) fn hold_turn(&self, turn: Option<LocalTurn>) {
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

    /// Resolves once the lease can no longer be guaranteed: lost (expired, or a quorum
    /// unreachable or no longer holding our token) or released.
    ///
    /// The future does not borrow the lock, so it can be raced against work:
    ///
    /// ```no_run
    /// # async fn demo(lock: tower_redlock::HeldLock) {
    /// tokio::select! {
    ///     _ = lock.lost() => eprintln!("lease lost: stop writing"),
    ///     _ = async { /* long job */ } => {}
    /// }
    /// # }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.core().subscribe();
        async move {
            let _ = state.wait_for(|s| *s != LeaseState::Held).await;
        }
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
        self.core().extend(ttl).await
    }

    /// Releases the lease on every node (for all clones). Returns once a quorum confirmed;
    /// the remaining nodes are released in the background.
    ///
    /// When another task of this process waits for the same keys, the lease is handed on
    /// to it instead, in the same single round trip: the nodes switch to its fresh token,
    /// so the keys are never free in between (not with fencing on, nor when a waiter in
    /// another process is waiting too).
    pub async fn release(self) -> Result<ReleaseOutcome, LockError> {
        let core = self.core().clone();
        let Some(was_held) = core.mark_released() else {
            return Ok(ReleaseOutcome::AlreadyReleased);
        };
        // The next local waiter goes now: with the lease handed on, or finding the nodes
        // free.
        core.finish(was_held).await
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
