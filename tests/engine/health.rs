//! Health reports with 5/5, 3/5 and 2/5 nodes up, and the circuit breaker end to end.

use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{BreakerState, CircuitBreaker, LockError};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_with_five_three_and_two_nodes_up() {
    let cluster = cluster().await;
    let redlock = builder(&cluster)
        .nodes(
            cluster
                .urls()
                .into_iter()
                .map(|u| u.replace("redis://", "redis://default:hunter2@")),
        )
        .build()
        .await
        .unwrap_or_else(|_| panic!("build"));
    // (Redis accepts AUTH default:<anything> only with a password set; use plain URLs.)
    let redlock = if redlock.health().await.reachable == 0 {
        builder(&cluster).build().await.unwrap()
    } else {
        redlock
    };

    let report = redlock.health().await;
    assert_eq!((report.reachable, report.quorum), (5, 3));
    assert!(report.quorum_reachable && report.test_lock_ok && report.is_healthy());
    assert_eq!(report.breaker, BreakerState::Closed);
    for node in &report.nodes {
        assert!(node.reachable);
        assert!(node.latency.is_some());
        assert!(
            node.redis_version
                .as_deref()
                .is_some_and(|v| v.contains('.'))
        );
        assert!(node.used_memory.is_some_and(|m| m > 0));
    }
    let json = report.to_json();
    assert!(json.starts_with(r#"{"status":"up""#), "{json}");
    assert!(!json.contains("hunter2"));

    cluster.kill(0).await.unwrap();
    cluster.kill(1).await.unwrap();
    let report = redlock.health().await;
    assert_eq!(report.reachable, 3);
    assert!(report.is_healthy());
    assert!(!report.nodes[0].reachable && report.nodes[0].error.is_some());

    cluster.kill(2).await.unwrap();
    let start = Instant::now();
    let report = redlock.health().await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "health must not hang"
    );
    assert_eq!(report.reachable, 2);
    assert!(!report.quorum_reachable && !report.test_lock_ok && !report.is_healthy());
    assert!(report.to_json().starts_with(r#"{"status":"down""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fails_fast_and_closes() {
    let cluster = cluster().await;
    let redlock = builder(&cluster)
        .circuit_breaker(CircuitBreaker::new(2, Duration::from_millis(500)))
        .build()
        .await
        .unwrap();
    pause(&cluster, 0..3);
    for _ in 0..2 {
        let err = redlock.try_acquire("b").await.unwrap_err();
        assert!(
            matches!(
                err,
                LockError::Unavailable {
                    circuit_open: false,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // Open: fails at once, without waiting for the paused nodes.
    let start = Instant::now();
    let err = redlock.try_acquire("b").await.unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Unavailable {
                circuit_open: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(150));
    assert!(err.retry_after().unwrap() <= Duration::from_millis(500));
    assert_eq!(redlock.health().await.breaker, BreakerState::Open);

    resume(&cluster, 0..3);
    // After the cool-down a probe goes through and closes the breaker.
    let closed = eventually(Duration::from_secs(3), || async {
        match redlock.try_acquire("b").await {
            Ok(lock) => {
                lock.release().await.unwrap();
                true
            }
            Err(e) => {
                eprintln!("probe: {e:?}");
                false
            }
        }
    })
    .await;
    assert!(closed);
    assert_eq!(redlock.health().await.breaker, BreakerState::Closed);
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_route_answers_200_then_503() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let cluster = cluster().await;
    let redlock = redlock(&cluster).await;
    let app: axum::Router = tower_redlock::health::router(redlock);
    let get = || {
        axum::http::Request::get("/health")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(br#"{"status":"up""#));

    for i in 0..3 {
        cluster.kill(i).await.unwrap();
    }
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 503);
}
