//! Permits: at most `n` holders of a key; a freed permit wakes a waiter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{LockError, LockOptions, MAX_PERMITS, RetryPolicy};

use crate::support::*;

fn once() -> LockOptions {
    LockOptions::new().no_retry()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_holders_then_contended() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            redlock
                .acquire_permit_with("export", 3, once())
                .await
                .unwrap(),
        );
    }
    let err = redlock
        .acquire_permit_with("export", 3, once())
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Contended { .. }), "{err}");
    // Permits are their own namespace: the exclusive lease on the key is free.
    let _x = redlock.acquire_with("export", once()).await.unwrap();
    held.pop().unwrap().release().await.unwrap();
    held.push(
        redlock
            .acquire_permit_with("export", 3, once())
            .await
            .unwrap(),
    );
    assert!(
        redlock
            .acquire_permit_with("export", 3, once())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_permit_counts_and_fencing_are_refused() {
    let cluster = cluster(1).await;
    let redlock = redlock(&cluster).await;
    for n in [0, MAX_PERMITS + 1] {
        let err = redlock.acquire_permit("p", n).await.unwrap_err();
        assert!(
            matches!(err, LockError::InvalidOptions { .. }),
            "{n}: {err}"
        );
    }
    let _p = redlock
        .acquire_permit_with("p", MAX_PERMITS, once())
        .await
        .unwrap();
    let err = redlock
        .acquire_permit_with("p", 2, LockOptions::new().fencing(true))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidOptions { .. }), "{err}");
}

/// A waiter whose retry pauses are 20 s gets a permit soon after one is freed: the release
/// woke it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_permit_wakes_a_waiter() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let a = redlock.acquire_permit("wake", 2).await.unwrap();
    let _b = redlock.acquire_permit("wake", 2).await.unwrap();
    let slow = RetryPolicy::until(Duration::from_secs(60))
        .base_delay(Duration::from_secs(20))
        .max_delay(Duration::from_secs(20));
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .acquire_permit_with("wake", 2, LockOptions::new().retry(slow))
                .await
        }
    });
    // It tried, was refused, subscribed and marked the permits it found held.
    let (lock, channel) = (
        redis_name("wake", "permit0:lock"),
        redis_name("wake", "permits:released"),
    );
    assert!(eventually(NO_HANG, || awaited(&cluster, &lock, &channel)).await);
    assert!(!waiter.is_finished());
    let freed = Instant::now();
    a.release().await.unwrap();
    let lock = within("the waiter", waiter).await.unwrap().unwrap();
    let took = freed.elapsed();
    assert!(took < Duration::from_secs(10), "woken after {took:?}");
    assert!(lock.is_held());
}

/// Twelve tasks on 3 permits: never more than 3 inside, and all 3 used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_inside() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let (inside, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (redlock, inside, most) = (redlock.clone(), inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let lock = redlock.acquire_permit("pool", 3).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        within("a permit holder", task).await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
}
