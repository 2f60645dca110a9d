//! Nodes reached over Unix sockets (`redis+unix:///path`, `unix:///path`): co-located
//! `redis-server`s listening on a socket file, locked, extended, released and fenced as
//! over TCP.
#![cfg(all(feature = "testkit", unix))]

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use tower_redlock::NodeKind;
use tower_redlock::testkit::{ClusterOptions, LocalCluster};

use support::*;

/// The socket file's name, in each node's data directory (the server's working directory).
const SOCKET: &str = "redis.sock";

/// Three nodes, each also listening on `SOCKET` in its data directory.
async fn socket_nodes() -> LocalCluster {
    let options = ClusterOptions::new().args(["--unixsocket", SOCKET, "--unixsocketperm", "700"]);
    LocalCluster::start_with(3, options)
        .await
        .expect("start redis-server nodes")
}

fn socket(nodes: &LocalCluster, i: usize) -> PathBuf {
    nodes.data_dir(i).join(SOCKET)
}

#[tokio::test]
async fn nodes_on_unix_sockets_lock_extend_release_and_fence() {
    let nodes = socket_nodes().await;
    let urls = vec![
        format!("redis+unix://{}", socket(&nodes, 0).display()),
        format!("unix://{}", socket(&nodes, 1).display()),
        format!("redis+unix://{}?db=0", socket(&nodes, 2).display()),
    ];
    let redlock = builder(urls)
        .fencing(true)
        .build()
        .await
        .expect("an engine on socket nodes");

    let lock = redlock.acquire("unix:a").await.expect("free");
    let token = lock.fencing_token().expect("fencing is on");
    // Written through the sockets: every node holds it (read back over TCP).
    assert_eq!(holders(&nodes, "unix:a").await, 3);
    assert_contended(&redlock, "unix:a").await;
    lock.extend(Duration::from_secs(5)).await.expect("extend");
    lock.release().await.expect("release");
    assert!(released_everywhere(&nodes, "unix:a").await);

    let again = redlock.acquire("unix:a").await.expect("free again");
    assert!(again.fencing_token().unwrap() > token, "tokens only go up");
    again.release().await.unwrap();

    let health = redlock.health().await;
    assert!(health.is_healthy(), "{health:?}");
    assert!(health.nodes.iter().all(|n| n.kind == NodeKind::Standalone));
}

#[tokio::test]
async fn a_socket_node_that_is_gone_is_a_no_vote() {
    let nodes = socket_nodes().await;
    let mut urls: Vec<String> = (0..3)
        .map(|i| format!("unix://{}", socket(&nodes, i).display()))
        .collect();
    // A socket path nobody listens on: its node votes no, the other two make the quorum.
    urls[2] = format!("unix://{}", nodes.data_dir(2).join("absent.sock").display());
    let redlock = builder(urls).build().await.expect("an engine");
    let lock = redlock.acquire("unix:b").await.expect("two of three");
    assert_eq!(holders(&nodes, "unix:b").await, 2);
    lock.release().await.unwrap();
}
