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

use super::acquire::{finish_in_background, warn_node};
use super::carry::{Carried, Swap};
use super::client::Shared;
use super::error::LockError;
use super::keys::QueueId;
use super::lease::{Claim, HeldLock, LeaseCore, ReleaseOutcome};
use super::node::reply::ReleaseReply;
use super::options::Resolved;
use super::release::{hand_on_call, release_call, release_outcome};
use super::validity;

/// A lease moved (or, carried over, being moved) to a fresh token for the next local
/// holder, not yet taken.
pub(crate) struct Handoff {
    shared: Arc<Shared>,
    /// `None` once taken.
    claim: Option<Arc<Claim>>,
    ttl: Duration,
    valid_until: Instant,
    /// Carried over (see [`carry`](super::carry)): the swap to `claim`, maybe still under
    /// way; until it is decided, `valid_until` is the ending lease's.
    carried: Option<Arc<Carried>>,
}

impl Handoff {
    /// A carried-over hand-off of `claim`, on the ending lease's `valid_until`.
    pub(crate) fn carried(
        shared: Arc<Shared>,
        claim: Arc<Claim>,
        ttl: Duration,
        valid_until: Instant,
        carried: Arc<Carried>,
    ) -> Handoff {
        Handoff {
            shared,
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
            self.start(options, valid_until)
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
            self.shared.clone(),
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
            let release = release_everywhere(self.shared.clone(), claim);
            let carried = self.carried.take();
            self.shared.janitor.run(async move {
                if let Some(carried) = carried {
                    carried.settled().await;
                }
                release.await;
            });
        }
    }
}

/// Deletes `claim`'s token wherever it is, announced.
pub(crate) async fn release_everywhere(shared: Arc<Shared>, claim: Arc<Claim>) {
    let rest = shared
        .broadcast(release_call(&claim, true))
        .drain(&shared, |_| {});
    if let Some(rest) = rest {
        rest.await;
    }
}

/// Ends `core`'s lease by moving it to a fresh token for the next local holder. Returns how
/// the lease ended (as [`release`](HeldLock::release) would report it) and the hand-off, if
/// a quorum took the new token while there is validity left.
pub(crate) async fn transfer(
    core: &Arc<LeaseCore>,
) -> (Result<ReleaseOutcome, LockError>, Option<Handoff>) {
    let shared = &core.shared;
    let (total, quorum) = (shared.total(), shared.quorum);
    let next = Arc::new(Claim::new(core.claim.keys.clone()));
    // The new holder's clock starts before the first request, as for any acquisition.
    let start = Instant::now();
    // Made before any request goes out: if this call is dropped half-way, dropping it
    // releases the new token wherever it landed.
    let mut handoff = Handoff {
        shared: shared.clone(),
        claim: Some(next.clone()),
        ttl: core.ttl,
        valid_until: start,
        carried: None,
    };
    let mut fanout = shared.broadcast(hand_on_call(
        &core.claim,
        &next,
        validity::millis_ceil(core.ttl),
        false,
    ));
    let (mut moved, mut released, mut expired, mut foreign, mut failed) = (0, 0, 0, 0, 0);
    while let Some((index, reply)) = fanout.next().await {
        match reply.and_then(|v| ReleaseReply::parse(&v)) {
            Ok(ReleaseReply::HandedOver { .. }) => moved += 1,
            Ok(ReleaseReply::Released) => released += 1,
            Ok(ReleaseReply::Gone) => expired += 1,
            Ok(ReleaseReply::NotOwner) => foreign += 1,
            Err(error) => {
                failed += 1;
                warn_node(shared, index, "transfer", &error);
            }
        }
        if moved >= quorum || released + expired + foreign + failed > total - quorum {
            break;
        }
    }
    let drift = validity::drift(core.ttl, core.drift_factor);
    if moved >= quorum && validity::validity(core.ttl, start.elapsed(), drift).is_some() {
        finish_in_background(shared, fanout);
        handoff.valid_until = start + core.ttl.saturating_sub(drift);
        return (Ok(ReleaseOutcome::Released), Some(handoff));
    }
    // No hand-off: once every reply is in (so that a late one cannot set it again), the new
    // token goes from wherever it landed.
    handoff.claim = None;
    let cleanup = release_everywhere(shared.clone(), next);
    let rest = fanout.drain(shared, |_| {});
    shared.janitor.run(async move {
        if let Some(rest) = rest {
            rest.await;
        }
        cleanup.await;
    });
    let outcome = release_outcome(moved + released, foreign, expired, failed, total, quorum);
    (outcome, None)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::redlock::keys::LockKeys;
    use crate::testkit::{LocalCluster, eventually};
    use crate::{LockOptions, Redlock};

    /// A hand-off of a lease on `held` (its token set on every node, as after a swap).
    async fn handoff_on(cluster: &LocalCluster, engine: &Redlock, held: &[&str]) -> Handoff {
        let shared = engine.shared.clone();
        let keys = Arc::new(LockKeys::new(&shared.config.key_prefix, held).unwrap());
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
        let ttl = shared.config.ttl;
        Handoff {
            shared,
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
            .shared
            .resolve(&LockOptions::new(), &waiter.user)
            .unwrap();

        // A lease on one of the waiter's keys only: not the waiter's lease.
        let other = handoff_on(&cluster, &engine, &["order:1"]).await;
        assert!(other.into_lock(waiter.queue_id(), &options).is_none());
        let released = eventually(std::time::Duration::from_secs(5), || async {
            !exists(&cluster, "h:lock:order:1").await
        });
        assert!(released.await, "the refused hand-off was not released");

        // The waiter's own keys: taken.
        let own = handoff_on(&cluster, &engine, &["order:2", "order:1"]).await;
        let lock = own
            .into_lock(waiter.queue_id(), &options)
            .expect("a hand-off on the waiter's keys is taken");
        assert_eq!(lock.keys(), ["order:1", "order:2"]);
        lock.release().await.unwrap();
        assert!(!exists(&cluster, "h:lock:order:1").await);
    }
}
