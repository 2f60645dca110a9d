//! Extension: compare-only, counted from the call, never resurrects, never deletes.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::time::Instant;
use tower_redlock::{LockError, LockOptions};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_extension_keeps_the_lease_over_three_ttls() {
    let cluster = cluster(5).await;
    let holder = redlock(&cluster).await;
    let rival = redlock(&cluster).await;
    let ttl = Duration::from_secs(3);
    let lock = holder
        .acquire_with("long", LockOptions::new().ttl(ttl))
        .await
        .unwrap();
    let first_end = lock.valid_until();
    let end = Instant::now() + ttl * 3;
    let mut probes = 0;
    // Bounded by count as well; each probe is a round trip and a 25 ms sleep.
    while Instant::now() < end && probes < 10_000 {
        let err = rival.try_acquire("long").await.unwrap_err();
        assert!(err.is_contended(), "{err:?}");
        assert!(lock.is_held());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(probes >= 3, "{probes} probes");
    // Still held three ttls on: extensions moved the validity past the first two ends.
    assert!(lock.is_held());
    assert!(
        lock.valid_until() > first_end + 2 * ttl,
        "{:?}",
        lock.valid_until() - first_end
    );
    lock.release().await.unwrap();
    rival
        .try_acquire("long")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_never_resurrects_an_expired_lock() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let lock = redlock
        .acquire_with("gone", LockOptions::new().ttl(SHORT_TTL).auto_extend(false))
        .await
        .unwrap();
    assert!(released_everywhere(&cluster, "gone").await);
    assert_eq!(
        lock.extend(Duration::from_secs(10)).await,
        Err(LockError::Lost)
    );
    assert_eq!(
        holders(&cluster, "gone").await,
        0,
        "extend re-created the key"
    );
    assert!(!lock.is_held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_extend_is_lost_and_deletes_nothing() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let lock = redlock
        .acquire_with("stolen", LockOptions::new().auto_extend(false))
        .await
        .unwrap();
    let key = lock_key("stolen");
    // Someone overwrites the key on 3 nodes (e.g. after those nodes lost their data).
    for i in 0..3 {
        let _: () = raw(&cluster, i).await.set(&key, "intruder").await.unwrap();
    }
    assert_eq!(
        lock.extend(Duration::from_secs(10)).await,
        Err(LockError::Lost)
    );
    assert!(!lock.is_held());
    for i in 0..3 {
        assert_eq!(
            lock_value(&cluster, i, "stolen").await.as_deref(),
            Some("intruder")
        );
    }
    // Our own keys on the other nodes were not deleted by the failed extend.
    for i in 3..5 {
        assert!(lock_value(&cluster, i, "stolen").await.is_some());
    }
    let mut conn = raw(&cluster, 0).await;
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert_eq!(ttl, -1, "the intruder's key got an expiry from our extend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_extend_keeps_the_lease_until_its_validity_ends() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let lock = redlock
        .acquire_with("flaky", LockOptions::new().auto_extend(false))
        .await
        .unwrap();
    let before = lock.valid_until();
    pause(&cluster, 0..3);
    let err = lock.extend(Duration::from_secs(10)).await.unwrap_err();
    resume(&cluster, 0..3);
    assert!(err.is_unavailable(), "{err:?}");
    // Not lost: the old validity still stands, and nothing was deleted.
    assert!(lock.is_held());
    assert_eq!(lock.valid_until(), before);
    assert_eq!(holders(&cluster, "flaky").await, 5);
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_validity_counts_from_the_start_of_the_call() {
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls())
        .drift_factor(0.0)
        .build()
        .await
        .unwrap();
    let lock = redlock.acquire("from-start").await.unwrap();
    let call = Instant::now();
    lock.extend(Duration::from_millis(3000)).await.unwrap();
    let after = Instant::now();
    let until = lock.valid_until();
    // ttl − 2 ms drift floor, counted from the call start (not from when it returned).
    assert!(until <= call + Duration::from_millis(2998) + Duration::from_millis(1));
    assert!(until + (after - call) >= call + Duration::from_millis(2998));
    lock.release().await.unwrap();
}
