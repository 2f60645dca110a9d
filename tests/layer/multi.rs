//! Three OS processes serving the same app on five shared nodes: the locks hold across them.
//!
//! The test re-executes its own binary in "server mode" (`TOWER_REDLOCK_INSTANCE=1`, running
//! only the ignored `multi::instance_server` test), reads each child's port from its stdout,
//! and spreads 300 concurrent requests over 10 keys. Each request does a non-atomic
//! read-modify-write of a counter in a separate Redis node under the lock, so any overlap
//! would lose an increment.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use http::{Method, StatusCode};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_redlock::layer::{RedlockLayer, key};

use crate::support::child::{ChildProcess, exit_when_parent_goes};
use crate::support::*;

const INSTANCE: &str = "TOWER_REDLOCK_INSTANCE";
const NODES: &str = "TOWER_REDLOCK_TEST_NODES";
const COUNTER: &str = "TOWER_REDLOCK_TEST_COUNTER";
const KEYS: usize = 10;
const REQUESTS: usize = 300;

async fn increment(
    State(mut counter): State<MultiplexedConnection>,
    Path(id): Path<String>,
) -> Result<&'static str, StatusCode> {
    let name = format!("count:{id}");
    let error = |_| StatusCode::INTERNAL_SERVER_ERROR;
    let value: Option<u64> = counter.get(&name).await.map_err(error)?;
    // Widen the race window: without the lock, concurrent requests would overwrite.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let () = counter
        .set(&name, value.unwrap_or(0) + 1)
        .await
        .map_err(error)?;
    Ok("incremented")
}

/// Server mode: serves until killed. Does nothing unless started by the test below.
#[tokio::test]
#[ignore = "server mode of `three_processes_share_the_locks`, which starts it"]
async fn instance_server() {
    if std::env::var_os(INSTANCE).is_none() {
        return;
    }
    exit_when_parent_goes();
    let nodes: Vec<String> = std::env::var(NODES)
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    // Generous node timeout: the point is mutual exclusion, on a possibly loaded CI machine
    // (a slow answer would be a `503`, which the test does not accept).
    let redlock = tower_redlock::Redlock::builder()
        .nodes(nodes)
        .ttl(Duration::from_secs(10))
        .node_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    // Patient: a timed-out counter call would be a `500`, which the test does not accept.
    let counter = connect_url(&std::env::var(COUNTER).unwrap(), NO_HANG)
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/counters/{id}/increment",
            post(increment).layer(RedlockLayer::new(
                redlock,
                key::prefixed("counter:", key::param("id")),
            )),
        )
        .with_state(counter);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap().port());
    axum::serve(listener, app).await.unwrap();
}

/// Starts one instance (this binary in server mode) and reads its port.
async fn spawn_instance(nodes: &str, counter: &str) -> (ChildProcess, u16) {
    let env = [
        (INSTANCE, "1".to_owned()),
        (NODES, nodes.to_owned()),
        (COUNTER, counter.to_owned()),
    ];
    let mut child = ChildProcess::spawn_helper("multi::instance_server", &env);
    let line = child.wait_for_line("LISTENING ", NO_HANG).await;
    let port = line["LISTENING ".len()..].trim().parse::<u16>().unwrap();
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_locks() {
    // Nodes 0..5 hold the locks; node 5 holds the counters.
    let cluster = cluster(6).await;
    let urls = cluster.urls();
    let (lock_nodes, counter_url) = (urls[..5].join(","), urls[5].clone());

    // Killed by their PIDs when dropped, also when the test fails.
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (child, port) = spawn_instance(&lock_nodes, &counter_url).await;
        children.push(child);
        ports.push(port);
    }

    // Warm up each instance's node connections: cold pools under a burst would time out.
    for &port in &ports {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let reply = http(addr, Method::POST, "/counters/warmup/increment").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }

    let mut requests = JoinSet::new();
    for i in 0..REQUESTS {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ports[i % 3]));
        let id = i % KEYS;
        requests.spawn(async move {
            let reply = http(addr, Method::POST, &format!("/counters/{id}/increment")).await;
            (id, reply)
        });
    }
    let mut successes = [0u64; KEYS];
    while let Some(joined) = within("the requests", requests.join_next()).await {
        let (id, reply) = joined.unwrap();
        match reply.status {
            StatusCode::OK => successes[id] += 1,
            StatusCode::LOCKED => {}
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }

    let mut counter = connect_url(&counter_url, NO_HANG).await.unwrap();
    for (id, &ok) in successes.iter().enumerate() {
        let count: Option<u64> = counter.get(format!("count:{id}")).await.unwrap();
        assert_eq!(count.unwrap_or(0), ok, "counter {id}: {successes:?}");
    }
    // A key may see no winner at all: in a burst, concurrent attempts can split the votes so
    // that nobody reaches a quorum (and every one of them fails fast). Overall, some win.
    assert!(successes.iter().sum::<u64>() >= 1, "{successes:?}");

    for mut child in children {
        child.kill().await;
    }
}
