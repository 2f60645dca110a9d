//! Mutual exclusion under heavy contention: a non-atomic counter must come out exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

use crate::support::*;

const CLIENTS: usize = 4;
const TASKS_PER_CLIENT: usize = 8;
const CYCLES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_never_overlap() {
    let cluster = cluster(5).await;
    let counter = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        // Separate engines stand in for separate service instances. A generous node
        // timeout: this test is about exclusion, and 32 tasks on a loaded 2-core machine can
        // keep a reply waiting longer than the shared 1 s.
        let redlock = builder(cluster.urls())
            .node_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
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
                    // A release that could not reach a quorum in time leaves the key to
                    // expire: slower, never unsafe, and not what this test checks.
                    let _ = lock.release().await;
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

/// Spawns a task that acquires `key` on `waiter`, retrying every `every` (no jitter) for up
/// to `every` + [`NO_HANG`], then releases it; the task returns when it got the lock.
fn polling_waiter(waiter: Redlock, key: &'static str, every: Duration) -> JoinHandle<Instant> {
    let polling = RetryPolicy::until(every + NO_HANG)
        .base_delay(every)
        .max_delay(every)
        .jitter(0.0);
    tokio::spawn(async move {
        let lock = waiter
            .acquire_with(key, LockOptions::new().retry(polling))
            .await
            .unwrap();
        let got = Instant::now();
        lock.release().await.unwrap();
        got
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_in_another_process_is_woken_by_the_release() {
    let cluster = cluster(5).await;
    // This test is about wake-up, not timeouts: a generous node timeout keeps a loaded CI
    // machine from leaving node 0 unsubscribed (a subscription that times out is made again
    // only at the waiter's next wait, 4 s later here).
    let generous = || builder(cluster.urls()).node_timeout(Duration::from_secs(3));
    let holder = generous().build().await.unwrap();
    let waiter = generous().build().await.unwrap();
    let lock = holder.acquire("handoff").await.unwrap();
    // Without wake-up the waiter would sleep an hour between attempts: if it gets the lock
    // at all (within the no-hang bound), the release woke it.
    let task = polling_waiter(waiter, "handoff", Duration::from_secs(3600));
    // Let the waiter fail once, subscribe, and mark the held key (only a marked release
    // publishes).
    let subscribed = eventually(NO_HANG, || async {
        awaited_on(
            &cluster,
            0,
            &lock_key("handoff"),
            &released_channel("handoff"),
        )
        .await
    })
    .await;
    assert!(subscribed, "the waiter never subscribed and marked the key");
    lock.release().await.unwrap();
    tokio::time::timeout(NO_HANG, task)
        .await
        .expect("the release did not wake the waiter")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_failed_is_made_again() {
    let cluster = cluster(5).await;
    let holder = redlock(&cluster).await;
    let waiter = redlock(&cluster).await;
    let lock = holder.acquire("repair").await.unwrap();
    // Node 0 is frozen while the waiter subscribes: its subscription there times out.
    cluster.pause(0).unwrap();
    let task = polling_waiter(waiter, "repair", Duration::from_millis(300));
    // The mark comes after the subscriptions were tried.
    let marked = eventually(NO_HANG, || async {
        lock_value(&cluster, 1, "repair")
            .await
            .is_some_and(|v| v.ends_with('+'))
    })
    .await;
    assert!(marked, "the waiter never marked the key");
    cluster.resume(0).unwrap();
    // One of the waiter's next waits subscribes on node 0 again.
    let again = eventually(NO_HANG, || async {
        subscribers(&cluster, 0, &released_channel("repair")).await > 0
    })
    .await;
    assert!(again, "node 0's subscription was never made again");
    lock.release().await.unwrap();
    tokio::time::timeout(NO_HANG, task)
        .await
        .expect("the waiter gets the lock")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lost_with_a_restarted_node_are_made_again() {
    let cluster = cluster(5).await;
    let holder = redlock(&cluster).await;
    let waiter = redlock(&cluster).await;
    let lock = holder.acquire("restart").await.unwrap();
    let task = polling_waiter(waiter, "restart", Duration::from_millis(300));
    let subscribed = eventually(NO_HANG, || async {
        subscribers(&cluster, 0, &released_channel("restart")).await > 0
    })
    .await;
    assert!(subscribed, "the waiter never subscribed on node 0");
    // The restart takes the waiter's subscriptions there with it.
    cluster.restart(0).await.unwrap();
    let again = eventually(NO_HANG, || async {
        subscribers(&cluster, 0, &released_channel("restart")).await > 0
    })
    .await;
    assert!(
        again,
        "node 0's subscription was not made again after its restart"
    );
    lock.release().await.unwrap();
    tokio::time::timeout(NO_HANG, task)
        .await
        .expect("the waiter gets the lock")
        .unwrap();
}
