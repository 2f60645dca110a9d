//! One acquisition attempt on every node at once, decided at quorum.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cleanup::{Pending, Sent, finish_after_success, release_now};
use super::fence::sync_fence;
use super::vote::{Vote, acquire_call, vote};
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::validity;
use crate::redlock::engine::Engine;
use crate::redlock::lease::{Claim, HeldLock};
use crate::redlock::node::{Call, Fanout, Reply, SentOn, Tally, warn_node};

/// The per-node acquire call.
async fn acquire_on(engine: Arc<Engine>, call: Arc<Call>, sent: Sent, index: usize) -> Reply<Vote> {
    let reply = engine.nodes()[index].call(&call, Some(&sent[index])).await;
    (index, reply.and_then(|value| vote(&call, value)))
}

/// One attempt on one key set: returns as soon as a quorum said yes or can no longer say
/// yes (permits: see [`permits`](super::permits)).
pub(super) async fn attempt_one(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let nodes = engine.nodes();
    let (total, quorum) = (nodes.total(), nodes.quorum());
    // Skipped nodes, and behind ones while passed by (the budget keeps those two within
    // what the quorum can spare, see `backlog`): the request does not go to them at all.
    let unreached = nodes.unreached();
    if unreached > total - quorum {
        // Too many nodes stopped answering: no request can make a quorum.
        return Err(LockError::unavailable(total - unreached, total, quorum));
    }
    let claim = Arc::new(Claim::new(keys.clone()));
    let ttl_ms = validity::millis_ceil(options.ttl);
    // The clock starts before the first request is sent.
    let start = Instant::now();
    let sent: Sent = (0..total).map(|_| SentOn::default()).collect();
    // A writer that will try again leaves its intent for one ttl (see `shared/`).
    let intent_ms = if options.retry.max_attempts() > 1 {
        ttl_ms
    } else {
        0
    };
    let call = Arc::new(acquire_call(
        &claim,
        ttl_ms,
        options.fencing,
        engine.settings.fence_ttl,
        intent_ms,
    ));
    let fanout = Fanout::new(total, nodes.timeout(), |index| {
        acquire_on(engine.clone(), call.clone(), sent.clone(), index)
    });
    let mut pending = Pending {
        nodes: nodes.clone(),
        claim: claim.clone(),
        fanout: Some(fanout),
        sent: sent.clone(),
        yes: Vec::with_capacity(total),
    };
    let (mut tally, mut fence, mut holder_pttl) = (Tally::new(nodes), 0u64, None);
    let mut maybe = Vec::new();
    while let Some((index, reply)) = next(&mut pending.fanout).await {
        match reply {
            Ok(Vote::Yes { fence: f }) => {
                tally.yes();
                pending.yes.push(index);
                fence = fence.max(f);
            }
            Ok(Vote::Held { pttl }) => {
                tally.no();
                if let Some(pttl) = pttl.filter(|&ms| ms > 0) {
                    holder_pttl = holder_pttl.max(Some(pttl.unsigned_abs()));
                }
            }
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "acquire", &error);
                // The SET may have run even though no reply came back.
                maybe.push(index);
            }
        }
        if tally.decided() {
            break;
        }
    }
    let (yes, held) = (tally.yeses(), tally.noes());
    if !tally.won() {
        // Release the partial acquisition before reporting (so that a retry does not find
        // its own leftovers); nodes that failed or have not answered, and any release that
        // did not finish (even if this future is dropped meanwhile), are cleaned up in the
        // background when `pending` drops.
        let partial = pending.yes.len();
        pending.yes.extend_from_slice(&maybe);
        release_now(nodes, &claim, &sent, &pending.yes[..partial]).await;
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
        sync_fence(engine, keys, fence).await?;
        Some(fence)
    } else {
        None
    };
    let Some(validity) = validity::validity(options.ttl, start.elapsed(), options.drift) else {
        return Err(LockError::Expired);
    };
    // Equal to `now + validity`, without the time spent since computing it.
    let valid_until = start + options.ttl.saturating_sub(options.drift);
    let lock = HeldLock::start(
        engine.leases.clone(),
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
        finish_after_success(nodes, fanout, claim, sent, lease);
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
