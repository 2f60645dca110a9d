//! Health reports with 5/5, 3/5 and 2/5 nodes up, the circuit breaker end to end, and
//! health checks that neither contend with each other or with user locks nor touch the
//! breaker.

use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::health::HealthReport;
use tower_redlock::{BreakerState, CircuitBreaker, LockError, Redlock};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_with_five_three_and_two_nodes_up() {
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls())
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
        builder(cluster.urls()).build().await.unwrap()
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
    assert!(!report.to_json_detailed().contains("hunter2"));

    cluster.kill(0).await.unwrap();
    cluster.kill(1).await.unwrap();
    let report = redlock.health().await;
    assert_eq!(report.reachable, 3);
    assert!(report.is_healthy());
    assert!(!report.nodes[0].reachable && report.nodes[0].error.is_some());

    cluster.kill(2).await.unwrap();
    let start = Instant::now();
    let report = redlock.health().await;
    // A no-hang bound (a few node timeouts are expected), generous for a
    // loaded machine.
    assert!(start.elapsed() < NO_HANG, "health must not hang");
    assert_eq!(report.reachable, 2);
    assert!(!report.quorum_reachable && !report.test_lock_ok && !report.is_healthy());
    assert!(report.to_json().starts_with(r#"{"status":"down""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fails_fast_and_closes() {
    let cluster = cluster(5).await;
    // A long node timeout: failing fast (no wait for the paused nodes) cannot be mistaken
    // for a slow machine.
    let node_timeout = Duration::from_secs(2);
    let redlock = builder(cluster.urls())
        .node_timeout(node_timeout)
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
    assert!(start.elapsed() < node_timeout, "{:?}", start.elapsed());
    assert!(err.retry_after().unwrap() <= Duration::from_millis(500));
    assert_eq!(redlock.health().await.breaker, BreakerState::Open);

    resume(&cluster, 0..3);
    // After the cool-down a probe goes through and closes the breaker.
    let closed = eventually(NO_HANG, || async {
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

    let cluster = cluster(5).await;
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
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.starts_with(r#"{"status":"up""#), "{body}");
    // The public view names no node and tells nothing of what the nodes run.
    for detail in [
        "redis://",
        "127.0.0.1",
        "version",
        "memory",
        "url",
        "latency",
    ] {
        assert!(
            !body.contains(detail),
            "{detail} in the public health JSON: {body}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(json["nodes"][4]["index"], 4);
    assert_eq!(json["nodes"][4]["reachable"], true);

    for i in 0..3 {
        cluster.kill(i).await.unwrap();
    }
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 503);
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_health_route_has_the_node_details() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let app: axum::Router = tower_redlock::health::router_detailed(redlock);
    let request = axum::http::Request::get("/health")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "up");
    let node = &json["nodes"][0];
    assert!(
        node["url"].as_str().unwrap().starts_with("redis://"),
        "{json}"
    );
    assert!(
        node["redis_version"].as_str().unwrap().contains('.'),
        "{json}"
    );
    assert!(node["used_memory"].as_u64().unwrap() > 0, "{json}");
}

/// Every check of `rounds` rounds of `n` concurrent checks on each engine.
async fn concurrent_checks(engines: &[Redlock], n: usize, rounds: usize) -> Vec<HealthReport> {
    let mut reports = Vec::new();
    for _ in 0..rounds {
        let checks = engines
            .iter()
            .flat_map(|engine| (0..n).map(move |_| engine.health()));
        reports.extend(futures_util::future::join_all(checks).await);
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_health_checks_do_not_contend() {
    let cluster = cluster(5).await;
    let one = redlock(&cluster).await;
    let two = redlock(&cluster).await;
    // Eight at once on one engine, then four at once on each of two engines (two instances
    // of a service behind one load balancer).
    let mut reports = concurrent_checks(std::slice::from_ref(&one), 8, 3).await;
    reports.extend(concurrent_checks(&[one, two], 4, 3).await);
    assert_eq!(reports.len(), 48);
    for report in &reports {
        assert!(report.is_healthy(), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_locks_cannot_fail_the_health_check() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    // The key the check used to lock, and keys that spell parts of the internal namespace
    // (an unprefixed `key::param` can send any of them).
    #[allow(deprecated)]
    let old = tower_redlock::health::HEALTH_KEY;
    let keys = [
        old,
        "internal:lock:health",
        "internal",
        "../internal:lock:health:0",
        "t:internal:lock:health:0",
    ];
    let mut held = Vec::new();
    for key in keys {
        held.push(redlock.try_acquire(key).await.unwrap());
    }
    let other = self::redlock(&cluster).await;
    for engine in [&redlock, &other] {
        let report = engine.health().await;
        assert!(report.is_healthy(), "{report:?}");
    }
    for lock in held {
        lock.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_leave_the_breaker_alone() {
    let cluster = cluster(5).await;
    // Opens on the first unreachable quorum, and stays open for long.
    let redlock = builder(cluster.urls())
        .circuit_breaker(CircuitBreaker::new(1, Duration::from_secs(600)))
        .build()
        .await
        .unwrap();
    assert_eq!(redlock.health().await.breaker, BreakerState::Closed);

    pause(&cluster, 0..3);
    for _ in 0..3 {
        let report = redlock.health().await;
        assert!(!report.is_healthy());
        assert_eq!(report.breaker, BreakerState::Closed, "{report:?}");
    }
    resume(&cluster, 0..3);

    // Wait until every node answers again (a check's `PING` ends a node's skipping).
    let back = eventually(NO_HANG, || async {
        let report = redlock.health().await;
        report.nodes.iter().all(|n| n.reachable && !n.skipped)
    })
    .await;
    assert!(back, "the nodes never came back");
    // Still closed: a user request goes to the nodes instead of failing fast.
    match redlock.try_acquire("after-probes").await {
        Ok(lock) => {
            lock.release().await.unwrap();
        }
        Err(error) => panic!("the health checks touched the breaker: {error:?}"),
    }
    assert_eq!(redlock.health().await.breaker, BreakerState::Closed);
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_needs_no_redis_and_readiness_does() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let cluster = cluster(5).await;
    // A node call to a frozen node would take a minute: longer than the no-hang bound.
    let redlock = builder(cluster.urls())
        .ttl(Duration::from_secs(300))
        .node_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let app: axum::Router = tower_redlock::health::router(redlock);
    let get = |path: &str| {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = tokio::time::timeout(NO_HANG, app.oneshot(request))
                .await
                .expect("the probe hung")
                .unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    for path in ["/health/live", "/health/ready", "/health"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with(r#"{"status":"up""#), "{path}: {body}");
    }

    // Every node frozen: liveness still answers, without asking them.
    pause(&cluster, 0..5);
    assert_eq!(
        get("/health/live").await,
        (200, r#"{"status":"up"}"#.to_owned())
    );
    resume(&cluster, 0..5);

    // A quorum gone: not ready, still live.
    for i in 0..3 {
        cluster.kill(i).await.unwrap();
    }
    let (status, body) = get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get("/health").await.0, 503);
    assert_eq!(get("/health/live").await.0, 200);
}
