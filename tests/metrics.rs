//! Metrics are recorded through the `metrics` facade (with a debugging recorder).
#![cfg(all(feature = "metrics", feature = "testkit"))]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_redlock::testkit::LocalCluster;
use tower_redlock::{LockOptions, Redlock};

type Entries = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Takes a snapshot (which drains what it reports).
fn take(snapshotter: &Snapshotter) -> Entries {
    snapshotter.snapshot().into_vec()
}

fn counter(entries: &Entries, name: &str, labels: &[(&str, &str)]) -> u64 {
    entries
        .iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(c) => *c,
            DebugValue::Histogram(h) => h.len() as u64,
            DebugValue::Gauge(g) => g.into_inner() as u64,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_lifecycle_is_counted_without_raw_keys() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let cluster = LocalCluster::start(5).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let lock = redlock
        .acquire_with("orders:42", LockOptions::new().label("pay"))
        .await
        .unwrap();
    let err = redlock
        .acquire_with("orders:42", LockOptions::new().no_retry().label("pay"))
        .await
        .unwrap_err();
    assert!(err.is_contended());
    lock.release().await.unwrap();

    let m = take(&snapshotter);
    assert_eq!(
        counter(
            &m,
            "redlock_acquire_total",
            &[("outcome", "acquired"), ("lock", "pay")]
        ),
        1
    );
    assert_eq!(
        counter(&m, "redlock_acquire_total", &[("outcome", "contended")]),
        1
    );
    assert_eq!(
        counter(&m, "redlock_release_total", &[("outcome", "released")]),
        1
    );
    assert!(counter(&m, "redlock_acquire_wait_seconds", &[]) >= 2);
    assert!(counter(&m, "redlock_acquire_attempt_seconds", &[]) >= 2);
    assert_eq!(counter(&m, "redlock_hold_seconds", &[("lock", "pay")]), 1);

    // A lost lease is counted.
    let fragile = redlock
        .acquire_with("fragile", LockOptions::new().auto_extend(false))
        .await
        .unwrap();
    fragile.lost().await;
    let later = take(&snapshotter);
    assert_eq!(counter(&later, "redlock_lost_total", &[]), 1);

    // No label holds a raw key unless asked for.
    let keys_in_labels = m.iter().chain(&later).any(|(key, _, _, _)| {
        key.key()
            .labels()
            .any(|l| l.value().contains("orders") || l.value().contains("fragile"))
    });
    assert!(!keys_in_labels);
}
