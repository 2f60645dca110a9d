//! Slow nodes: a slow minority does not stop acquisition, and the time spent acquiring is
//! taken off the validity — measured from before the first request was sent.

use std::time::Duration;

use tokio::time::Instant;

use crate::single_shot;
use crate::support::*;

const LATENCY: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_minority_still_acquires_and_validity_is_reduced() {
    let env = Proxied::start(5).await;
    // Each direction is delayed: a request/reply round trip to these nodes is ≥ 100 ms.
    env.proxies[0].set_latency(LATENCY);
    env.proxies[1].set_latency(LATENCY);
    let ttl = Duration::from_secs(2);
    let drift = default_drift(ttl);
    let redlock = single_shot(env.urls())
        .ttl(ttl)
        .drift_factor(0.01)
        .build()
        .await
        .unwrap();
    // The first round also connects (through the slow proxies too); later rounds reuse.
    for round in 0..3 {
        let key = format!("slow-minority-{round}");
        let before = Instant::now();
        let lock = redlock.try_acquire(&key).await.unwrap();
        let after = Instant::now();
        let took = after - before;
        // The engine starts its clock at some moment `start` of the call, before its first
        // request (`before ≤ start ≤ after`): valid_until = start + ttl − drift. So the
        // validity ends no later than `after + ttl − drift` (1 ms for float rounding in the
        // drift), whatever the scheduler did between `before` and `start` (a loaded machine
        // can put milliseconds there: a tighter bound from `before` was a flaky test).
        assert!(
            lock.valid_until() <= after + ttl - drift + Duration::from_millis(1),
            "round {round}: validity beyond the call's end + ttl − drift (took {took:?})"
        );
        assert!(lock.remaining() <= ttl - drift, "round {round}");
        // ... and counted from no earlier than the call (1 ms for float rounding).
        assert!(
            lock.valid_until() + Duration::from_millis(1) >= before + ttl - drift,
            "round {round}: validity shorter than ttl − drift from the call"
        );
        assert!(lock.is_held());
        // The slow nodes got the request too (the key lands there a little later).
        assert!(
            eventually(NO_HANG, || async { holders(&env.cluster, &key).await == 5 }).await,
            "round {round}: the slow nodes never received the lock"
        );
        lock.release().await.unwrap();
        assert!(
            eventually(NO_HANG, || async { holders(&env.cluster, &key).await == 0 }).await,
            "round {round}: release did not reach every node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_counts_from_before_the_first_request() {
    let env = Proxied::start(5).await;
    let ttl = Duration::from_secs(2);
    let drift = default_drift(ttl);
    let redlock = single_shot(env.urls())
        .ttl(ttl)
        .drift_factor(0.01)
        .build()
        .await
        .unwrap();
    // Connected (by `build`) before the latency, so the measured attempt is one round trip.
    assert_eq!(redlock.health().await.reachable, 5);
    for proxy in &env.proxies {
        proxy.set_latency(LATENCY);
    }
    for round in 0..3 {
        let key = format!("all-slow-{round}");
        let before = Instant::now();
        let lock = redlock.try_acquire(&key).await.unwrap();
        let after = Instant::now();
        let valid_until = lock.valid_until();
        let remaining = lock.remaining();
        // Every reply took at least one delayed request and one delayed reply.
        assert!(
            after - before >= 2 * LATENCY,
            "round {round}: acquired in {:?}",
            after - before
        );
        // Counting from the replies would give ≈ after + ttl − drift.
        assert!(
            remaining <= ttl - 2 * LATENCY - drift + Duration::from_millis(1),
            "round {round}: remaining {remaining:?} > ttl − 2×latency − drift = {:?}",
            ttl - 2 * LATENCY - drift
        );
        assert!(
            valid_until + 2 * LATENCY <= after + ttl - drift + Duration::from_millis(1),
            "round {round}: validity ends {:?} after the call returned",
            valid_until - after
        );
        // ... and the clock started no earlier than the call (1 ms for float rounding).
        assert!(
            valid_until + Duration::from_millis(1) >= before + ttl - drift,
            "round {round}: validity shorter than ttl − drift from the call"
        );
        lock.release().await.unwrap();
    }
}
