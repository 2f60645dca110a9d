//! What the engine stores on the nodes, asked directly.
//!
//! Tests about what is stored (tokens, leftovers, expiry on the node) need the engine's key
//! layout; it is written down here once. Tests about lock behaviour use the public API
//! (`try_acquire` from another engine, `HeldLock::remaining`, health reports) instead.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};
use tower_redlock::testkit::LocalCluster;

use super::{NO_HANG, PREFIX, eventually};

/// The Redis name of user key `key`'s object `kind` (`lock`, `fence`, `released`,
/// `permit0:lock`, `permits:released`, `rw.readers`, ...), for keys without `{}`.
pub fn redis_name(key: &str, kind: &str) -> String {
    format!("{PREFIX}{{{key}}}:{kind}")
}

/// The Redis key of `key`'s lock (holds the holder's token, with the lease as its PTTL).
pub fn lock_key(key: &str) -> String {
    redis_name(key, "lock")
}

/// The Redis key of `key`'s fencing counter.
pub fn fence_key(key: &str) -> String {
    redis_name(key, "fence")
}

/// The channel a release of `key` is published on (wakes waiters).
pub fn released_channel(key: &str) -> String {
    redis_name(key, "released")
}

/// How long a direct question to a node that may be paused, cut off or down may take
/// before it counts as "no answer". Generous: a live node on a loaded machine answers.
pub const RAW_BOUND: Duration = Duration::from_secs(2);

/// A direct connection to node `i` (as the default user); the node must answer.
pub async fn raw(cluster: &LocalCluster, i: usize) -> MultiplexedConnection {
    tokio::time::timeout(NO_HANG, connect(cluster, i, NO_HANG))
        .await
        .expect("node answers in time")
        .expect("raw connection")
}

/// A direct connection to node `i`; `None` when it does not accept one within
/// [`RAW_BOUND`] (paused, killed).
pub async fn try_raw(cluster: &LocalCluster, i: usize) -> Option<MultiplexedConnection> {
    tokio::time::timeout(RAW_BOUND, connect(cluster, i, RAW_BOUND))
        .await
        .ok()?
        .ok()
}

async fn connect(
    cluster: &LocalCluster,
    i: usize,
    bound: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    connect_url(&cluster.url(i), bound).await
}

/// A connection to `url` whose connecting and replies may each take up to `bound`.
/// (redis-rs gives up on a reply after 500 ms by default: on a loaded machine that fails
/// a query to a live node. Use this, not `get_multiplexed_async_connection()`.)
pub async fn connect_url(url: &str, bound: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(bound))
        .set_response_timeout(Some(bound));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The value of Redis key `name` on node `i`; `None` when absent or when the node does not
/// answer within [`RAW_BOUND`].
pub async fn stored_value(cluster: &LocalCluster, i: usize, name: &str) -> Option<String> {
    let mut conn = try_raw(cluster, i).await?;
    tokio::time::timeout(RAW_BOUND, conn.get(name))
        .await
        .ok()?
        .ok()?
}

/// The value (token) of `key`'s lock on node `i`; `None` when absent or when the node does
/// not answer within [`RAW_BOUND`].
pub async fn lock_value(cluster: &LocalCluster, i: usize, key: &str) -> Option<String> {
    stored_value(cluster, i, &lock_key(key)).await
}

/// Whether Redis lock key `lock` is marked as awaited on node `i`: a waiter appended `+`
/// to its value, so that its release publishes a wake-up.
pub async fn marked_on(cluster: &LocalCluster, i: usize, lock: &str) -> bool {
    stored_value(cluster, i, lock)
        .await
        .is_some_and(|v| v.ends_with('+'))
}

/// On how many nodes `key`'s lock exists (nodes that do not answer count as 0).
pub async fn holders(cluster: &LocalCluster, key: &str) -> usize {
    let mut count = 0;
    for i in 0..cluster.len() {
        if lock_value(cluster, i, key).await.is_some() {
            count += 1;
        }
    }
    count
}

/// Whether no node holds `key`'s lock any more, polling for up to [`NO_HANG`] (background
/// releases and cleanups finish within a node timeout or two; the deadline only stops a
/// hang).
pub async fn released_everywhere(cluster: &LocalCluster, key: &str) -> bool {
    eventually(NO_HANG, || async { holders(cluster, key).await == 0 }).await
}

/// How many connections of node `i` subscribe to `channel` (0 when the node does not
/// answer within [`RAW_BOUND`]).
pub async fn subscribers(cluster: &LocalCluster, i: usize, channel: &str) -> i64 {
    let Some(mut conn) = try_raw(cluster, i).await else {
        return 0;
    };
    let numsub = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).to_owned();
    let subs: Vec<(String, i64)> = tokio::time::timeout(RAW_BOUND, numsub.query_async(&mut conn))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    subs.first().map_or(0, |(_, n)| *n)
}

/// Whether a waiter awaits the release of Redis lock key `lock` on node `i`: it subscribes
/// to `channel` there and has marked the lock (only a marked release publishes), so a
/// release there wakes it.
pub async fn awaited_on(cluster: &LocalCluster, i: usize, lock: &str, channel: &str) -> bool {
    marked_on(cluster, i, lock).await && subscribers(cluster, i, channel).await > 0
}

/// Whether a waiter awaits the release of `lock` on some node ([`awaited_on`]). A test
/// waits for this before it releases, instead of sleeping and hoping the waiter got that
/// far.
pub async fn awaited(cluster: &LocalCluster, lock: &str, channel: &str) -> bool {
    for i in 0..cluster.len() {
        if awaited_on(cluster, i, lock, channel).await {
            return true;
        }
    }
    false
}
