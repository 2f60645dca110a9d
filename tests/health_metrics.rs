//! Health checks stay out of the lock metrics (their own binary: one recorder per process).
#![cfg(all(feature = "metrics", feature = "testkit"))]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_redlock::Redlock;
use tower_redlock::testkit::LocalCluster;

#[path = "support/mod.rs"]
mod support;

use support::NODE_TIMEOUT;

/// The sum of every `redlock_*` series called `name` (counters, and histogram samples).
fn total(entries: &[(metrics_util::CompositeKey, DebugValue)], name: &str) -> u64 {
    entries
        .iter()
        .filter(|(key, _)| key.key().name() == name)
        .map(|(_, value)| match value {
            DebugValue::Counter(c) => *c,
            DebugValue::Histogram(h) => h.len() as u64,
            DebugValue::Gauge(g) => g.into_inner() as u64,
        })
        .sum()
}

const LOCK_METRICS: &[&str] = &[
    "redlock_acquire_total",
    "redlock_acquire_attempt_seconds",
    "redlock_acquire_wait_seconds",
    "redlock_hold_seconds",
    "redlock_release_total",
    "redlock_lost_total",
    "redlock_circuit_opened_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_record_no_lock_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");
    let snapshot = || -> Vec<(metrics_util::CompositeKey, DebugValue)> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key, value))
            .collect()
    };

    let cluster = LocalCluster::start(3).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_secs(5))
        .node_timeout(NODE_TIMEOUT)
        .build()
        .await
        .unwrap();
    let _ = snapshot();

    for _ in 0..5 {
        assert!(redlock.health().await.is_healthy());
    }
    let after_checks = snapshot();
    for name in LOCK_METRICS {
        assert_eq!(
            total(&after_checks, name),
            0,
            "health checks counted in {name}"
        );
    }

    // The recorder does see the users' locks.
    let lock = redlock.try_acquire("user").await.unwrap();
    lock.release().await.unwrap();
    let after_lock = snapshot();
    assert_eq!(total(&after_lock, "redlock_acquire_total"), 1);
    assert_eq!(total(&after_lock, "redlock_release_total"), 1);
}
