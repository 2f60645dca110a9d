//! Gauges through the `metrics` facade (with a debugging recorder): leases held, waiters,
//! per-node state and the circuit breaker.
#![cfg(all(feature = "metrics", feature = "testkit"))]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_redlock::testkit::{LocalCluster, eventually};
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

/// A bound against hanging, not a speed requirement.
const NO_HANG: Duration = Duration::from_secs(30);

/// The value of gauge `name` with `labels`, if it was ever set.
fn gauge(snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .and_then(|(_, _, _, value)| match value {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
}

/// Waits until gauge `name` with `labels` reads `value`.
async fn reaches(snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)], value: f64) {
    let reached = eventually(NO_HANG, || async move {
        gauge(snapshotter, name, labels) == Some(value)
    })
    .await;
    assert!(
        reached,
        "{name}{labels:?} is {:?}, expected {value}",
        gauge(snapshotter, name, labels)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_leases_waiters_and_nodes() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let cluster = LocalCluster::start(3).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_secs(5))
        .node_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();

    // Set when the engine is built.
    for node in ["0", "1", "2"] {
        assert_eq!(
            gauge(&snapshotter, "redlock_node_up", &[("node", node)]),
            Some(1.0)
        );
        assert_eq!(
            gauge(&snapshotter, "redlock_node_behind", &[("node", node)]),
            Some(0.0)
        );
    }
    assert_eq!(gauge(&snapshotter, "redlock_circuit_open", &[]), Some(0.0));

    // A lease held, then a waiter behind it.
    let pay = || LockOptions::new().label("pay");
    let held = [("lock", "pay")];
    let lock = redlock.acquire_with("orders:1", pay()).await.unwrap();
    assert_eq!(gauge(&snapshotter, "redlock_leases_held", &held), Some(1.0));
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            let options = pay().retry(RetryPolicy::until(Duration::from_secs(60)));
            redlock.acquire_with("orders:1", options).await
        }
    });
    reaches(&snapshotter, "redlock_waiters", &held, 1.0).await;
    // Released: the waiter takes it, and stops waiting.
    lock.release().await.unwrap();
    let next = tokio::time::timeout(NO_HANG, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(gauge(&snapshotter, "redlock_waiters", &held), Some(0.0));
    assert_eq!(gauge(&snapshotter, "redlock_leases_held", &held), Some(1.0));
    drop(next);
    reaches(&snapshotter, "redlock_leases_held", &held, 0.0).await;

    // A lost lease is no longer held.
    let fragile = redlock
        .acquire_with(
            "orders:2",
            pay().auto_extend(false).ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(gauge(&snapshotter, "redlock_leases_held", &held), Some(1.0));
    tokio::time::timeout(NO_HANG, fragile.ended())
        .await
        .unwrap();
    assert!(!fragile.is_released(), "lost, not released");
    assert_eq!(gauge(&snapshotter, "redlock_leases_held", &held), Some(0.0));
    drop(fragile);

    // A node that goes down is skipped once a call finds it so; back when it answers.
    cluster.kill(2).await.unwrap();
    let (engine, snapshots) = (&redlock, &snapshotter);
    let found_down = eventually(NO_HANG, || async move {
        drop(engine.try_acquire("orders:3").await);
        gauge(snapshots, "redlock_node_up", &[("node", "2")]) == Some(0.0)
    })
    .await;
    assert!(found_down, "node 2 never reported down");
    assert_eq!(
        gauge(&snapshotter, "redlock_node_up", &[("node", "0")]),
        Some(1.0)
    );
    cluster.restart(2).await.unwrap();
    reaches(&snapshotter, "redlock_node_up", &[("node", "2")], 1.0).await;

    // Shut down: nothing held, nobody waiting.
    let _kept = redlock.acquire_with("orders:4", pay()).await.unwrap();
    redlock.shutdown().await;
    assert_eq!(gauge(&snapshotter, "redlock_leases_held", &held), Some(0.0));
    assert_eq!(gauge(&snapshotter, "redlock_waiters", &held), Some(0.0));
}
