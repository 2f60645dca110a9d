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

/// The layer labels its locks by the matched route, never by the key; `.label` overrides.
///
/// The recorder is this test's thread's own (the other test installs the global one): a
/// current-thread runtime keeps every task of the engine on this thread.
#[cfg(feature = "axum")]
#[tokio::test(flavor = "current_thread")]
async fn layer_labels_locks_by_the_matched_route() {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use http::{Request, StatusCode};
    use tower::ServiceExt;
    use tower_redlock::layer::{RedlockLayer, key};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let cluster = LocalCluster::start(5).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/orders/{id}/pay",
            post(|| async { "paid" }).layer(RedlockLayer::new(
                redlock.clone(),
                key::prefixed("order:", key::param("id")),
            )),
        )
        .route(
            "/invoices/{id}",
            post(|| async { "sent" }).layer(
                RedlockLayer::new(redlock.clone(), key::prefixed("invoice:", key::param("id")))
                    .label("invoices"),
            ),
        );
    for uri in ["/orders/42/pay", "/orders/43/pay", "/invoices/77"] {
        let request = Request::post(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }

    let m = take(&snapshotter);
    let route = [("outcome", "acquired"), ("lock", "/orders/{id}/pay")];
    assert_eq!(counter(&m, "redlock_acquire_total", &route), 2);
    assert_eq!(
        counter(&m, "redlock_hold_seconds", &[("lock", "/orders/{id}/pay")]),
        2
    );
    let custom = [("outcome", "acquired"), ("lock", "invoices")];
    assert_eq!(counter(&m, "redlock_acquire_total", &custom), 1);
    let keys_in_labels = m.iter().any(|(key, _, _, _)| {
        key.key().labels().any(|l| {
            ["42", "43", "77", "order:", "invoice:"]
                .iter()
                .any(|raw| l.value().contains(raw))
        })
    });
    assert!(!keys_in_labels);
}
