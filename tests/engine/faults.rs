//! Losing the quorum while holding: `lost()` fires before the nodes' keys expire.

use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{LockOptions, RetryPolicy};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_paused_while_held_fires_lost_before_validity_ends() {
    let cluster = cluster().await;
    let redlock = builder(&cluster)
        .node_timeout(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    let start = Instant::now();
    let lock = redlock
        .acquire_with("fragile", LockOptions::new().ttl(ttl))
        .await
        .unwrap();
    // The nodes' keys expire no earlier than `start + ttl` (+ whatever extensions add).
    pause(&cluster, 0..3);
    let paused_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("lost() must fire");
    let fired = Instant::now();
    resume(&cluster, 0..3);
    assert!(!lock.is_held());
    // Extensions could not land after the pause, so the server-side keys expire no earlier
    // than paused_at + ttl − (ttl/3 since the last extend at most); lost fires before that.
    // (Generous slack for a loaded test machine's timers.)
    let last_possible_extend = paused_at.max(start);
    assert!(
        fired <= last_possible_extend + ttl + Duration::from_millis(150),
        "lost fired {:?} after the pause",
        fired - paused_at
    );
    assert!(lock.remaining().is_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_bounds_a_runaway_holder() {
    let cluster = cluster().await;
    let redlock = redlock(&cluster).await;
    let start = Instant::now();
    let lock = redlock
        .acquire_with(
            "runaway",
            LockOptions::new()
                .ttl(Duration::from_millis(300))
                .max_hold(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("lost after max_hold");
    assert!(start.elapsed() >= Duration::from_millis(500));
    // Someone else gets it without the holder releasing.
    let rival = redlock
        .acquire_with(
            "runaway",
            LockOptions::new().retry(RetryPolicy::until(Duration::from_secs(2))),
        )
        .await
        .unwrap();
    rival.release().await.unwrap();
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sleep_after_the_last_attempt() {
    let cluster = cluster().await;
    let redlock = redlock(&cluster).await;
    let holder = redlock.try_acquire("busy").await.unwrap();
    let policy = RetryPolicy::default()
        .attempts(2)
        .base_delay(Duration::from_millis(800))
        .max_delay(Duration::from_millis(800))
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
    // One 800 ms sleep between the two attempts, none after the last.
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    holder.release().await.unwrap();
}
