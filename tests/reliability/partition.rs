//! Partitions (the proxies of a majority blackholed): `Unavailable` / `503` without hanging,
//! recovery after healing, and a lease lost while held.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{LockError, LockOptions, Redlock};

use crate::support::app::{self, Probe};
use crate::support::*;

const NODE_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on a loaded 2-core machine: only a "no hang" bound.
const SLACK: Duration = Duration::from_secs(1);

/// An engine on `env` with the partition tests' node timeout, connected to every node
/// (by `build`) before the partition, as in a running service.
async fn connected_engine(env: &Proxied) -> Redlock {
    let redlock = builder(env.urls())
        .node_timeout(NODE_TIMEOUT)
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

    // One attempt: decided when the third node times out.
    let start = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), redlock.try_acquire("cut-off"))
        .await
        .expect("try_acquire must not hang")
        .unwrap_err();
    let took = start.elapsed();
    assert_unavailable(&err);
    assert!(took < NODE_TIMEOUT + SLACK, "one attempt took {took:?}");

    // With retries: gives up at the retry deadline (+ one node timeout).
    let deadline = Duration::from_millis(600);
    let start = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        redlock.acquire_with("cut-off", LockOptions::new().retry(retry_for(deadline))),
    )
    .await
    .expect("acquire must not hang")
    .unwrap_err();
    let took = start.elapsed();
    assert_unavailable(&err);
    assert!(
        took < deadline + NODE_TIMEOUT + SLACK,
        "retries took {took:?}"
    );

    // The two reachable nodes said yes each time and were cleaned up.
    assert!(
        eventually(Duration::from_secs(3), || async {
            holders(&env.cluster, "cut-off").await == 0
        })
        .await,
        "a failed acquisition left its key on the reachable nodes"
    );

    // Through the layer: 503 with Retry-After, the handler never runs, no key in the body.
    let probe = Arc::new(Probe::default());
    let router = app::router(redlock.clone(), Duration::from_secs(2), probe.clone());
    let start = Instant::now();
    let (response, body) = app::send(router, app::post("/orders/partitioned-order-42")).await;
    assert_eq!(response.status(), app::SERVICE_UNAVAILABLE, "{body}");
    let retry_after = app::retry_after(&response).expect("Retry-After on 503");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert!(body.contains("lock-unavailable"), "{body}");
    assert!(!body.contains("partitioned-order-42"), "{body}");
    assert!(!probe.ran.load(Ordering::SeqCst));
    assert!(start.elapsed() < NODE_TIMEOUT + SLACK);
}

/// Tries once every 10 ms until a lock is acquired, at most 1 s (and 100 attempts) after
/// `healed`; every failure must be `Unavailable`.
async fn acquire_within_a_second_of(redlock: &Redlock, healed: Instant) {
    let deadline = healed + Duration::from_secs(1);
    let mut attempts = 0;
    let lock = loop {
        attempts += 1;
        match redlock.try_acquire("heal").await {
            Ok(lock) => break lock,
            Err(e) if Instant::now() < deadline && attempts < 100 => {
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
    acquire_within_a_second_of(&redlock, Instant::now()).await;
}

/// Requests sent into a partition leave their connections dead (the data is lost, the
/// socket half-open). After a call times out the engine probes the connection with `PING`
/// and replaces it when that goes unanswered, so the node is usable again soon after the
/// partition heals rather than when the OS gives up on the socket (~15 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partition_acquires_again_within_a_second() {
    let env = Proxied::start(5).await;
    let redlock = connected_engine(&env).await;
    env.blackhole([0, 1, 2]);
    // Requests are sent into the partition: those connections are dead for good.
    let err = redlock.try_acquire("heal").await.unwrap_err();
    assert_unavailable(&err);
    env.heal_all();
    acquire_within_a_second_of(&redlock, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_partition_while_held_fires_lost_before_validity_ends() {
    let env = Proxied::start(5).await;
    let ttl = Duration::from_millis(900);
    // A large drift allowance (0.3·ttl + 2 ms = 272 ms) separates the local validity from
    // the nodes' expiry clearly, so the check below is not a race.
    let redlock = builder(env.urls())
        .ttl(ttl)
        .drift_factor(0.3)
        .node_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let lock = redlock.try_acquire("held").await.unwrap();
    let first_validity = lock.valid_until();
    // The watchdog extends (every ttl/3): wait until it has, at most 3 s.
    assert!(
        eventually(Duration::from_secs(3), || async {
            lock.valid_until() > first_validity
        })
        .await,
        "the lease was never extended"
    );

    env.blackhole([0, 1, 2]);
    let partitioned = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("lost() must fire");
    let fired = Instant::now();
    assert!(!lock.is_held());
    assert!(lock.remaining().is_zero());
    // Every extension since the partition failed, so the last validity bound stands, and
    // lost() fired no later than it (plus timer slack, less than the drift allowance).
    assert!(
        fired <= lock.valid_until() + Duration::from_millis(250),
        "lost() fired {:?} after the validity ended",
        fired - lock.valid_until()
    );
    // The partitioned nodes (asked directly) still hold our lock: nobody else could have
    // taken the key yet when we were told it was lost.
    for i in 0..3 {
        assert!(
            lock_value(&env.cluster, i, "held").await.is_some(),
            "node {i} expired the lock before lost() fired ({:?} after the partition)",
            fired - partitioned
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_cancels_the_handler_when_the_lease_is_lost() {
    let env = Proxied::start(5).await;
    let redlock = builder(env.urls())
        .node_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    let router = app::router(redlock, Duration::from_millis(900), probe.clone());
    let request = tokio::spawn(app::send(router, app::post("/orders/7")));
    tokio::time::timeout(Duration::from_secs(5), probe.started.notified())
        .await
        .expect("the handler starts under the lock");

    env.blackhole([0, 1, 2]);
    let (response, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the response comes once the lease is lost")
        .unwrap();
    assert_eq!(response.status(), app::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("lock-lost"), "{body}");
    // The handler's future was dropped, not run to completion.
    assert!(probe.dropped.load(Ordering::SeqCst), "handler not dropped");
    assert!(!probe.completed.load(Ordering::SeqCst), "handler completed");
}
