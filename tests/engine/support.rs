//! Shared helpers: a cluster, an engine on it, and raw access to the nodes.

use std::time::Duration;

use redis::AsyncCommands;
use tower_redlock::testkit::LocalCluster;
pub use tower_redlock::testkit::eventually;
use tower_redlock::{Redlock, RedlockBuilder, RetryPolicy};

pub const PREFIX: &str = "t:";

/// How long a test waits for an event that should come at once before it gives up: a bound
/// against hanging, not a speed requirement (a loaded 2-core machine must pass too).
pub const NO_HANG: Duration = Duration::from_secs(30);

pub async fn cluster() -> LocalCluster {
    LocalCluster::start(5)
        .await
        .expect("start 5 redis-server nodes")
}

/// A builder with test-friendly defaults on `cluster`.
pub fn builder(cluster: &LocalCluster) -> RedlockBuilder {
    Redlock::builder()
        .nodes(cluster.urls())
        .key_prefix(PREFIX)
        .ttl(Duration::from_secs(5))
        .node_timeout(Duration::from_millis(200))
        .retry(
            RetryPolicy::until(Duration::from_secs(10))
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(10)),
        )
}

pub async fn redlock(cluster: &LocalCluster) -> Redlock {
    builder(cluster).build().await.expect("build redlock")
}

/// A raw connection to node `i`.
pub async fn raw(cluster: &LocalCluster, i: usize) -> redis::aio::MultiplexedConnection {
    redis::Client::open(cluster.url(i))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// The value of lock key `key` on node `i`.
pub async fn lock_value(cluster: &LocalCluster, i: usize, key: &str) -> Option<String> {
    let mut conn = raw(cluster, i).await;
    conn.get(format!("{PREFIX}lock:{key}")).await.unwrap()
}

/// On how many nodes lock key `key` exists (nodes that do not answer count as 0).
pub async fn holders(cluster: &LocalCluster, key: &str) -> usize {
    let mut count = 0;
    for i in 0..cluster.len() {
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_millis(500),
            redis::Client::open(cluster.url(i))
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .await
        else {
            continue;
        };
        let exists: Result<Result<bool, _>, _> = tokio::time::timeout(
            Duration::from_millis(500),
            conn.exists(format!("{PREFIX}lock:{key}")),
        )
        .await;
        if let Ok(Ok(true)) = exists {
            count += 1;
        }
    }
    count
}

/// Whether no node holds lock key `key` any more, polling for up to [`NO_HANG`]
/// (background releases and cleanups finish within a node timeout or two; the deadline
/// only stops a hang).
pub async fn released_everywhere(cluster: &LocalCluster, key: &str) -> bool {
    eventually(NO_HANG, || async { holders(cluster, key).await == 0 }).await
}

/// SIGSTOPs nodes `nodes`.
pub fn pause(cluster: &LocalCluster, nodes: std::ops::Range<usize>) {
    for i in nodes {
        cluster.pause(i).unwrap();
    }
}

/// SIGCONTs nodes `nodes`.
pub fn resume(cluster: &LocalCluster, nodes: std::ops::Range<usize>) {
    for i in nodes {
        cluster.resume(i).unwrap();
    }
}
