//! Local hand-off: a lease released while others in this process wait for its key goes
//! straight to the next of them, in one round trip instead of two.
//!
//! A plain hand-over costs a release (one round trip), a wake-up and an acquire (another
//! round trip), with the keys free in between. Instead, the releasing lease runs the release
//! script with a next token ([`RELEASE`](super::scripts::RELEASE)) on every node: where the
//! keys still hold its token, they take a fresh token (from the CSPRNG, like any
//! acquisition) with a fresh expiry. Decided at quorum, that is an
//! acquisition for the next local holder, with validity counted from the start of the call.
//!
//! It is not done when:
//! - fencing is on (every holder needs a new fencing token from the nodes);
//! - a waiter in another process marked the key: the script then releases and announces
//!   instead, so waiters elsewhere get a fair chance at the lock;
//! - the lease was lost or ran out of validity (nothing to hand on).
//!
//! A hand-off that reaches no quorum, or that nobody takes (the waiters gave up), is
//! released in the background, announced.
//!
//! When enough validity is left, the next holder does not even wait for this round trip:
//! see [`carry`](super::carry). This module's swap is the fallback: for a lease marked by a
//! waiter elsewhere, or one close to the end of its validity.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::QueueId;
use crate::redlock::core::validity;
use crate::redlock::lease::release::{hand_on_call, release_everywhere, release_outcome};
use crate::redlock::lease::{
    Claim, HeldLock, LeaseCore, Leases, ReleaseOutcome, Swap, SwapBarrier,
};
use crate::redlock::node::reply::ReleaseReply;
use crate::redlock::node::{Tally, broadcast, warn_node};

/// A lease moved (or, carried over, being moved) to a fresh token for the next local
/// holder, not yet taken.
pub(crate) struct Handoff {
    leases: Arc<Leases>,
    /// `None` once taken.
    claim: Option<Arc<Claim>>,
    ttl: Duration,
    valid_until: Instant,
    /// Carried over (see [`carry`](super::carry)): the swap to `claim`, maybe still under
    /// way; until it is decided, `valid_until` is the ending lease's.
    carried: Option<Arc<SwapBarrier>>,
}

impl Handoff {
    /// A carried-over hand-off of `claim`, on the ending lease's `valid_until`.
    pub(crate) fn carried(
        leases: Arc<Leases>,
        claim: Arc<Claim>,
        ttl: Duration,
        valid_until: Instant,
        carried: Arc<SwapBarrier>,
    ) -> Handoff {
        Handoff {
            leases,
            claim: Some(claim),
            ttl,
            valid_until,
            carried: Some(carried),
        }
    }

    /// The lease for a waiter on the key set `waiter` with `options`; `None` (and the hand-off is
    /// released) when it cannot take it: it is for other keys (a waiter must never run on
    /// a lease for keys it did not ask for, whatever put the hand-off in its way), the
    /// waiter wants fencing or another ttl, the validity ran out meanwhile, or (carried
    /// over) the swap failed.
    pub(crate) fn into_lock(mut self, waiter: QueueId<'_>, options: &Resolved) -> Option<HeldLock> {
        let same_keys = self
            .claim
            .as_ref()
            .is_some_and(|claim| claim.keys.queue_id() == waiter);
        if !same_keys {
            tracing::error!("Redlock hand-off for other keys refused (a local queue bug)");
            return None;
        }
        if options.fencing || options.ttl != self.ttl {
            return None;
        }
        let Some(carried) = self.carried.clone() else {
            let valid_until = self.valid_until;
            return self.start(options, valid_until);
        };
        carried.take_with(|swap| {
            let valid_until = match swap {
                Swap::Pending => self.valid_until,
                Swap::Moved { valid_until, .. } => valid_until,
                Swap::Failed => return None,
            };
            let lock = self.start(options, valid_until)?;
            let core = lock.core().clone();
            Some((lock, core))
        })
    }

    /// Starts the lease on `claim`, unless `valid_until` has passed.
    fn start(&mut self, options: &Resolved, valid_until: Instant) -> Option<HeldLock> {
        let now = Instant::now();
        if now >= valid_until {
            return None;
        }
        let claim = self.claim.take()?;
        Some(HeldLock::start(
            self.leases.clone(),
            claim,
            options,
            None,
            now,
            valid_until,
        ))
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            // No block in `Drop`: the engine's background task does it — after the swap
            // of a carried hand-off, so that on every node the release follows it.
            let release = release_everywhere(self.leases.clone(), claim);
            let carried = self.carried.take();
            self.leases.nodes.janitor.run(async move {
                if let Some(carried) = carried {
                    carried.settled().await;
                }
                release.await;
            });
        }
    }
}

/// Ends `core`'s lease by moving it to a fresh token for the next local holder. Returns how
/// the lease ended (as [`release`](HeldLock::release) would report it) and the hand-off, if
/// a quorum took the new token while there is validity left.
pub(crate) async fn transfer(
    core: &Arc<LeaseCore>,
) -> (Result<ReleaseOutcome, LockError>, Option<Handoff>) {
    let leases = &core.leases;
    let nodes = &leases.nodes;
    let next = Arc::new(Claim::new(core.claim.keys.clone()));
    // The new holder's clock starts before the first request, as for any acquisition.
    let start = Instant::now();
    // Made before any request goes out: if this call is dropped half-way, dropping it
    // releases the new token wherever it landed.
    let mut handoff = Handoff {
        leases: leases.clone(),
        claim: Some(next.clone()),
        ttl: core.ttl,
        valid_until: start,
        carried: None,
    };
    let ttl_ms = validity::millis_ceil(core.ttl);
    let mut fanout = broadcast(nodes, hand_on_call(&core.claim, &next, ttl_ms, false));
    // Yes: moved to the new token; the noes say what the nodes found instead.
    let mut tally = Tally::new(nodes);
    let (mut released, mut expired, mut foreign) = (false, false, false);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ReleaseReply::parse(&v)) {
            Ok(ReleaseReply::HandedOver { .. }) => tally.yes(),
            Ok(found) => {
                tally.no();
                match found {
                    ReleaseReply::Released => released = true,
                    ReleaseReply::Gone => expired = true,
                    _ => foreign = true,
                }
            }
            Err(error) => {
                tally.failed();
                warn_node(nodes, index, "transfer", &error);
            }
        }
        if tally.decided() {
            break;
        }
    }
    let drift = validity::drift(core.ttl, core.drift_factor);
    if tally.won() && validity::validity(core.ttl, start.elapsed(), drift).is_some() {
        fanout.finish_in_background(nodes);
        handoff.valid_until = start + core.ttl.saturating_sub(drift);
        return (Ok(ReleaseOutcome::Released), Some(handoff));
    }
    // No hand-off: once every reply is in (so that a late one cannot set it again), the new
    // token goes from wherever it landed.
    handoff.claim = None;
    let cleanup = release_everywhere(leases.clone(), next);
    let rest = fanout.drain(nodes, |_| {});
    nodes.janitor.run(async move {
        if let Some(rest) = rest {
            rest.await;
        }
        cleanup.await;
    });
    let released = released || tally.yeses() > 0;
    let outcome = release_outcome(released, foreign, expired, &tally);
    (outcome, None)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::redlock::core::keys::LockKeys;
    use crate::testkit::{LocalCluster, eventually};
    use crate::{LockOptions, Redlock};

    /// A hand-off of a lease on `held` (its token set on every node, as after a swap).
    async fn handoff_on(cluster: &LocalCluster, engine: &Redlock, held: &[&str]) -> Handoff {
        let engine = engine.engine.clone();
        let keys = Arc::new(LockKeys::new(&engine.settings.key_prefix, held).unwrap());
        let claim = Arc::new(Claim::new(keys.clone()));
        for i in 0..cluster.len() {
            let mut conn = redis::Client::open(cluster.url(i))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for key in keys.lock_keys() {
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(claim.token.as_bytes())
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        let ttl = engine.settings.ttl;
        Handoff {
            leases: engine.leases.clone(),
            claim: Some(claim),
            ttl,
            valid_until: Instant::now() + ttl / 2,
            carried: None,
        }
    }

    async fn exists(cluster: &LocalCluster, key: &str) -> bool {
        let mut conn = redis::Client::open(cluster.url(0))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::AsyncCommands::exists(&mut conn, key).await.unwrap()
    }

    #[tokio::test]
    async fn a_hand_off_for_other_keys_is_refused_and_released() {
        let cluster = LocalCluster::start(1).await.unwrap();
        let engine = Redlock::builder()
            .nodes(cluster.urls())
            .key_prefix("h:")
            .build()
            .await
            .unwrap();
        let waiter = LockKeys::new("h:", ["order:1", "order:2"]).unwrap();
        let options = engine
            .engine
            .resolve(&LockOptions::new(), &waiter.user)
            .unwrap();

        // A lease on one of the waiter's keys only: not the waiter's lease.
        let other = handoff_on(&cluster, &engine, &["order:1"]).await;
        assert!(other.into_lock(waiter.queue_id(), &options).is_none());
        let released = eventually(std::time::Duration::from_secs(5), || async {
            !exists(&cluster, "h:{order:1}:lock").await
        });
        assert!(released.await, "the refused hand-off was not released");

        // The waiter's own keys: taken.
        let own = handoff_on(&cluster, &engine, &["order:2", "order:1"]).await;
        let lock = own
            .into_lock(waiter.queue_id(), &options)
            .expect("a hand-off on the waiter's keys is taken");
        assert_eq!(lock.keys(), ["order:1", "order:2"]);
        lock.release().await.unwrap();
        assert!(!exists(&cluster, "h:{order:1}:lock").await);
    }
}
