//! Shared leases over HTTP: GET shares, POST excludes (`423`); permits answer `429` with
//! `Retry-After`; the extractor takes the mode its key names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::routing::get;
use http::request::Parts;
use http::{Method, StatusCode};
use tower_redlock::LeaseMode;
use tower_redlock::extract::{LockKey, Locked};
use tower_redlock::layer::RedlockLayer;
use tower_redlock::layer::key::{self, KeyError};

use crate::support::*;

/// Handlers count who is inside and wait at the gate.
#[derive(Clone)]
struct Inside {
    gate: Gate,
    now: Arc<AtomicU32>,
}

impl Inside {
    fn new() -> Self {
        Inside {
            gate: Gate::new(),
            now: Arc::default(),
        }
    }

    async fn enter(self) -> &'static str {
        self.now.fetch_add(1, Ordering::SeqCst);
        self.gate.wait().await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        "done"
    }

    async fn reach(&self, n: u32) {
        let now = &self.now;
        assert!(
            eventually(NO_HANG, || async { now.load(Ordering::SeqCst) == n }).await,
            "{n} handlers never ran at once"
        );
    }
}

fn spawn_call(app: &Router, method: Method, uri: &'static str) -> tokio::task::JoinHandle<Reply> {
    let app = app.clone();
    tokio::spawn(async move { call(&app, method, uri).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shares_and_post_excludes() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let inside = Inside::new();
    let handler = {
        let inside = inside.clone();
        move || inside.clone().enter()
    };
    let layer =
        RedlockLayer::new(redlock, key::param("id")).shared_for(&[Method::GET, Method::HEAD]);
    let app = Router::new().route(
        "/reports/{id}",
        get(handler.clone()).post(handler).layer(layer),
    );
    let (a, b) = (
        spawn_call(&app, Method::GET, "/reports/7"),
        spawn_call(&app, Method::GET, "/reports/7"),
    );
    // Both GETs run at once.
    inside.reach(2).await;
    let refused = call(&app, Method::POST, "/reports/7").await;
    refused.problem(423);
    assert!(refused.retry_after().is_some());
    inside.gate.open();
    for get in [a, b] {
        assert_eq!(within("a GET", get).await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        call(&app, Method::POST, "/reports/7").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_answer_429_with_retry_after() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let inside = Inside::new();
    let handler = {
        let inside = inside.clone();
        move || inside.clone().enter()
    };
    let layer = RedlockLayer::new(redlock, key::param("tenant")).permits(2);
    let app = Router::new().route("/export/{tenant}", get(handler).layer(layer));
    let running = [
        spawn_call(&app, Method::GET, "/export/acme"),
        spawn_call(&app, Method::GET, "/export/acme"),
    ];
    inside.reach(2).await;
    let refused = call(&app, Method::GET, "/export/acme").await;
    let doc = refused.problem(429);
    assert_eq!(doc["type"], "urn:tower-redlock:problem:capacity");
    assert!(refused.retry_after().unwrap() >= 1);
    // Another tenant has its own permits.
    let other = spawn_call(&app, Method::GET, "/export/other");
    inside.reach(3).await;
    inside.gate.open();
    for call in running.into_iter().chain([other]) {
        assert_eq!(
            within("an export", call).await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&app, Method::GET, "/export/acme").await.status,
        StatusCode::OK
    );
}

struct ReadReport;

impl LockKey for ReadReport {
    fn key(_: &Parts) -> Result<String, KeyError> {
        Ok("report:x".to_owned())
    }
    fn mode() -> LeaseMode {
        LeaseMode::Read
    }
}

struct WriteReport;

impl LockKey for WriteReport {
    fn key(_: &Parts) -> Result<String, KeyError> {
        Ok("report:x".to_owned())
    }
    fn mode() -> LeaseMode {
        LeaseMode::Write
    }
}

struct OneExport;

impl LockKey for OneExport {
    fn key(_: &Parts) -> Result<String, KeyError> {
        Ok("export:x".to_owned())
    }
    fn mode() -> LeaseMode {
        LeaseMode::Permit(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_takes_its_keys_mode() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let inside = Inside::new();
    let (read, export) = (inside.clone(), inside.clone());
    let app: Router = Router::new()
        .route(
            "/read",
            get(move |lock: Locked<ReadReport>| {
                let read = read.clone();
                async move {
                    let done = read.enter().await;
                    // Released before the response: the last `/write` below must not race
                    // a background release.
                    lock.into_inner().release().await.unwrap();
                    done
                }
            }),
        )
        .route("/write", get(|_: Locked<WriteReport>| async { "written" }))
        .route(
            "/export",
            get(move |lock: Locked<OneExport>| {
                let export = export.clone();
                async move {
                    let done = export.enter().await;
                    lock.into_inner().release().await.unwrap();
                    done
                }
            }),
        )
        .with_state(redlock);
    let readers = [
        spawn_call(&app, Method::GET, "/read"),
        spawn_call(&app, Method::GET, "/read"),
    ];
    let export = spawn_call(&app, Method::GET, "/export");
    inside.reach(3).await;
    call(&app, Method::GET, "/write").await.problem(423);
    call(&app, Method::GET, "/export").await.problem(429);
    inside.gate.open();
    for call in readers.into_iter().chain([export]) {
        assert_eq!(
            within("a handler", call).await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&app, Method::GET, "/write").await.status,
        StatusCode::OK
    );
}
