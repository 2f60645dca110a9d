//! One resource is one key, and a missing key is not a silent pass: the ready-made
//! extractors through real axum routing (issue 11 defect 9, issue 16 items 1 and 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// `POST /orders/{id}/pay` with a `Path<u64>` handler that counts its runs.
fn orders<K>(redlock: &Redlock, template: &str, key: K, runs: &Arc<AtomicUsize>) -> Router
where
    K: KeyExtractor + Send + Sync + 'static,
{
    let runs = runs.clone();
    Router::new()
        .route(
            template,
            post(move |Path(id): Path<u64>, lock: Option<HeldLock>| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let key = lock.map_or("unlocked".to_owned(), |l| l.key().to_owned());
                    format!("paid {id} under {key}")
                }
            }),
        )
        .route_layer(RedlockLayer::new(redlock.clone(), key))
}

#[tokio::test]
async fn a_route_without_the_parameter_is_refused_not_run_unlocked() {
    let n = nodes(Duration::from_secs(10)).await;
    let runs = Arc::new(AtomicUsize::new(0));

    // The typo of issue 11: `{order_id}` in the route, `param("id")` in the key.
    for app in [
        orders(
            &n.redlock,
            "/orders/{order_id}/pay",
            key::param("id"),
            &runs,
        ),
        orders(
            &n.redlock,
            "/orders/{order_id}/pay",
            key::prefixed("order:", key::param_as::<u64>("id")),
            &runs,
        ),
    ] {
        let reply = call(&app, Method::POST, "/orders/42/pay").await;
        let doc = reply.problem(500);
        assert!(
            doc["detail"].as_str().unwrap().contains("optional"),
            "{doc}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler ran unlocked");

    // The explicit opt-in: `Router::layer` over routes of which only some have `{id}`.
    let mixed = Router::new()
        .route("/orders/{id}/pay", post(key_of))
        .route("/status", get(key_of))
        .layer(RedlockLayer::new(
            n.redlock.clone(),
            key::prefixed("order:", key::param_as::<u64>("id").optional()),
        ));
    assert_eq!(
        call(&mixed, Method::POST, "/orders/042/pay").await.body,
        "order:42"
    );
    let status = call(&mixed, Method::GET, "/status").await;
    assert_eq!(
        (status.status, status.body.as_str()),
        (StatusCode::OK, "unlocked")
    );

    // Without the opt-in, the route without `{id}` is refused too.
    let strict = Router::new()
        .route("/orders/{id}/pay", post(key_of))
        .route("/status", get(key_of))
        .layer(RedlockLayer::new(n.redlock.clone(), key::param("id")));
    call(&strict, Method::GET, "/status").await.problem(500);
    assert_eq!(call(&strict, Method::POST, "/orders/7/pay").await.body, "7");
}

#[tokio::test]
async fn spellings_of_one_id_are_one_key_with_param_as() {
    let n = nodes(Duration::from_secs(10)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let app = orders(
        &n.redlock,
        "/orders/{id}/pay",
        key::prefixed("order:", key::param_as::<u64>("id")),
        &runs,
    );
    let spellings = [
        "/orders/42/pay",
        "/orders/042/pay",
        "/orders/+42/pay",
        "/orders/%34%32/pay",
    ];

    // While order 42 is held, every spelling of it waits its turn (423).
    let held = n.redlock.try_acquire("order:42").await.unwrap();
    for uri in spellings {
        call(&app, Method::POST, uri).await.problem(423);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    held.release().await.unwrap();

    for uri in spellings {
        let reply = call(&app, Method::POST, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {reply:?}");
        assert_eq!(reply.body, "paid 42 under order:42", "{uri}");
    }

    // Not a u64: 400, and the body does not echo the value.
    for (uri, value) in [
        ("/orders/4x2/pay", "4x2"),
        (
            "/orders/99999999999999999999999/pay",
            "99999999999999999999999",
        ),
        ("/orders/-1/pay", "-1"),
    ] {
        let reply = call(&app, Method::POST, uri).await;
        let doc = reply.problem(400);
        assert!(!reply.body.contains(value), "{doc}");
        assert!(doc["detail"].as_str().unwrap().contains("`id`"), "{doc}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), spellings.len());
}

#[tokio::test]
async fn path_and_route_keys_are_decoded_and_normalised() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new()
        .route(
            "/p/{id}",
            get(key_of).layer(RedlockLayer::new(n.redlock.clone(), key::path())),
        )
        .route(
            "/files/{*rest}",
            get(key_of).layer(RedlockLayer::new(n.redlock.clone(), key::path())),
        )
        .route(
            "/r/{id}",
            get(key_of).layer(RedlockLayer::new(n.redlock.clone(), key::route())),
        );
    let key = async |uri: &str| {
        let reply = call(&app, Method::GET, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {reply:?}");
        reply.body
    };

    // One axum route value, one key.
    assert_eq!(key("/p/42").await, "/p/42");
    assert_eq!(key("/p/%34%32").await, "/p/42");
    assert_eq!(key("/p/a%20b").await, "/p/a b");
    assert_eq!(key("/r/%34%32").await, "/r/{id}?id=42");

    // What path() normalises: `//`, `.`, `..` (also encoded), a trailing slash.
    for uri in [
        "/files/a/b",
        "/files/a/b/",
        "/files//a///b",
        "/files/a/./b",
        "/files/a/x/../b",
        "/files/a/x/%2E%2E/b",
        "/files/%61/b",
    ] {
        assert_eq!(key(uri).await, "/files/a/b", "{uri}");
    }
    // An encoded slash stays inside its segment.
    assert_eq!(key("/files/a%2fb").await, "/files/a%2Fb");

    // Bad encodings and control characters are refused, without echoing the path.
    for uri in [
        "/p/%ZZ",
        "/p/%FF",
        "/p/%C3%28",
        "/p/%00",
        "/p/a%0Ab",
        "/files/%7F",
        "/r/%00",
        "/r/a%1Bb",
    ] {
        let reply = call(&app, Method::GET, uri).await;
        reply.problem(400);
        assert!(
            !reply.body.contains("/p/") && !reply.body.contains("/r/"),
            "{reply:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_header_is_400_unless_optional() {
    let n = nodes(Duration::from_secs(10)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let counted = move |lock: Option<HeldLock>| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            key_of(lock).await
        }
    };
    let app = Router::new()
        .route(
            "/required",
            post(counted.clone()).layer(RedlockLayer::new(
                n.redlock.clone(),
                key::prefixed("tenant:", key::header("x-tenant")),
            )),
        )
        .route(
            "/optional",
            post(counted).layer(RedlockLayer::new(
                n.redlock.clone(),
                key::prefixed("tenant:", key::header("x-tenant").optional()),
            )),
        )
        .route(
            "/bad-name",
            post(key_of).layer(RedlockLayer::new(
                n.redlock.clone(),
                key::header("x tenant"),
            )),
        );
    let doc = call(&app, Method::POST, "/required").await.problem(400);
    assert!(
        doc["detail"].as_str().unwrap().contains("x-tenant"),
        "{doc}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "ran without the lock");
    assert_eq!(call(&app, Method::POST, "/optional").await.body, "unlocked");
    call(&app, Method::POST, "/bad-name").await.problem(500);
}

/// Router answers for a `CONNECT host:443` (authority form: an empty path).
async fn connect_status(app: &Router) -> StatusCode {
    let reply = call(app, Method::CONNECT, "example.com:443").await;
    assert!(
        !reply.body.contains("lock"),
        "the layer answered: {reply:?}"
    );
    reply.status
}

#[tokio::test]
async fn connect_without_a_path_gets_the_routers_own_answer() {
    let n = nodes(Duration::from_secs(10)).await;
    let routes = || {
        Router::new()
            .route("/orders/{id}", get(key_of).post(key_of))
            .route("/status", get(key_of))
    };
    let bare = connect_status(&routes()).await;
    assert!(bare.is_client_error(), "{bare}");

    let r = &n.redlock;
    let layered = [
        routes().layer(RedlockLayer::new(r.clone(), key::route())),
        routes().layer(RedlockLayer::new(r.clone(), key::param("id"))),
        routes().layer(RedlockLayer::new(r.clone(), key::param_as::<u64>("id"))),
        routes().layer(RedlockLayer::new(r.clone(), key::path())),
        routes().layer(RedlockLayer::new(r.clone(), key::mutating(key::route()))),
    ];
    for app in &layered {
        assert_eq!(connect_status(app).await, bare);
    }

    // A whole router wrapped as a service: no routing data, the same answer.
    let outside = RedlockLayer::new(r.clone(), key::param("id")).layer(routes());
    let reply = tower::ServiceExt::oneshot(
        outside,
        http::Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), bare);

    // Through a real hyper server, as a client sends it.
    let server = serve(routes().layer(RedlockLayer::new(r.clone(), key::route()))).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = within("the CONNECT answer", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(
            read > 0,
            "connection closed: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with(&format!("HTTP/1.1 {}", bare.as_u16())),
        "{head}"
    );
}
