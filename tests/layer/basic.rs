//! Contention, pass-through, method filters, bad keys and the layer's options.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tower_redlock::HeldLock;
use tower_redlock::MAX_KEY_LEN;
use tower_redlock::layer::key::KeyExtractor;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::layer::{Rejection, Release};

use crate::apps::*;
use crate::support::*;

const SECRET: &str = "secret-order-42";

#[tokio::test]
async fn same_key_concurrently_one_200_rest_423() {
    let n = nodes(Duration::from_secs(10)).await;
    let gate = Gate::new();
    let g = gate.clone();
    let app = Router::new()
        .route(
            "/orders/{id}/pay",
            post(move || {
                let g = g.clone();
                async move {
                    g.wait().await;
                    "paid"
                }
            }),
        )
        .route_layer(RedlockLayer::new(
            n.redlock.clone(),
            key::prefixed("order:", key::param("id")),
        ));
    let server = serve(app).await;

    const N: usize = 8;
    let mut tasks = JoinSet::new();
    for _ in 0..N {
        let addr = server.addr;
        tasks
            .spawn(async move { http(addr, Method::POST, &format!("/orders/{SECRET}/pay")).await });
    }
    // Everyone but the holder is answered while the holder waits at the gate.
    let mut replies = Vec::new();
    while replies.len() < N - 1 {
        replies.push(
            within("a rejection", tasks.join_next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    gate.open();
    replies.push(
        within("the holder", tasks.join_next())
            .await
            .unwrap()
            .unwrap(),
    );

    let ok: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 1, "{replies:?}");
    assert_eq!(ok[0].body, "paid");
    assert_eq!(replies.last().unwrap().status, StatusCode::OK);
    for reply in &replies[..N - 1] {
        let doc = reply.problem(423);
        assert!(reply.retry_after().unwrap() >= 1, "{reply:?}");
        assert!(doc["retry_after_ms"].as_u64().unwrap() >= 1, "{doc}");
        assert!(!reply.body.contains(SECRET) && !reply.body.contains("order:"));
        for value in reply.headers.values() {
            assert!(!value.to_str().unwrap_or("").contains(SECRET));
        }
    }
    // Released before the response: the next request gets the lock at once.
    assert!(!is_held(&n.redlock, &format!("order:{SECRET}")).await);
}

#[tokio::test]
async fn different_keys_run_in_parallel() {
    let n = nodes(Duration::from_secs(10)).await;
    let barrier = Arc::new(Barrier::new(2));
    let app = Router::new()
        .route(
            "/items/{id}",
            post(move || {
                let barrier = barrier.clone();
                async move {
                    // Both handlers must be inside at the same time to pass.
                    match tokio::time::timeout(NO_HANG, barrier.wait()).await {
                        Ok(_) => StatusCode::OK,
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
            }),
        )
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::param("id")));
    let (a, b) = tokio::join!(
        call(&app, Method::POST, "/items/a"),
        call(&app, Method::POST, "/items/b")
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
}

#[tokio::test]
async fn none_passes_through_unlocked() {
    let n = nodes(Duration::from_secs(10)).await;
    let by_path = |parts: &Parts| (parts.uri.path() != "/health").then(|| "busy".to_owned());
    let app = Router::new()
        .route(
            "/{name}",
            get(|lock: Option<HeldLock>| async move {
                if lock.is_some() { "locked" } else { "unlocked" }
            }),
        )
        .layer(RedlockLayer::new(n.redlock.clone(), by_path));
    assert_eq!(call(&app, Method::GET, "/work").await.body, "locked");

    let held = n.redlock.try_acquire("busy").await.unwrap();
    let health = call(&app, Method::GET, "/health").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "unlocked")
    );
    call(&app, Method::GET, "/work").await.problem(423);
    held.release().await.unwrap();
}

#[tokio::test]
async fn method_filter_locks_only_mutations() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new()
        .route("/doc", any(|| async { "ok" }))
        .layer(RedlockLayer::new(
            n.redlock.clone(),
            key::mutating(key::constant("doc")),
        ));
    let held = n.redlock.try_acquire("doc").await.unwrap();
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert_eq!(
            call(&app, method.clone(), "/doc").await.status,
            StatusCode::OK,
            "{method}"
        );
    }
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        call(&app, method, "/doc").await.problem(423);
    }
    held.release().await.unwrap();

    let only_put = key::constant("doc").for_methods(&[Method::PUT]);
    let app = Router::new()
        .route("/doc", any(|| async { "ok" }))
        .layer(RedlockLayer::new(n.redlock.clone(), only_put));
    let _held = n.redlock.try_acquire("doc").await.unwrap();
    assert_eq!(
        call(&app, Method::POST, "/doc").await.status,
        StatusCode::OK
    );
    call(&app, Method::PUT, "/doc").await.problem(423);
}

#[tokio::test]
async fn bad_keys_are_400_without_the_key() {
    let n = nodes(Duration::from_secs(10)).await;
    let long = "k".repeat(MAX_KEY_LEN + 1);
    let long_key = long.clone();
    let app = Router::new()
        .route("/empty", get(|| async { "ok" }))
        .route_layer(RedlockLayer::new(n.redlock.clone(), |_: &Parts| {
            Some(String::new())
        }))
        .merge(
            Router::new()
                .route("/long", get(|| async { "ok" }))
                .route_layer(RedlockLayer::new(n.redlock.clone(), move |_: &Parts| {
                    Some(long_key.clone())
                })),
        )
        .merge(
            Router::new()
                .route("/fails", get(|| async { "ok" }))
                .route_layer(RedlockLayer::new(
                    n.redlock.clone(),
                    key::try_fn(|_| Err::<Option<String>, _>("the order id is malformed")),
                )),
        );
    let empty = call(&app, Method::GET, "/empty").await;
    assert_eq!(
        empty.problem(400)["type"],
        "urn:tower-redlock:problem:invalid-lock-key"
    );
    let too_long = call(&app, Method::GET, "/long").await;
    too_long.problem(400);
    assert!(!too_long.body.contains(&long[..64]), "{}", too_long.body);
    let fails = call(&app, Method::GET, "/fails").await;
    assert_eq!(fails.problem(400)["detail"], "the order id is malformed");
}

#[tokio::test]
async fn custom_rejection_response() {
    let n = nodes(Duration::from_secs(10)).await;
    let respond = |rejection: &Rejection| {
        if rejection.status() == StatusCode::LOCKED {
            let mut busy = Response::new("busy".to_owned());
            *busy.status_mut() = StatusCode::CONFLICT;
            return busy;
        }
        rejection.to_response()
    };
    let app = Router::new()
        .route("/x", post(|| async { "ok" }))
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("x")).on_rejection(respond));
    let _held = n.redlock.try_acquire("x").await.unwrap();
    let reply = call(&app, Method::POST, "/x").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::CONFLICT, "busy")
    );
}

#[tokio::test]
async fn wait_retries_until_the_lock_is_free() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new().route("/x", post(|| async { "ok" })).layer(
        RedlockLayer::new(n.redlock.clone(), key::constant("x")).wait(Duration::from_secs(8)),
    );
    let held = n.redlock.try_acquire("x").await.unwrap();
    let mut request = tokio::spawn(async move { call(&app, Method::POST, "/x").await });
    // Still waiting while we hold the lock...
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut request)
            .await
            .is_err()
    );
    held.release().await.unwrap();
    // ...and served once we release it.
    let reply = within("the waiting request", request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn ttl_option_and_background_release() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new()
        .route(
            "/x",
            post(|lock: HeldLock| async move { lock.remaining().as_millis().to_string() }),
        )
        .layer(
            RedlockLayer::new(n.redlock.clone(), key::constant("x"))
                .ttl(Duration::from_secs(2))
                .release(Release::InBackground),
        );
    let reply = call(&app, Method::POST, "/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    let remaining: u64 = reply.body.parse().unwrap();
    assert!(remaining > 0 && remaining <= 2_000, "{remaining}");
    assert!(eventually_free(&n.redlock, "x", Duration::from_secs(5)).await);
}

#[tokio::test]
async fn works_as_plain_tower_middleware() {
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    let n = nodes(Duration::from_secs(10)).await;
    let service = ServiceBuilder::new()
        .layer(RedlockLayer::new(n.redlock.clone(), key::path()))
        .service(service_fn(|request: http::Request<String>| async move {
            let held = request.extensions().get::<HeldLock>().is_some();
            Ok::<_, Infallible>(Response::new(format!("held={held}")))
        }));
    let request = http::Request::builder()
        .uri("/tower")
        .body(String::new())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        (parts.status, &body[..]),
        (StatusCode::OK, &b"held=true"[..])
    );

    let _held = n.redlock.try_acquire("/tower").await.unwrap();
    let request = http::Request::builder()
        .uri("/tower")
        .body(String::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::LOCKED);
}
