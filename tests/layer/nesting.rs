//! Nested layers: every layer's lease is reachable (`HeldLocks`), `HeldLock` is the innermost,
//! and two layers on one key are a clear `500`, logged once, not a request waiting for itself.

use axum::Router;
use axum::routing::post;
use http::{Method, StatusCode};
use tower_redlock::HeldLock;
use tower_redlock::layer::HeldLocks;
use tower_redlock::layer::{RedlockLayer, key};

use crate::support::*;
use crate::wire::patient_nodes;

#[tokio::test]
async fn nested_layers_reach_every_lease() {
    let n = patient_nodes().await;
    let handler = post(|inner: HeldLock, all: HeldLocks| async move {
        let keys: Vec<&str> = all.iter().map(HeldLock::key).collect();
        let held = all.iter().all(HeldLock::is_held);
        let outermost = all.outermost().map(HeldLock::key);
        format!(
            "{} | innermost {} | outermost {outermost:?} | all held {held}",
            keys.join(","),
            inner.key()
        )
    });
    // The later `route_layer` is the outer one.
    let app = Router::new()
        .route("/transfer", handler)
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::constant("inner")))
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::constant("outer")));

    let reply = call(&app, Method::POST, "/transfer").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            StatusCode::OK,
            "outer,inner | innermost inner | outermost Some(\"outer\") | all held true"
        )
    );
    assert!(!is_held(&n.redlock, "outer").await);
    assert!(!is_held(&n.redlock, "inner").await);
}

#[tokio::test]
async fn nested_layers_on_one_key_are_a_misconfiguration() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::ERROR)
        .finish();
    // The test runs on one thread: every task logs here.
    let _logging = tracing::subscriber::set_default(subscriber);

    let n = patient_nodes().await;
    let app = Router::new()
        .route("/twice", post(|| async { "ran" }))
        // Even waiting, the inner layer would never get the key its outer layer holds.
        .route_layer(RedlockLayer::new(n.redlock.clone(), key::constant("ledger-7")).wait(NO_HANG))
        .route_layer(RedlockLayer::new(
            n.redlock.clone(),
            key::constant("ledger-7"),
        ));

    for _ in 0..3 {
        let reply = within("the answer", call(&app, Method::POST, "/twice")).await;
        let doc = reply.problem(500);
        assert_eq!(doc["type"], "urn:tower-redlock:problem:lock-misconfigured");
        assert!(
            !reply.body.contains("ledger-7"),
            "the key leaked: {}",
            reply.body
        );
        assert!(!is_held(&n.redlock, "ledger-7").await);
    }
    assert_eq!(logs.count("lock the same key"), 1);
}
