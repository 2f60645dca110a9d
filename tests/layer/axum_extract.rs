//! The axum extractors: `HeldLock`, `Locked<K>`, and `?` on `LockError`.

use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::request::Parts;
use http::{Method, StatusCode};
use tower_redlock::extract::{LockKey, Locked};
use tower_redlock::layer::Rejection;
use tower_redlock::layer::key::{self, KeyError, KeyExtractor};
use tower_redlock::{HeldLock, LockError, Redlock};

use crate::apps::*;
use crate::support::*;

#[tokio::test]
async fn held_lock_without_the_layer_is_500() {
    let app: Router = Router::new().route("/x", get(|_lock: HeldLock| async { "never" }));
    let reply = call(&app, Method::GET, "/x").await;
    let doc = reply.problem(500);
    assert!(
        doc["detail"].as_str().unwrap().contains("RedlockLayer"),
        "{doc}"
    );
    // The rejection, as axum's own: status and body without a response.
    let mut parts = http::Request::new(()).into_parts().0;
    let rejection = <HeldLock as FromRequestParts<()>>::from_request_parts(&mut parts, &())
        .await
        .unwrap_err();
    assert_eq!(rejection.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rejection.body_text(), reply.body);
}

#[tokio::test]
async fn rejection_status_and_body_text_match_its_response() {
    let rejection = Rejection::from(KeyError::new("send the order id"));
    let (status, body) = (rejection.status(), rejection.body_text());
    let reply = Reply::from_response(rejection.into_response()).await;
    reply.problem(400);
    assert_eq!((reply.status, reply.body), (status, body));
}

struct Job;

impl LockKey for Job {
    fn key(parts: &Parts) -> Result<String, KeyError> {
        let id = key::param("id").extract(parts)?;
        Ok(format!(
            "job:{}",
            id.ok_or_else(|| KeyError::new("no job id"))?
        ))
    }
}

#[tokio::test]
async fn locked_takes_the_lock_from_state() {
    let n = nodes(Duration::from_secs(10)).await;
    let (entered, gate) = (Signal::default(), Gate::new());
    let (e, g) = (entered.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/jobs/{id}",
            post(move |lock: Locked<Job>| {
                let (e, g) = (e.clone(), g.clone());
                async move {
                    e.notify();
                    g.wait().await;
                    lock.key().to_owned()
                }
            }),
        )
        .with_state(n.redlock.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, "/jobs/7").await }
    });
    entered.wait().await;
    let second = call(&app, Method::POST, "/jobs/7").await;
    second.problem(423);
    assert!(second.retry_after().unwrap() >= 1);
    assert!(!second.body.contains("job:7"));
    gate.open();
    let first = within("the holder", first).await.unwrap();
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "job:7")
    );
    let other = within("another key", call(&app, Method::POST, "/jobs/8")).await;
    assert_eq!(other.status, StatusCode::OK);
    // Dropped with the handler: released in the background.
    assert!(eventually_free(&n.redlock, "job:7", Duration::from_secs(5)).await);
}

/// A state of the application's own, with the engine in it.
#[derive(Clone)]
struct AppState {
    redlock: Redlock,
    greeting: &'static str,
}

impl FromRef<AppState> for Redlock {
    fn from_ref(state: &AppState) -> Redlock {
        state.redlock.clone()
    }
}

#[tokio::test]
async fn locked_finds_the_redlock_in_a_custom_state_through_from_ref() {
    let n = nodes(Duration::from_secs(10)).await;
    async fn handler(State(state): State<AppState>, lock: Locked<Job>) -> String {
        let lock = lock.into_inner();
        let key = lock.key().to_owned();
        lock.release().await.unwrap();
        format!("{} {key}", state.greeting)
    }
    let app = Router::new()
        .route("/jobs/{id}", post(handler))
        .with_state(AppState {
            redlock: n.redlock.clone(),
            greeting: "hello",
        });
    let reply = call(&app, Method::POST, "/jobs/1").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello job:1")
    );
    assert!(!is_held(&n.redlock, "job:1").await);
}

#[tokio::test]
async fn question_mark_on_lock_error() {
    let n = nodes(Duration::from_secs(10)).await;
    async fn settle(State(redlock): State<Redlock>) -> Result<&'static str, LockError> {
        let lock = redlock.try_acquire("settlement").await?;
        lock.release().await?;
        Ok("settled")
    }
    let app = Router::new()
        .route("/settle", post(settle))
        .with_state(n.redlock.clone());
    assert_eq!(call(&app, Method::POST, "/settle").await.body, "settled");
    let held = n.redlock.try_acquire("settlement").await.unwrap();
    let reply = call(&app, Method::POST, "/settle").await;
    reply.problem(423);
    assert!(reply.retry_after().unwrap() >= 1);
    assert!(!reply.body.contains("settlement"));
    held.release().await.unwrap();
}
