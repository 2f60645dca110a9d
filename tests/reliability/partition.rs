//! Partitions (the proxies of a majority blackholed): `Unavailable` / `503` without hanging,
//! recovery after healing, and a lease lost while held.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{LockError, LockOptions, Redlock};

use crate::app::{self, Probe};
use crate::single_shot;
use crate::support::*;

/// Generous: the reachable minority must answer in time (the tests count its votes), also
/// on a loaded machine; the partitioned nodes cost one such timeout per attempt.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(1);

/// An engine on `env` with the partition tests' node timeout, connected to every node
/// (by `build`) before the partition, as in a running service.
async fn connected_engine(env: &Proxied) -> Redlock {
    let redlock = single_shot(env.urls())
        .node_timeout(PARTITION_TIMEOUT)
        .build()
        .await
        .unwrap();
    assert_eq!(redlock.health().await.reachable, 5);
    redlock
}

fn assert_unavailable(err: &LockError) {
    match err {
        LockError::Unavailable {
            reachable,
            total,
            required,
            circuit_open,
            ..
        } => {
            assert_eq!(
                (*reachable, *total, *required, *circuit_open),
                (2, 5, 3, false),
                "{err}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_majority_is_unavailable_without_hanging() {
    let env = Proxied::start(5).await;
    let redlock = connected_engine(&env).await;
    env.blackhole([0, 1, 2]);

    // One attempt: decided when the third node times out (not before: a lower bound),
    // and it ends (the no-hang bound).
    let start = Instant::now();
    let err = tokio::time::timeout(NO_HANG, redlock.try_acquire("cut-off"))
        .await
        .expect("try_acquire must not hang")
        .unwrap_err();
    let took = start.elapsed();
    assert_unavailable(&err);
    assert!(took >= PARTITION_TIMEOUT, "one attempt took {took:?}");

    // With retries: gives up at the retry deadline (a policy that ignored it would retry
    // on and on, past the no-hang bound).
    let deadline = Duration::from_millis(600);
    let err = tokio::time::timeout(
        NO_HANG,
        redlock.acquire_with("cut-off", LockOptions::new().retry(retry_for(deadline))),
    )
    .await
    .expect("acquire must not hang")
    .unwrap_err();
    assert_unavailable(&err);

    // The two reachable nodes said yes each time and were cleaned up.
    assert!(
        eventually(NO_HANG, || async {
            holders(&env.cluster, "cut-off").await == 0
        })
        .await,
        "a failed acquisition left its key on the reachable nodes"
    );

    // Through the layer: 503 with Retry-After, the handler never runs, no key in the body.
    let probe = Arc::new(Probe::default());
    let router = app::router(redlock.clone(), Duration::from_secs(2), probe.clone());
    let (response, body) = tokio::time::timeout(
        NO_HANG,
        app::send(router, app::post("/orders/partitioned-order-42")),
    )
    .await
    .expect("the layer must not hang");
    assert_eq!(response.status(), app::SERVICE_UNAVAILABLE, "{body}");
    let retry_after = app::retry_after(&response).expect("Retry-After on 503");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert!(body.contains("lock-unavailable"), "{body}");
    assert!(!body.contains("partitioned-order-42"), "{body}");
    assert!(!probe.ran.load(Ordering::SeqCst));
}

/// Tries once every 10 ms until a lock is acquired, giving up [`NO_HANG`] (or 3000
/// attempts) after `healed` — far sooner than the OS gives up on a dead socket (~15 min);
/// every failure must be `Unavailable`.
async fn acquire_soon_after(redlock: &Redlock, healed: Instant) {
    let deadline = healed + NO_HANG;
    let mut attempts = 0;
    let lock = loop {
        attempts += 1;
        match redlock.try_acquire("heal").await {
            Ok(lock) => break lock,
            Err(e) if Instant::now() < deadline && attempts < 3000 => {
                assert!(e.is_unavailable(), "{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!(
                "no lock {:?} after healing ({attempts} attempts): {e}",
                healed.elapsed()
            ),
        }
    };
    assert!(lock.is_held());
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partition_without_traffic_acquires_at_once() {
    let env = Proxied::start(5).await;
    let redlock = connected_engine(&env).await;
    // Nothing is sent while partitioned: the idle connections survive the partition.
    env.blackhole([0, 1, 2]);
    env.heal_all();
    acquire_soon_after(&redlock, Instant::now()).await;
}

/// Requests sent into a partition leave their connections dead (the data is lost, the
/// socket half-open). After a call times out the engine probes the connection with `PING`
/// and replaces it when that goes unanswered, so the node is usable again soon after the
/// partition heals rather than when the OS gives up on the socket (~15 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partition_acquires_again_soon() {
    let env = Proxied::start(5).await;
    let redlock = connected_engine(&env).await;
    env.blackhole([0, 1, 2]);
    // Requests are sent into the partition: those connections are dead for good.
    let err = redlock.try_acquire("heal").await.unwrap_err();
    assert_unavailable(&err);
    env.heal_all();
    acquire_soon_after(&redlock, Instant::now()).await;
}

/// Per node (asked directly, not through its proxy): the earliest it lets lock key `key`
/// go, from its `PTTL`; `None` when it does not hold the key.
async fn earliest_expiries(env: &Proxied, key: &str) -> Vec<Option<Instant>> {
    let mut expiries = Vec::new();
    for i in 0..env.cluster.len() {
        let asked = Instant::now();
        let mut conn = raw(&env.cluster, i).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(lock_key(key))
            .query_async(&mut conn)
            .await
            .unwrap();
        expiries.push(
            u64::try_from(pttl)
                .ok()
                .map(|ms| asked + Duration::from_millis(ms)),
        );
    }
    expiries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_partition_while_held_fires_lost_before_validity_ends() {
    let env = Proxied::start(5).await;
    // Long enough for a node timeout that a loaded machine does not miss.
    let ttl = Duration::from_secs(3);
    // A large drift allowance (0.3·ttl + 2 ms = 902 ms) separates the local validity from
    // the nodes' expiry clearly, so the check below is not a race.
    let redlock = single_shot(env.urls())
        .ttl(ttl)
        .drift_factor(0.3)
        .node_timeout(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let lock = redlock.try_acquire("held").await.unwrap();
    let first_validity = lock.valid_until();
    // The watchdog extends (every ttl/3): wait until it has.
    assert!(
        eventually(NO_HANG, || async { lock.valid_until() > first_validity }).await,
        "the lease was never extended"
    );

    env.blackhole([0, 1, 2]);
    // When each node lets the key go at the earliest, read right after the partition
    // (nothing can extend the lease on a quorum any more), and again once `lost()` fired
    // (in case an extension sent before the partition landed on a node after the first
    // read).
    let mut expiries = earliest_expiries(&env, "held").await;
    tokio::time::timeout(NO_HANG, lock.lost())
        .await
        .expect("lost() must fire");
    for (first, again) in expiries
        .iter_mut()
        .zip(earliest_expiries(&env, "held").await)
    {
        *first = (*first).max(again);
    }
    assert!(!lock.is_held());
    assert!(lock.remaining().is_zero());
    // Ordering, not speed: the validity the holder relied on (what `is_held()` and
    // `remaining()` go by, and when `lost()` is due) ended before a quorum of nodes could
    // let the key go, so nobody else could take it while we thought we held it.
    let ended = lock.valid_until();
    let outlasting = expiries.iter().flatten().filter(|&&e| e >= ended).count();
    assert!(
        outlasting >= 3,
        "only {outlasting} nodes keep the key until the validity ends: {:?}",
        expiries
            .iter()
            .map(|e| e.map(|e| e.checked_duration_since(ended)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_cancels_the_handler_when_the_lease_is_lost() {
    let env = Proxied::start(5).await;
    // The handler must get the lock (a generous node timeout), and the lease must be lost
    // soon after the partition (a ttl of a few node timeouts).
    let redlock = single_shot(env.urls())
        .node_timeout(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    let router = app::router(redlock, Duration::from_secs(3), probe.clone());
    let request = tokio::spawn(app::send(router, app::post("/orders/7")));
    tokio::time::timeout(NO_HANG, probe.started.notified())
        .await
        .expect("the handler starts under the lock");

    env.blackhole([0, 1, 2]);
    let (response, body) = tokio::time::timeout(NO_HANG, request)
        .await
        .expect("the response comes once the lease is lost")
        .unwrap();
    assert_eq!(response.status(), app::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("lock-lost"), "{body}");
    // The handler's future was dropped, not run to completion.
    assert!(probe.dropped.is_set(), "handler not dropped");
    assert!(!probe.completed.load(Ordering::SeqCst), "handler completed");
}
