//! Gauges through the `metrics` facade (with a debugging recorder): leases held, waiters,
//! per-node state and the circuit breaker.
#![cfg(all(feature = "metrics", feature = "testkit"))]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use tower_redlock::testkit::{LocalCluster, eventually};
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

#[path = "support/mod.rs"]
mod support;

use support::{NO_HANG, NODE_TIMEOUT};

/// A recorder whose gauges can be read any number of times (the debugging recorder's
/// snapshot resets them).
#[derive(Clone)]
struct Gauges(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Gauges {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// The value of gauge `name` with `labels`, if it was ever set.
fn gauge(gauges: &Gauges, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    gauges
        .0
        .get_gauge_handles()
        .into_iter()
        .find(|(key, _)| {
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| f64::from_bits(value.load(Ordering::SeqCst)))
}

/// Waits until gauge `name` with `labels` reads `value`.
async fn reaches(gauges: &Gauges, name: &str, labels: &[(&str, &str)], value: f64) {
    let reached = eventually(NO_HANG, || async move {
        gauge(gauges, name, labels) == Some(value)
    })
    .await;
    assert!(
        reached,
        "{name}{labels:?} is {:?}, expected {value}",
        gauge(gauges, name, labels)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_leases_waiters_and_nodes() {
    let gauges = Gauges(Arc::new(Registry::atomic()));
    metrics::set_global_recorder(gauges.clone()).expect("the only recorder in this binary");

    let cluster = LocalCluster::start(3).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_secs(5))
        .node_timeout(NODE_TIMEOUT)
        .build()
        .await
        .unwrap();

    // Set when the engine is built.
    for node in ["0", "1", "2"] {
        assert_eq!(
            gauge(&gauges, "redlock_node_up", &[("node", node)]),
            Some(1.0)
        );
        assert_eq!(
            gauge(&gauges, "redlock_node_behind", &[("node", node)]),
            Some(0.0)
        );
    }
    assert_eq!(gauge(&gauges, "redlock_circuit_open", &[]), Some(0.0));

    // A lease held, then a waiter behind it.
    let pay = || LockOptions::new().label("pay");
    let held = [("lock", "pay")];
    let lock = redlock.acquire_with("orders:1", pay()).await.unwrap();
    assert_eq!(gauge(&gauges, "redlock_leases_held", &held), Some(1.0));
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            let options = pay().retry(RetryPolicy::until(Duration::from_secs(60)));
            redlock.acquire_with("orders:1", options).await
        }
    });
    reaches(&gauges, "redlock_waiters", &held, 1.0).await;
    // Released: the waiter takes it, and stops waiting.
    lock.release().await.unwrap();
    let next = tokio::time::timeout(NO_HANG, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(gauge(&gauges, "redlock_waiters", &held), Some(0.0));
    assert_eq!(gauge(&gauges, "redlock_leases_held", &held), Some(1.0));
    drop(next);
    reaches(&gauges, "redlock_leases_held", &held, 0.0).await;

    // A lost lease is no longer held.
    let fragile = redlock
        .acquire_with("orders:2", pay().auto_extend(false).ttl(support::SHORT_TTL))
        .await
        .unwrap();
    assert_eq!(gauge(&gauges, "redlock_leases_held", &held), Some(1.0));
    tokio::time::timeout(NO_HANG, fragile.ended())
        .await
        .unwrap();
    assert!(!fragile.is_released(), "lost, not released");
    assert_eq!(gauge(&gauges, "redlock_leases_held", &held), Some(0.0));
    drop(fragile);

    // A node that goes down is skipped once a call finds it so; back when it answers.
    cluster.kill(2).await.unwrap();
    let (engine, gauges_ref) = (&redlock, &gauges);
    let found_down = eventually(NO_HANG, || async move {
        drop(engine.try_acquire("orders:3").await);
        gauge(gauges_ref, "redlock_node_up", &[("node", "2")]) == Some(0.0)
    })
    .await;
    assert!(found_down, "node 2 never reported down");
    assert_eq!(
        gauge(&gauges, "redlock_node_up", &[("node", "0")]),
        Some(1.0)
    );
    cluster.restart(2).await.unwrap();
    reaches(&gauges, "redlock_node_up", &[("node", "2")], 1.0).await;

    // Shut down: nothing held, nobody waiting.
    let _kept = redlock.acquire_with("orders:4", pay()).await.unwrap();
    redlock.shutdown().await;
    assert_eq!(gauge(&gauges, "redlock_leases_held", &held), Some(0.0));
    assert_eq!(gauge(&gauges, "redlock_waiters", &held), Some(0.0));
}
