//! Acquisition: one attempt on every node at once, decided at quorum, retried per policy.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use redis::{Cmd, Value};
use tokio::time::Instant;

use super::cleanup::{self, Pending, Sent, release_now};
use super::client::Shared;
use super::error::LockError;
use super::fanout::{Fanout, Reply};
use super::keys::LockKeys;
use super::lease::{self, Claim, HeldLock};
use super::node::reply::{AcquireReply, FenceSynced, MarkReply, PttlReply, SetReply};
use super::node::{Call, NodeError, SentOn};
use super::options::Resolved;
use super::queue::LocalTurn;
use super::scripts::{ACQUIRE, FENCE_SYNC, MARK};
use super::telemetry::{self, KeyHash};
use super::validity;
use super::wake::Interest;

/// What one node said to an acquire request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vote {
    /// Every key was free and is now ours; the node's fencing counter (0 without fencing).
    Yes { fence: u64 },
    /// A key is held by someone else, who has `pttl` ms left (negative: no expiry; `None`:
    /// not asked: a bare `SET` does not tell, see [`holder_pttl`]).
    Held { pttl: Option<i64> },
}

/// Acquires with retries, per the resolved options.
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
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
        tracing::Instrument::instrument(retry_loop(shared, &keys, &options), span.clone()).await;
    let outcome = telemetry::acquire_outcome(&result.as_ref().map(drop));
    span.record("outcome", outcome);
    telemetry::acquire(&options.label, outcome, first.elapsed());
    result
}

async fn retry_loop(
    shared: &Arc<Shared>,
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
    let mut turn = None;
    let mut interest: Option<Interest> = None;
    let mut finished = 0u32;
    let mut looked_again = false;
    if waits && shared.queues.is_busy(&keys.queue_id()) {
        // Others of this process already wait: queue behind them instead of barging in.
        let Some((local, _)) = shared.queues.turn(&keys.queue_id(), deadline).await else {
            let error = LockError::Contended {
                retry_after: options.ttl,
            };
            return Err(settle(shared, keys, options, error).await);
        };
        let local = match handed_on(local, options) {
            Ok(lock) => return Ok(lock),
            Err(local) => local,
        };
        turn = Some(local);
        interest = Some(shared.wake.interest(keys.channels()).await);
    }
    loop {
        if let Some(interest) = interest.as_mut() {
            interest.mark_seen();
        }
        let error = match guarded_attempt(shared, keys, options).await {
            Ok(lock) => {
                tracing::Span::current().record("attempts", finished + 1);
                lock.hold_turn(turn);
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
            return Err(settle(shared, keys, options, error).await);
        };
        if waits && contended && turn.is_none() {
            // First contention: waiters of one process line up locally, so that only one
            // of them competes on the nodes; the lease passes the turn on when it ends.
            let Some((local, waited)) = shared.queues.turn(&keys.queue_id(), deadline).await else {
                return Err(settle(shared, keys, options, error).await);
            };
            let local = match handed_on(local, options) {
                Ok(lock) => {
                    tracing::Span::current().record("attempts", finished);
                    return Ok(lock);
                }
                Err(local) => local,
            };
            turn = Some(local);
            // Listen for the holder's release from now on. A release that happened before
            // costs no more than the fallback timer.
            interest = Some(shared.wake.interest(keys.channels()).await);
            if waited {
                // The turn came when a local holder let go: look again at once, without
                // counting it as a retry.
                finished -= 1;
                continue;
            }
        }
        match interest.as_mut().filter(|_| contended) {
            Some(interest) => {
                if mark_awaited(shared, keys).await == Mark::Free && !looked_again {
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
            lock.hold_turn(Some(turn));
            Ok(lock)
        }
        None => Err(turn),
    }
}

/// What marking the keys found.
#[derive(Debug, PartialEq, Eq)]
enum Mark {
    /// A quorum held the keys and marked them: their release will wake us.
    Held,
    /// The keys are free on a quorum of nodes: released before the mark, so no wake-up
    /// will follow; look again now.
    Free,
    /// Nodes failed or disagreed: the fallback timer decides.
    Unknown,
}

/// Marks the keys as awaited on every node, so that the holder's release publishes a
/// wake-up (an unmarked release publishes nothing). Called once subscribed, so a release
/// after the mark wakes us.
async fn mark_awaited(shared: &Arc<Shared>, keys: &Arc<LockKeys>) -> Mark {
    let mut fanout = shared.broadcast(Call::script(&MARK, keys.len(), |cmd| {
        cmd.arg(keys.lock_keys());
    }));
    let (total, quorum) = (shared.total(), shared.quorum);
    let (mut held, mut free, mut failed) = (0, 0, 0);
    let mark = loop {
        let Some((_, reply)) = fanout.next().await else {
            break Mark::Unknown;
        };
        match reply.and_then(|v| MarkReply::parse(&v)) {
            Ok(MarkReply::Marked) => held += 1,
            Ok(MarkReply::Free) => free += 1,
            Err(_) => failed += 1,
        }
        if held >= quorum {
            break Mark::Held;
        }
        if free >= quorum {
            break Mark::Free;
        }
        if held + free + failed == total {
            break Mark::Unknown;
        }
    };
    finish_in_background(shared, fanout);
    mark
}

/// One attempt, unless the circuit breaker says to fail fast. The breaker's ticket lives
/// across the attempt: dropped with it (the caller cancelled), it gives a probe slot back.
async fn guarded_attempt(
    shared: &Arc<Shared>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let ticket = match shared.breaker.admit() {
        Ok(ticket) => ticket,
        Err(wait) => {
            return Err(LockError::Unavailable {
                reachable: 0,
                total: shared.total(),
                required: shared.quorum,
                retry_after: wait.max(Duration::from_millis(1)),
                circuit_open: true,
            });
        }
    };
    let start = Instant::now();
    let result = attempt(shared, keys, options).await;
    let outcome = telemetry::acquire_outcome(&result.as_ref().map(drop));
    telemetry::attempt(&options.label, outcome, start.elapsed());
    let unavailable = matches!(result, Err(LockError::Unavailable { .. }));
    let probe = ticket.is_probe();
    let opened = ticket.record(unavailable);
    if opened {
        tracing::warn!("Redlock circuit breaker opened: the quorum was unreachable repeatedly");
        telemetry::circuit(true, true);
    } else if probe && !unavailable {
        tracing::info!("Redlock circuit breaker closed: the quorum is reachable again");
        telemetry::circuit(false, false);
    }
    result
}

/// Whether an attempt on `keys` is a bare `SET NX PX` (one key, no fencing: the common
/// case) rather than the acquire script. A refused `SET` does not tell the holder's
/// remaining time; it is asked ([`holder_pttl`]) only when a contended error is returned.
fn bare_set(keys: &LockKeys, fencing: bool) -> bool {
    keys.len() == 1 && !fencing
}

/// The acquire request, built once per attempt and sent as is to every node: a bare
/// `SET key token NX PX ttl`, or else one script that checks and sets every key, and bumps
/// the fencing counters (refreshing their expiry to `fence_ttl`), atomically.
fn acquire_call(claim: &Claim, ttl_ms: u64, fencing: bool, fence_ttl: Duration) -> Call {
    let keys = &claim.keys;
    if bare_set(keys, fencing) {
        let mut cmd = Cmd::with_capacity(6, 64 + keys.lock_keys()[0].len());
        cmd.arg("SET")
            .arg(&keys.lock_keys()[0])
            .arg(claim.token.as_bytes())
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        return Call::Command(cmd);
    }
    Call::script(&ACQUIRE, 2 * keys.len(), |cmd| {
        cmd.arg(keys.lock_keys())
            .arg(keys.fence_keys())
            .arg(claim.token.as_bytes())
            .arg(ttl_ms)
            .arg(keys.len())
            .arg(if fencing { "1" } else { "0" })
            .arg(validity::millis_ceil(fence_ttl));
    })
}

/// The per-node acquire call.
async fn acquire_on(shared: Arc<Shared>, call: Arc<Call>, sent: Sent, index: usize) -> Reply<Vote> {
    let reply = shared.nodes[index].call(&call, Some(&sent[index])).await;
    (index, reply.and_then(|value| vote(&call, value)))
}

/// Reads a node's answer to the acquire request `call`.
fn vote(call: &Call, value: Value) -> Result<Vote, NodeError> {
    Ok(match call {
        Call::Command(_) => match SetReply::parse(&value)? {
            SetReply::Acquired => Vote::Yes { fence: 0 },
            SetReply::Held => Vote::Held { pttl: None },
        },
        Call::Script(_) => match AcquireReply::parse(&value)? {
            AcquireReply::Acquired { fence } => Vote::Yes { fence },
            AcquireReply::Held { pttl } => Vote::Held { pttl: Some(pttl) },
        },
    })
}

/// Fills in the holder's remaining time of a contended error about to be returned, when
/// the attempts were bare `SET`s, unless the caller has its own estimate
/// (`skip_holder_ttl`: the error keeps this call's ttl).
async fn settle(
    shared: &Arc<Shared>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
    error: LockError,
) -> LockError {
    match error {
        LockError::Contended { .. }
            if bare_set(keys, options.fencing) && !options.skip_holder_ttl =>
        {
            LockError::Contended {
                retry_after: holder_pttl(shared, keys)
                    .await
                    .unwrap_or(options.ttl)
                    .max(Duration::from_millis(1)),
            }
        }
        other => other,
    }
}

/// The holder's remaining time on the (single) key: the longest `PTTL` among the first
/// quorum of nodes to answer (the holder's nodes are a quorum, so at least one of them is
/// among those). Zero when the key is gone there (released meanwhile); `None` when no
/// quorum answered within the node timeout.
async fn holder_pttl(shared: &Arc<Shared>, keys: &Arc<LockKeys>) -> Option<Duration> {
    let mut cmd = Cmd::with_capacity(2, 32 + keys.lock_keys()[0].len());
    cmd.arg("PTTL").arg(&keys.lock_keys()[0]);
    let mut fanout = shared.broadcast(Call::Command(cmd));
    let (mut answered, mut longest) = (0, Duration::ZERO);
    while let Some((_, reply)) = fanout.next().await {
        if let Ok(pttl) = reply.and_then(|v| PttlReply::parse(&v)) {
            answered += 1;
            // Gone (released meanwhile), or without expiry (not ours to guess): zero.
            let left = match pttl {
                PttlReply::Left(ms) => ms,
                PttlReply::Missing | PttlReply::Persistent => 0,
            };
            longest = longest.max(Duration::from_millis(left));
            if answered >= shared.quorum {
                return Some(longest);
            }
        }
    }
    None
}

/// One attempt: returns as soon as a quorum said yes or can no longer say yes.
pub(crate) async fn attempt(
    shared: &Arc<Shared>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let total = shared.total();
    let quorum = shared.quorum;
    // Skipped nodes, and behind ones while passed by (the budget keeps those two within
    // what the quorum can spare, see `backlog`): the request does not go to them at all.
    let unreached = shared.unreached();
    if unreached > total - quorum {
        // Too many nodes stopped answering: no request can make a quorum.
        return Err(LockError::unavailable(total - unreached, total, quorum));
    }
    let claim = Arc::new(Claim::new(keys.clone()));
    let ttl_ms = validity::millis_ceil(options.ttl);
    // The clock starts before the first request is sent.
    let start = Instant::now();
    let sent: Sent = (0..total).map(|_| SentOn::default()).collect();
    let call = Arc::new(acquire_call(
        &claim,
        ttl_ms,
        options.fencing,
        shared.config.fence_ttl,
    ));
    let fanout = Fanout::new(total, shared.config.node_timeout, |index| {
        acquire_on(shared.clone(), call.clone(), sent.clone(), index)
    });
    let mut pending = Pending {
        shared: shared.clone(),
        claim: claim.clone(),
        fanout: Some(fanout),
        sent: sent.clone(),
        yes: Vec::with_capacity(total),
    };
    let (mut held, mut failed, mut fence, mut holder_pttl) = (0usize, 0usize, 0u64, None);
    let mut maybe = Vec::new();
    while let Some((index, reply)) = next(&mut pending.fanout).await {
        match reply {
            Ok(Vote::Yes { fence: f }) => {
                pending.yes.push(index);
                fence = fence.max(f);
            }
            Ok(Vote::Held { pttl }) => {
                held += 1;
                if let Some(pttl) = pttl.filter(|&ms| ms > 0) {
                    holder_pttl = holder_pttl.max(Some(pttl.unsigned_abs()));
                }
            }
            Err(error) => {
                failed += 1;
                warn_node(shared, index, "acquire", &error);
                // The SET may have run even though no reply came back.
                maybe.push(index);
            }
        }
        if pending.yes.len() >= quorum || held + failed > total - quorum {
            break;
        }
    }
    let yes = pending.yes.len();
    if yes < quorum {
        // Release the partial acquisition before reporting (so that a retry does not find
        // its own leftovers); nodes that failed or have not answered, and any release that
        // did not finish (even if this future is dropped meanwhile), are cleaned up in the
        // background when `pending` drops.
        let partial = pending.yes.len();
        pending.yes.extend_from_slice(&maybe);
        release_now(shared, &claim, &sent, &pending.yes[..partial]).await;
        let outstanding = pending.fanout.as_ref().map_or(0, Fanout::pending);
        let reachable = yes + held + outstanding;
        return Err(if held > 0 && reachable >= quorum {
            // Bare `SET`s leave the holder's time unknown: our ttl until `settle` asks.
            LockError::Contended {
                retry_after: holder_pttl
                    .map_or(options.ttl, Duration::from_millis)
                    .max(Duration::from_millis(1)),
            }
        } else {
            LockError::unavailable(yes + held, total, quorum)
        });
    }
    let fencing_token = if options.fencing {
        sync_fence(shared, keys, fence).await?;
        Some(fence)
    } else {
        None
    };
    let Some(validity) = validity::validity(options.ttl, start.elapsed(), options.drift) else {
        return Err(LockError::Expired);
    };
    // Equal to `now + validity`, without the time spent since computing it.
    let valid_until = start + options.ttl.saturating_sub(options.drift);
    let lock = lease::HeldLock::start(
        shared.clone(),
        claim.clone(),
        options,
        fencing_token,
        start,
        valid_until,
    );
    // The replies still on their way are read in the background, so that those nodes take
    // the lease too; one the lease's release may overtake is undone after it.
    if let Some(fanout) = pending.fanout.take() {
        let lease = Arc::downgrade(lock.core());
        cleanup::finish_after_success(shared, fanout, claim, sent, lease);
    }
    let span = tracing::Span::current();
    span.record("nodes", yes);
    span.record(
        "validity_ms",
        u64::try_from(validity.as_millis()).unwrap_or(u64::MAX),
    );
    Ok(lock)
}

async fn next<F>(fanout: &mut Option<Fanout<F>>) -> Option<Reply<Vote>>
where
    F: std::future::Future<Output = Reply<Vote>> + Send + 'static,
{
    fanout.as_mut()?.next().await
}

/// Raises the fencing counters of every node to `token` and waits until a quorum confirmed.
///
/// The write goes to every node that will later vote ([`FENCE_SYNC`] must reach every
/// node): answered ones confirm; the rest get it in the background, a node passed by
/// unanswered on its connection, a skipped one on the connection it stopped answering on
/// (see [`node`](super::node)). Each later holder's quorum then overlaps a quorum whose
/// counters are ≥ `token`, so its `INCR` yields more.
///
/// What is guaranteed, precisely: a later token is larger than `token` unless, when the
/// later holder acquires, a majority of nodes have counters below `token` — nodes that lost
/// their data since, and nodes this write-back did not reach: one that could not be reached
/// at all (down, its connection dead) counts as one that lost its data, as does one so far
/// behind that the write has not landed yet. Fewer than a majority of such nodes can never
/// make a token go backwards. A counter that expired counts as lost data: the write-back
/// (like the acquire script) raises every counter's expiry to `fence_ttl`, so that happens
/// only after `fence_ttl` without a fenced acquisition of the key (see
/// [`fence_ttl`](super::fence_ttl)).
async fn sync_fence(
    shared: &Arc<Shared>,
    keys: &Arc<LockKeys>,
    token: u64,
) -> Result<(), LockError> {
    let total = shared.total();
    let mut fanout = shared.broadcast(Call::script(&FENCE_SYNC, keys.len(), |cmd| {
        cmd.arg(keys.fence_keys())
            .arg(token)
            .arg(validity::millis_ceil(shared.config.fence_ttl));
    }));
    let (mut ok, mut failed) = (0, 0);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| FenceSynced::parse(&v)) {
            Ok(FenceSynced) => ok += 1,
            Err(error) => {
                failed += 1;
                warn_node(shared, index, "fence sync", &error);
            }
        }
        if ok >= shared.quorum {
            // The rest still get the write, in the background.
            finish_in_background(shared, fanout);
            return Ok(());
        }
        if failed > total - shared.quorum {
            break;
        }
    }
    Err(LockError::unavailable(total - failed, total, shared.quorum))
}

/// Logs a node failure with the node's index and redacted URL, and skips a node that did
/// not answer until it does (see [`recovery`](super::recovery)).
pub(crate) fn warn_node(shared: &Arc<Shared>, index: usize, op: &'static str, error: &NodeError) {
    if matches!(error, NodeError::Skipped | NodeError::Behind(_)) {
        return; // said once, when the node was first skipped or fell behind
    }
    tracing::warn!(
        node = index,
        url = %shared.nodes[index].url,
        op,
        %error,
        "Redlock node did not answer"
    );
    shared.node_failed(index, error);
}

/// Reads the late replies of a decided fan-out in the background, to their end (bounded by
/// the node timeout): a request nobody waits for any more would not even be sent.
pub(crate) fn finish_in_background<F, T>(shared: &Arc<Shared>, fanout: Fanout<F>)
where
    F: std::future::Future<Output = Reply<T>> + Send + 'static,
    T: Send + 'static,
{
    let engine = shared.clone();
    let rest = fanout.drain(shared, move |(index, reply)| {
        if let Err(error) = reply {
            engine.node_failed(index, &error);
        }
    });
    if let Some(rest) = rest {
        shared.janitor.run(rest);
    }
}
