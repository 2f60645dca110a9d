//! Mutual exclusion under heavy contention: a non-atomic counter must come out exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

const CLIENTS: usize = 4;
const TASKS_PER_CLIENT: usize = 8;
const CYCLES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_never_overlap() {
    let cluster = cluster().await;
    let counter = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        // Separate engines stand in for separate service instances.
        let redlock = redlock(&cluster).await;
        for _ in 0..TASKS_PER_CLIENT {
            let (redlock, counter, inside, overlaps) = (
                redlock.clone(),
                counter.clone(),
                inside.clone(),
                overlaps.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                while done < CYCLES {
                    assert!(
                        Instant::now() < deadline,
                        "exclusion test ran past its deadline"
                    );
                    let Ok(lock) = redlock.acquire("shared-counter").await else {
                        continue;
                    };
                    if inside.swap(true, Ordering::SeqCst) {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    // Read, yield to the scheduler, write: a lost update if two run at once.
                    let read = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(read + 1, Ordering::SeqCst);
                    inside.store(false, Ordering::SeqCst);
                    lock.release().await.unwrap();
                    done += 1;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        (CLIENTS * TASKS_PER_CLIENT * CYCLES) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_in_another_process_is_woken_by_the_release() {
    use tower_redlock::{LockOptions, RetryPolicy};
    let cluster = cluster().await;
    // This test is about wake-up, not timeouts: a generous node timeout keeps a loaded CI
    // machine from leaving a node unsubscribed (a subscription that times out is not
    // retried; the fallback timer covers it, which is what this test rules out).
    let generous = || builder(&cluster).node_timeout(Duration::from_secs(3));
    let holder = generous().build().await.unwrap();
    let waiter = generous().build().await.unwrap();
    let lock = holder.acquire("handoff").await.unwrap();
    // Without wake-up the waiter would sleep 4 s between attempts.
    let slow_polling = RetryPolicy::until(Duration::from_secs(20))
        .base_delay(Duration::from_secs(4))
        .max_delay(Duration::from_secs(4))
        .jitter(0.0);
    let task = tokio::spawn(async move {
        let lock = waiter
            .acquire_with("handoff", LockOptions::new().retry(slow_polling))
            .await
            .unwrap();
        let got = Instant::now();
        lock.release().await.unwrap();
        got
    });
    // Let the waiter fail once, subscribe, and mark the held key (only a marked release
    // publishes).
    let subscribed = eventually(Duration::from_secs(15), || async {
        let mut conn = raw(&cluster, 0).await;
        let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{PREFIX}released:handoff"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let marked = lock_value(&cluster, 0, "handoff")
            .await
            .is_some_and(|v| v.ends_with('+'));
        subs.first().is_some_and(|(_, n)| *n > 0) && marked
    })
    .await;
    assert!(subscribed, "the waiter never subscribed and marked the key");
    let released = Instant::now();
    lock.release().await.unwrap();
    let got = task.await.unwrap();
    assert!(
        got - released < Duration::from_secs(2),
        "woken {:?} after the release",
        got - released
    );
}
