//! How long the lease is held: long handlers, disconnects, panics, early release, bodies.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_redlock::HeldLock;
use tower_redlock::layer::{RedlockLayer, key};

use crate::apps::*;
use crate::support::*;

#[tokio::test]
async fn handler_running_three_ttls_keeps_the_lock() {
    // Long enough that a loaded machine still extends in time (node timeout: ttl / 4).
    let ttl = Duration::from_millis(1200);
    let n = nodes(ttl).await;
    let (entered, gate) = (Signal::default(), Gate::new());
    let (e, g) = (entered.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/slow",
            post(move || {
                let (e, g) = (e.clone(), g.clone());
                async move {
                    e.notify();
                    g.wait().await;
                    "done"
                }
            }),
        )
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("slow")));
    let first = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, "/slow").await }
    });
    entered.wait().await;
    // Three ttls later the watchdog has kept the lease alive.
    tokio::time::sleep(3 * ttl).await;
    assert!(is_held(&n.redlock, "slow").await);
    call(&app, Method::POST, "/slow").await.problem(423);
    gate.open();
    let reply = within("the slow handler", first).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "done")
    );
    assert!(!is_held(&n.redlock, "slow").await);
}

#[tokio::test]
async fn client_disconnect_frees_the_lock() {
    // A 10 s ttl: only a release (not expiry) can free it within the 5 s we wait.
    let n = nodes(Duration::from_secs(10)).await;
    let (app, entered, dropped) =
        hanging_app(RedlockLayer::new(n.redlock.clone(), key::constant("hang")));
    let server = serve(app).await;

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /hang HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    entered.wait().await;
    assert!(is_held(&n.redlock, "hang").await);
    drop(stream);

    dropped.wait().await;
    assert!(eventually_free(&n.redlock, "hang", Duration::from_secs(5)).await);
}

#[tokio::test]
async fn panic_in_handler_frees_the_lock() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new()
        .route(
            "/boom",
            post(|| async {
                panic!("handler panics on purpose (test)");
                #[allow(unreachable_code)]
                "unreachable"
            }),
        )
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("boom")));
    let server = serve(app).await;
    let result = within("the request", send(server.addr, Method::POST, "/boom")).await;
    assert!(result.is_err(), "the connection should close: {result:?}");
    assert!(eventually_free(&n.redlock, "boom", Duration::from_secs(5)).await);
    // The server survived.
    let again = within("the request", send(server.addr, Method::POST, "/boom")).await;
    assert!(again.is_err());
}

#[tokio::test]
async fn early_release_from_the_handler() {
    let n = nodes(Duration::from_secs(10)).await;
    let (released, gate) = (Signal::default(), Gate::new());
    let (r, g) = (released.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/early",
            post(move |lock: HeldLock| {
                let (r, g) = (r.clone(), g.clone());
                async move {
                    lock.release().await.unwrap();
                    r.notify();
                    g.wait().await;
                    "finished unlocked"
                }
            }),
        )
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("early")));
    let request = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, "/early").await }
    });
    released.wait().await;
    // Free while the handler still runs...
    assert!(!is_held(&n.redlock, "early").await);
    gate.open();
    // ...and an early release is not a lost lease: the handler's answer goes out.
    let reply = within("the handler", request).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "finished unlocked")
    );
}

#[tokio::test]
async fn hold_until_body_end_keeps_the_lock_while_streaming() {
    let n = nodes(Duration::from_secs(10)).await;
    let (app, slot) = streaming_export(&n.redlock);
    let server = serve(app).await;

    let response = within(
        "the response head",
        send(server.addr, Method::POST, "/export"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tx = slot.lock().unwrap().take().expect("the handler ran");
    let mut body = response.into_body();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");

    // Mid-stream the lock is still held.
    http(server.addr, Method::POST, "/export")
        .await
        .problem(423);
    assert!(is_held(&n.redlock, "export").await);

    tx.send(Bytes::from_static(b"last")).await.unwrap();
    drop(tx);
    let rest = within("the body end", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "last");
    // Released before the end of the body was signalled.
    assert!(!is_held(&n.redlock, "export").await);
}

#[tokio::test]
async fn without_hold_the_lock_is_released_before_the_body_streams() {
    let n = nodes(Duration::from_secs(10)).await;
    let app = Router::new()
        .route(
            "/export",
            post(|| async {
                let chunks = futures_util::stream::once(async {
                    std::future::pending::<()>().await;
                    Ok::<_, std::io::Error>(Bytes::new())
                });
                Body::from_stream(chunks)
            }),
        )
        .layer(RedlockLayer::new(
            n.redlock.clone(),
            key::constant("export"),
        ));
    let server = serve(app).await;
    let response = within(
        "the response head",
        send(server.addr, Method::POST, "/export"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!is_held(&n.redlock, "export").await);
}
