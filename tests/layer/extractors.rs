//! The ready-made key extractors, through real axum routing.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Method, Request, StatusCode};
use tower_layer::Layer;
use tower_redlock::layer::key::KeyExtractor;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, Redlock};

use crate::apps::*;
use crate::support::*;

/// Answers with the key the layer locked, or `unlocked`.
async fn key_of(lock: Option<HeldLock>) -> String {
    lock.map_or_else(|| "unlocked".to_owned(), |lock| lock.key().to_owned())
}

fn app(redlock: &Redlock) -> Router {
    let closure = key::from_fn(|parts| Some(parts.uri.path().to_owned()));
    Router::new()
        .route(
            "/path/{id}",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), closure)),
        )
        .route(
            "/whole/{id}",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::path())),
        )
        .route(
            "/route/{a}/x/{b}",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::route())),
        )
        .route(
            "/plain",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::route())),
        )
        .route(
            "/param/{id}",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::param("id"))),
        )
        .route(
            "/other/{x}",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::param("id"))),
        )
        .route(
            "/optional/{x}",
            get(key_of).layer(RedlockLayer::new(
                redlock.clone(),
                key::param("id").optional(),
            )),
        )
        .route(
            "/header",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::header("x-tenant"))),
        )
        .route(
            "/constant",
            get(key_of).layer(RedlockLayer::new(redlock.clone(), key::constant("global"))),
        )
        .route(
            "/prefixed/{id}",
            get(key_of).layer(RedlockLayer::new(
                redlock.clone(),
                key::param("id").with_prefix("order:"),
            )),
        )
}

async fn key_for(app: &Router, uri: &str) -> String {
    let reply = call(app, Method::GET, uri).await;
    assert_eq!(reply.status, StatusCode::OK, "{uri}: {reply:?}");
    reply.body
}

#[tokio::test]
async fn ready_made_extractors_under_method_router_layer() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = app(&n.redlock);
    // path() percent-decodes (issue 16): the key is `/whole/a b`, as for `/whole/a b`.
    assert_eq!(key_for(&app, "/whole/a%20b?q=1").await, "/whole/a b");
    assert_eq!(key_for(&app, "/path/7").await, "/path/7");
    assert_eq!(
        key_for(&app, "/route/1/x/a%26b").await,
        "/route/{a}/x/{b}?a=1&b=a%26b"
    );
    assert_eq!(key_for(&app, "/plain").await, "/plain");
    assert_eq!(key_for(&app, "/param/%C3%A9t%C3%A9").await, "été");
    // A route without the parameter is a misconfiguration (issue 11), not a pass.
    call(&app, Method::GET, "/other/1").await.problem(500);
    assert_eq!(
        key_for(&app, "/optional/1").await,
        "unlocked",
        "route without the param, opted in"
    );
    assert_eq!(key_for(&app, "/constant").await, "global");
    assert_eq!(key_for(&app, "/prefixed/9").await, "order:9");

    // A missing header is refused (issue 11): a client cannot skip the lock by omitting it.
    let missing = call(&app, Method::GET, "/header").await;
    assert!(
        missing.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("x-tenant")
    );
    let with = |value: &'static [u8]| {
        Request::builder()
            .uri("/header")
            .header("x-tenant", HeaderValue::from_bytes(value).unwrap())
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call_request(&app, with(b"acme")).await.body, "acme");
    let bad = call_request(&app, with(b"\xff\xfe")).await;
    let doc = bad.problem(400);
    assert!(
        doc["detail"].as_str().unwrap().contains("x-tenant"),
        "{doc}"
    );
}

#[tokio::test]
async fn param_and_route_under_router_route_layer_and_layer() {
    let n = nodes(Duration::from_secs(10)).await;
    let routed = Router::new()
        .route("/orders/{id}", get(key_of))
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::param("id")));
    assert_eq!(key_for(&routed, "/orders/5").await, "5");

    let routed = Router::new()
        .route("/orders/{id}", get(key_of))
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::route()));
    assert_eq!(key_for(&routed, "/orders/5").await, "/orders/{id}?id=5");

    // `Router::layer` applies the layer per route too; unmatched paths still get their 404.
    let layered = Router::new()
        .route("/orders/{id}", get(key_of))
        .layer(RedlockLayer::new(n.redlock.clone(), key::param("id")));
    assert_eq!(key_for(&layered, "/orders/5").await, "5");
    assert_eq!(
        call(&layered, Method::GET, "/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let layered = Router::new()
        .route("/orders/{id}", get(key_of))
        .layer(RedlockLayer::new(n.redlock.clone(), key::route()));
    assert_eq!(key_for(&layered, "/orders/5").await, "/orders/{id}?id=5");
    let _held = n.redlock.try_acquire("/nope").await.unwrap();
    assert_eq!(
        call(&layered, Method::GET, "/nope").await.status,
        StatusCode::NOT_FOUND
    );

    // Wrapping the whole router as a service: no routing information yet. `param` refuses
    // loudly, `route` falls back to the path.
    let router = Router::new().route("/orders/{id}", get(key_of));
    let outside = RedlockLayer::new(n.redlock.clone(), key::param("id")).layer(router.clone());
    let (status, body) = oneshot(outside, "/orders/5").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("Router::layer"), "{body}");

    let outside = RedlockLayer::new(n.redlock.clone(), key::route()).layer(router);
    assert_eq!(
        oneshot(outside, "/orders/5").await,
        (StatusCode::OK, "/orders/5".to_owned())
    );
}

async fn oneshot<S, B>(service: S, uri: &str) -> (StatusCode, String)
where
    S: tower::Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}
