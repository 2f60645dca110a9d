//! Single-instance mode: one node is a quorum of 1 of 1. Everything works as with five
//! nodes (the engine, fencing, multi-key locks, the layer and the extractors); what it
//! cannot give is tolerance to that node's failure: while it is down every acquisition
//! fails closed (`Unavailable`, a `503` over HTTP), never unlocked.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use http::{Method, StatusCode};
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, LockError, LockOptions, Redlock};

use crate::support::*;

async fn single_node() -> (tower_redlock::testkit::LocalCluster, Redlock) {
    let node = cluster(1).await;
    let redlock = builder(node.urls())
        .fencing(true)
        .build()
        .await
        .expect("an engine on one node");
    (node, redlock)
}

#[tokio::test]
async fn one_node_is_a_quorum_of_one_and_every_engine_feature_works() {
    let (_node, redlock) = single_node().await;
    assert_eq!((redlock.node_count(), redlock.quorum()), (1, 1));

    let first = redlock.acquire("single:a").await.expect("free");
    let token = first.fencing_token().expect("fencing is on");
    assert_contended(&redlock, "single:a").await;
    first.extend(Duration::from_secs(5)).await.expect("extend");
    first.release().await.expect("release");

    let second = redlock.acquire("single:a").await.expect("free again");
    assert!(second.fencing_token().unwrap() > token, "tokens only go up");
    drop(second);

    let both = redlock
        .acquire_many(["single:b", "single:c"])
        .await
        .expect("a multi-key lock");
    assert_contended(&redlock, "single:c").await;
    both.release().await.unwrap();
    let value = redlock
        .with_lock("single:c", |_lock| async { 42 })
        .await
        .expect("with_lock");
    assert_eq!(value, 42);
    assert!(redlock.health().await.is_healthy());
}

#[tokio::test]
async fn the_layer_and_the_extractor_work_on_one_node() {
    let (_node, redlock) = single_node().await;
    let gate = Gate::new();
    let entered = Signal::default();
    let (g, e) = (gate.clone(), entered.clone());
    let app = Router::new().route(
        "/orders/{id}/pay",
        post(move |lock: HeldLock| {
            let (g, e) = (g.clone(), e.clone());
            async move {
                e.notify();
                g.wait().await;
                format!("paid with token {}", lock.fencing_token().unwrap())
            }
        })
        .layer(RedlockLayer::new(redlock.clone(), key::param("id"))),
    );
    let server = serve(app).await;
    let holder = tokio::spawn(http(server.addr, Method::POST, "/orders/42/pay"));
    within("the holder enters", entered.wait()).await;
    let second = http(server.addr, Method::POST, "/orders/42/pay").await;
    second.problem(423);
    assert!(second.retry_after().is_some(), "{second:?}");
    gate.open();
    let first = within("the holder", holder).await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(first.body.starts_with("paid with token "), "{first:?}");
}

#[tokio::test]
async fn with_its_one_node_down_every_acquisition_fails_closed() {
    let (node, redlock) = single_node().await;
    let app = Router::new().route(
        "/orders/{id}/pay",
        post(|| async { "ran unlocked" })
            .layer(RedlockLayer::new(redlock.clone(), key::param("id"))),
    );
    node.kill(0).await.unwrap();
    let err = redlock
        .acquire_with("single:down", LockOptions::new().no_retry())
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    let reply = call(&app, Method::POST, "/orders/7/pay").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(!reply.body.contains("ran unlocked"));

    node.restart(0).await.unwrap();
    let ok = eventually(NO_HANG, || async {
        redlock
            .acquire_with("single:down", LockOptions::new().no_retry())
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "the node answers again");
}
