//! Node failures: lost leases while handlers run, and an unreachable quorum.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use http::{Method, StatusCode};
use tower_redlock::HeldLock;
use tower_redlock::layer::OnLost;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::testkit::LocalCluster;

use crate::apps::*;
use crate::support::*;

const TTL: Duration = Duration::from_millis(500);

fn resume_all(cluster: &LocalCluster) {
    for i in 0..cluster.len() {
        let _ = cluster.resume(i);
    }
}

#[tokio::test]
async fn majority_paused_cancels_the_handler_with_503() {
    let n = nodes(TTL).await;
    let (app, entered, dropped) =
        hanging_app(RedlockLayer::new(n.redlock.clone(), key::constant("job")));
    let request = tokio::spawn(async move { call(&app, Method::POST, "/hang").await });
    entered.wait().await;
    for i in 0..3 {
        n.cluster.pause(i).unwrap();
    }
    let reply = within("the 503", request).await.unwrap();
    resume_all(&n.cluster);
    let doc = reply.problem(503);
    assert_eq!(doc["type"], "urn:tower-redlock:problem:lock-lost");
    dropped.wait().await;
}

#[tokio::test]
async fn on_lost_continue_lets_the_handler_finish() {
    let n = nodes(TTL).await;
    let entered = Signal::default();
    let e = entered.clone();
    let app = Router::new()
        .route(
            "/job",
            post(move |lock: HeldLock| {
                let e = e.clone();
                async move {
                    e.notify();
                    within("the loss", lock.lost()).await;
                    "finished after the loss"
                }
            }),
        )
        .layer(
            RedlockLayer::new(n.redlock.clone(), key::constant("job")).on_lost(OnLost::Continue),
        );
    let request = tokio::spawn(async move { call(&app, Method::POST, "/job").await });
    entered.wait().await;
    for i in 0..3 {
        n.cluster.pause(i).unwrap();
    }
    let reply = within("the handler", request).await;
    resume_all(&n.cluster);
    let reply = reply.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "finished after the loss")
    );
}

#[tokio::test]
async fn three_nodes_down_is_503_without_retrying() {
    let n = nodes(Duration::from_secs(10)).await;
    for i in 0..3 {
        n.cluster.kill(i).await.unwrap();
    }
    let app = Router::new()
        .route("/x", post(|| async { "ok" }))
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("x")));
    let server = serve(app).await;
    let started = Instant::now();
    let reply = http(server.addr, Method::POST, "/x").await;
    // One attempt, no retries: the answer comes well before the engine's default retry
    // deadline (10 s) would have ended a retrying request.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let doc = reply.problem(503);
    assert_eq!(doc["type"], "urn:tower-redlock:problem:lock-unavailable");
    assert!(reply.retry_after().unwrap() >= 1);
}

#[tokio::test]
async fn lease_lost_while_streaming_aborts_the_body() {
    use bytes::Bytes;
    use http_body_util::BodyExt;

    let n = nodes(TTL).await;
    let (app, slot) = streaming_export(&n.redlock);
    let server = serve(app).await;
    let response = within("the head", send(server.addr, Method::POST, "/export"))
        .await
        .unwrap();
    let tx = slot.lock().unwrap().take().expect("the handler ran");
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let mut body = response.into_body();
    let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");

    for i in 0..3 {
        n.cluster.pause(i).unwrap();
    }
    // The stream is cut off (the client sees an incomplete body), not completed.
    let rest = within("the body to be aborted", body.collect()).await;
    resume_all(&n.cluster);
    assert!(rest.is_err(), "{rest:?}");
    drop(tx);
}
