//! The watchdog costs no task until a lease is held long enough to need an extension.

use std::time::Duration;

use tower_redlock::LockOptions;

use crate::support::*;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_leases_cost_no_task_until_an_extension_is_due() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    // A first cycle starts whatever the engine starts once (pub/sub is not involved).
    redlock
        .acquire("warm")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let before = alive_tasks();
    let mut locks = Vec::new();
    for i in 0..50 {
        let lock = redlock
            .acquire_with(
                format!("many:{i}"),
                LockOptions::new().ttl(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        locks.push(lock);
    }
    let held = alive_tasks();
    assert!(
        held <= before + 2,
        "50 held leases: {before} tasks before, {held} while held"
    );
    for lock in locks {
        lock.release().await.unwrap();
    }
    for i in 0..50 {
        assert!(released_everywhere(&cluster, &format!("many:{i}")).await);
    }
}

/// The engine's timer task lives on the runtime the engine was built on. When that runtime
/// is gone, the next lease starts it again on its own runtime, so leases are still extended.
///
/// The first runtime may be dropped while a node connection is being made: the holder must
/// still reconnect on the second one (bb8's connect task dies with that runtime and leaks
/// its pool slot; the node's pool is then replaced, see `node::redis::pool`).
#[test]
fn leases_are_extended_after_the_engine_runtime_is_gone() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let (cluster, holder) = first.block_on(async {
        let cluster = cluster(5).await;
        let holder = redlock(&cluster).await;
        (cluster, holder)
    });
    drop(first);
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let rival = redlock(&cluster).await;
        // The holder's connections died with the first runtime: let it make new ones first
        // (this test is about the timer task, not about reconnecting). Waits for the event
        // (a healthy report), bounded by a count, instead of trusting one health check.
        let mut healthy = false;
        for _ in 0..200 {
            if holder.health().await.is_healthy() {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(healthy, "the holder never reconnected on the new runtime");
        let ttl = Duration::from_secs(3);
        let lock = holder
            .acquire_with("moved", LockOptions::new().ttl(ttl))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        // Until the lease has outlived its first validity twice over (only extensions,
        // made by the restarted timer task, can have kept it), the rival is refused.
        let first_end = lock.valid_until();
        let outlived = first_end + ttl;
        for _ in 0..1_000 {
            if tokio::time::Instant::now() > outlived {
                break;
            }
            let err = match rival.try_acquire("moved").await {
                Err(err) => err,
                Ok(got) => panic!(
                    "rival took it {:?} after the holder's acquire; holder {lock:?}, rival {got:?}",
                    start.elapsed()
                ),
            };
            assert!(err.is_contended(), "{err:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            tokio::time::Instant::now() > outlived,
            "the loop ran out first"
        );
        assert!(lock.is_held());
        assert!(lock.valid_until() > first_end, "never extended");
        lock.release().await.unwrap();
        assert!(released_everywhere(&cluster, "moved").await);
    });
}
