//! Losing the quorum while holding: `lost()` fires before the nodes' keys expire.

use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{LockOptions, RetryPolicy};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_paused_while_held_fires_lost_before_validity_ends() {
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls())
        .node_timeout(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    let lock = redlock
        .acquire_with("fragile", LockOptions::new().ttl(ttl))
        .await
        .unwrap();
    // The validity promised before the pause. The nodes' keys (of the acquisition or of
    // any extension that reached a quorum) expire a drift allowance after the validity
    // that operation gave.
    let promised = lock.valid_until();
    pause(&cluster, 0..3);
    let paused_at = Instant::now();
    tokio::time::timeout(NO_HANG, lock.lost())
        .await
        .expect("lost() must fire");
    resume(&cluster, 0..3);
    assert!(!lock.is_held());
    assert!(lock.remaining().is_zero());
    // Ordering, not speed: the validity that `lost` ended is the one promised before the
    // pause, or one from an extension sent before the pause (which may have been under
    // way); no extension sent after the pause counted.
    let ended = lock.valid_until();
    assert!(promised <= ended, "the validity went backwards");
    assert!(
        ended < paused_at + ttl,
        "an extension sent after the pause counted: validity ended {:?} after the pause",
        ended - paused_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_bounds_a_runaway_holder() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let start = Instant::now();
    let lock = redlock
        .acquire_with(
            "runaway",
            LockOptions::new()
                .ttl(Duration::from_secs(2))
                .max_hold(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    tokio::time::timeout(NO_HANG, lock.lost())
        .await
        .expect("lost after max_hold");
    // Extended past its first ttl, and lost once the max hold is over.
    assert!(start.elapsed() >= Duration::from_secs(3));
    // Someone else gets it without the holder releasing.
    let rival = redlock
        .acquire_with(
            "runaway",
            LockOptions::new().retry(RetryPolicy::until(NO_HANG)),
        )
        .await
        .unwrap();
    rival.release().await.unwrap();
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sleep_after_the_last_attempt() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let holder = redlock.try_acquire("busy").await.unwrap();
    // One sleep is long: a second one (after the last attempt) could not hide in the
    // time the attempts themselves take, however loaded the machine.
    let sleep = Duration::from_secs(5);
    let policy = RetryPolicy::default()
        .attempts(2)
        .base_delay(sleep)
        .max_delay(sleep)
        .jitter(0.0)
        .no_deadline();
    // The holder's remaining time would shorten the wait; hold it for long.
    holder.extend(Duration::from_secs(60)).await.unwrap();
    let start = Instant::now();
    let err = redlock
        .acquire_with("busy", LockOptions::new().retry(policy))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(err.is_contended());
    // One sleep between the two attempts, none after the last.
    assert!(took >= sleep, "{took:?}");
    assert!(took < 2 * sleep, "{took:?}");
    holder.release().await.unwrap();
}
