//! `Redlock::shutdown`: every lease is given back at once, waiters give up, nothing new is
//! taken.

use std::time::Duration;

use tower_redlock::{LockError, LockOptions, Redlock, ReleaseOutcome, RetryPolicy};

use crate::support::*;

/// A ttl no test waits for: a key found free after shutdown was released, not expired.
const LONG_TTL: Duration = Duration::from_secs(60);

async fn engine(cluster: &tower_redlock::testkit::LocalCluster) -> Redlock {
    builder(cluster.urls())
        .ttl(LONG_TTL)
        // Generous: a loaded machine must not turn a release into a timeout.
        .node_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::until(Duration::from_secs(120)))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_another_engine_gets_every_key_at_once() {
    let cluster = cluster(5).await;
    let a = engine(&cluster).await;
    let other = engine(&cluster).await;

    let held = a.acquire("s:held").await.unwrap();
    let clone = held.clone();
    let pair = a.acquire_many(["s:x", "s:y"]).await.unwrap();
    let fenced = a
        .acquire_with("s:fenced", LockOptions::new().fencing(true))
        .await
        .unwrap();
    // A job in another task, watching its lease.
    let job_lock = a.acquire("s:job").await.unwrap();
    let job = tokio::spawn(async move {
        job_lock.ended().await;
        job_lock.is_held()
    });
    // Waiters: one behind a holder of this process, one behind another engine's holder.
    let local_waiter = tokio::spawn({
        let a = a.clone();
        async move { a.acquire("s:held").await.map(drop) }
    });
    let foreign = other.acquire("s:foreign").await.unwrap();
    let remote_waiter = tokio::spawn({
        let a = a.clone();
        async move { a.acquire("s:foreign").await.map(drop) }
    });
    // Dropped just before: its release is still in the background when shutdown starts.
    let dropped = a.acquire("s:dropped").await.unwrap();
    drop(dropped);

    a.shutdown().await;

    // Every clone sees the lease end.
    assert!(!clone.is_held() && clone.is_released());
    tokio::time::timeout(NO_HANG, clone.ended())
        .await
        .expect("ended() resolves on shutdown");
    let still_held = tokio::time::timeout(NO_HANG, job).await.unwrap().unwrap();
    assert!(!still_held);
    assert!(!pair.is_held() && !fenced.is_held());
    // Waiters give up at once (their retry deadline is two minutes), nothing handed on.
    for waiter in [local_waiter, remote_waiter] {
        let result = tokio::time::timeout(NO_HANG, waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result.unwrap_err(), LockError::ShutDown);
    }
    // Nothing new is taken.
    assert_eq!(
        a.try_acquire("s:new").await.unwrap_err(),
        LockError::ShutDown
    );
    let err = a.acquire("s:held").await.unwrap_err();
    assert!(err.is_shut_down(), "{err:?}");
    assert_eq!(held.release().await, Ok(ReleaseOutcome::AlreadyReleased));

    // Another engine gets every key at once: one attempt each, no waiting for the ttl.
    drop(foreign);
    let fresh = builder(cluster.urls()).ttl(LONG_TTL).build().await.unwrap();
    for key in ["s:held", "s:fenced", "s:job", "s:dropped"] {
        let lock = fresh.try_acquire(key).await;
        assert!(lock.is_ok(), "{key}: {lock:?}");
    }
    let both = fresh
        .acquire_many_with(["s:x", "s:y"], LockOptions::new().no_retry())
        .await;
    assert!(both.is_ok(), "{both:?}");
    // A second shutdown is harmless.
    a.shutdown().await;
}

/// Shutdown returns within its bound when the nodes do not answer: what it could not
/// release expires with its ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_nodes_are_down() {
    let cluster = cluster(5).await;
    let a = builder(cluster.urls())
        .ttl(LONG_TTL)
        .node_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let lock = a.acquire("s:frozen").await.unwrap();
    for i in 0..cluster.len() {
        cluster.pause(i).unwrap();
    }
    let start = tokio::time::Instant::now();
    a.shutdown().await;
    let took = start.elapsed();
    for i in 0..cluster.len() {
        cluster.resume(i).unwrap();
    }
    assert!(!lock.is_held() && lock.is_released());
    // Four node timeouts, plus scheduling slack: a bound against hanging.
    assert!(took < NO_HANG, "shutdown took {took:?}");
}

#[tokio::test]
async fn a_shut_down_engine_is_not_live() {
    let cluster = cluster(5).await;
    let a = engine(&cluster).await;
    assert!(a.is_live());
    a.shutdown().await;
    assert!(!a.is_live(), "liveness must report the shutdown");
}
