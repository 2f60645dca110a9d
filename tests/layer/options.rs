//! `Retry-After` from the layer's hold estimate, and layer options that merge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::post;
use http::{Method, StatusCode};
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::testkit::{LocalCluster, eventually};
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

use crate::apps::*;
use crate::support::*;

/// How long the payment handler holds its lock.
const HOLD: Duration = Duration::from_secs(1);

/// Calls of `command` (lower case) all nodes of `cluster` have run.
async fn calls(cluster: &LocalCluster, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    let mut total = 0;
    for i in 0..cluster.len() {
        let mut conn = raw(cluster, i).await;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        total += stats
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Where the next gated request finds its signal and gate.
type GateSlot = Arc<Mutex<Option<(Signal, Gate)>>>;

/// `POST /orders/{id}/pay` under a 10 s ttl: holds [`HOLD`], or with `x-gate` until the
/// gate put in `slot` opens (signalling once it holds the lock).
fn payments(redlock: &Redlock, slot: &GateSlot) -> Router {
    let slot = slot.clone();
    Router::new().route(
        "/orders/{id}/pay",
        post(move |request: Request| {
            let slot = slot.clone();
            async move {
                if request.headers().contains_key("x-gate") {
                    let (entered, gate) = slot.lock().unwrap().take().expect("a gate");
                    entered.notify();
                    gate.wait().await;
                } else {
                    tokio::time::sleep(HOLD).await;
                }
                "paid"
            }
        })
        .layer(RedlockLayer::new(
            redlock.clone(),
            key::prefixed("order:", key::param("id")),
        )),
    )
}

/// Starts a gated payment of order 1 and waits until it holds the lock; open the returned
/// gate to let it finish.
async fn hold_order_1(app: &Router, slot: &GateSlot) -> (Gate, tokio::task::JoinHandle<Reply>) {
    let (entered, gate) = (Signal::default(), Gate::new());
    *slot.lock().unwrap() = Some((entered.clone(), gate.clone()));
    let request = http::Request::post("/orders/1/pay")
        .header("x-gate", "1")
        .body(axum::body::Body::empty())
        .unwrap();
    let app = app.clone();
    let holder = tokio::spawn(async move { call_request(&app, request).await });
    entered.wait().await;
    (gate, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_the_routes_typical_hold_not_the_holders_ttl() {
    let n = nodes(Duration::from_secs(10)).await;
    let slot = GateSlot::default();
    let app = payments(&n.redlock, &slot);

    // Nothing observed yet: the holder's remaining ttl, asked from the nodes.
    let (gate, holder) = hold_order_1(&app, &slot).await;
    let before = calls(&n.cluster, "pttl").await;
    let refused = call(&app, Method::POST, "/orders/1/pay").await;
    refused.problem(423);
    assert!(refused.retry_after().unwrap() >= 9, "{refused:?}");
    assert!(calls(&n.cluster, "pttl").await > before, "PTTL asked");
    gate.open();
    let held = within("the holder", holder).await.unwrap();
    assert_eq!(held.status, StatusCode::OK);

    // A few holds of about a second each.
    for _ in 0..4 {
        let paid = within("a payment", call(&app, Method::POST, "/orders/1/pay")).await;
        assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    }

    // Now a collision is told the typical hold (about a second, rounded up), not the
    // holder's 10 s ttl, and costs no PTTL round trip.
    let (gate, holder) = hold_order_1(&app, &slot).await;
    let before = calls(&n.cluster, "pttl").await;
    let refused = call(&app, Method::POST, "/orders/1/pay").await;
    let doc = refused.problem(423);
    let after = refused.retry_after().unwrap();
    assert!((1..=2).contains(&after), "Retry-After {after}: {refused:?}");
    let ms = doc["retry_after_ms"].as_u64().unwrap();
    assert!((700..=2000).contains(&ms), "{doc}");
    assert_eq!(calls(&n.cluster, "pttl").await, before, "no PTTL asked");
    gate.open();
    let held = within("the holder", holder).await.unwrap();
    assert_eq!(held.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_options_keep_the_layers_fail_fast_default() {
    let n = nodes(Duration::from_secs(10)).await;
    // An engine whose own default waits long: a layer that picked it up would wait for
    // the holder instead of answering 423.
    let patient = Redlock::builder()
        .nodes(n.cluster.urls())
        .ttl(Duration::from_secs(10))
        .node_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::until(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    let (entered, gate) = (Signal::default(), Gate::new());
    let (e, g) = (entered.clone(), gate.clone());
    let holding = Router::new().route(
        "/hold",
        post(move || {
            let (e, g) = (e.clone(), g.clone());
            async move {
                e.notify();
                g.wait().await;
                "done"
            }
        })
        .layer(RedlockLayer::new(patient.clone(), key::constant("report"))),
    );
    // Options set in any order, none resetting another.
    let layers = [
        RedlockLayer::new(patient.clone(), key::constant("report"))
            .lock_options(LockOptions::new().ttl(Duration::from_secs(5))),
        RedlockLayer::new(patient.clone(), key::constant("report"))
            .ttl(Duration::from_secs(5))
            .lock_options(LockOptions::new().fencing(true))
            .max_hold(Duration::from_secs(30))
            .label("report"),
        RedlockLayer::new(patient.clone(), key::constant("report"))
            .label("report")
            .lock_options(LockOptions::new().max_hold(Duration::from_secs(30)))
            .ttl(Duration::from_secs(5)),
    ];
    let holder = tokio::spawn({
        let holding = holding.clone();
        async move { call(&holding, Method::POST, "/hold").await }
    });
    entered.wait().await;
    for layer in layers {
        let app = Router::new().route("/report", post(|| async { "ran" }).layer(layer));
        // The holder waits at the gate until every check is done: only a layer that
        // fails fast answers before `within` gives up.
        let refused = within("a fail-fast 423", call(&app, Method::POST, "/report")).await;
        refused.problem(423);
    }
    // `wait` survives later options too, on an engine that would not wait.
    let hasty = Redlock::builder()
        .nodes(n.cluster.urls())
        .ttl(Duration::from_secs(10))
        .node_timeout(Duration::from_secs(1))
        .retry(RetryPolicy::none())
        .build()
        .await
        .unwrap();
    let waiting = RedlockLayer::new(hasty, key::constant("report"))
        .wait(Duration::from_secs(30))
        .lock_options(LockOptions::new().ttl(Duration::from_secs(5)))
        .max_hold(Duration::from_secs(30));
    let app = Router::new().route("/report", post(|| async { "ran" }).layer(waiting));
    // Every bare `SET` so far (the holder's and the two unfenced refused attempts, on five
    // nodes) has landed, late ones included; then the waiter's first attempt, refused (the
    // holder is still at the gate), lands before the gate opens.
    assert!(
        eventually(NO_HANG, || async {
            calls(&n.cluster, "set").await >= 3 * 5
        })
        .await
    );
    let sets = calls(&n.cluster, "set").await;
    let waiter = tokio::spawn(async move { call(&app, Method::POST, "/report").await });
    assert!(
        eventually(NO_HANG, || async {
            calls(&n.cluster, "set").await >= sets + 5
        })
        .await
    );
    gate.open();
    assert_eq!(
        within("the holder", holder).await.unwrap().status,
        StatusCode::OK
    );
    let waited = within("the waiter", waiter).await.unwrap();
    assert_eq!(
        (waited.status, waited.body.as_str()),
        (StatusCode::OK, "ran")
    );
}
