//! Unavailable nodes: the pass-by budget counts skipped nodes, releases and fencing
//! write-backs reach nodes passed by or skipped, and fencing checks its timeouts.

use std::time::Duration;

use redis::AsyncCommands;
use tower_redlock::testkit::{FaultProxy, LocalCluster};
use tower_redlock::{ConfigError, LockError, LockOptions, Redlock, RedlockBuilder};

use crate::support::*;

/// The fencing counter of `key` on node `i` (read directly, not through a proxy).
async fn fence_value(cluster: &LocalCluster, i: usize, key: &str) -> Option<u64> {
    let mut conn = raw(cluster, i).await;
    conn.get(fence_key(key)).await.unwrap()
}

/// A builder on `cluster` whose nodes in `proxied` are reached through `proxies`.
fn proxied_builder(
    cluster: &LocalCluster,
    proxies: &[FaultProxy],
    proxied: &[usize],
) -> RedlockBuilder {
    let mut urls = cluster.urls();
    for &i in proxied {
        urls[i] = proxies[i].url();
    }
    Redlock::builder().nodes(urls).key_prefix(PREFIX)
}

/// Waits (bounded) until `redlock` skips node `index`, provoking calls to it meanwhile.
async fn until_skipped(redlock: &Redlock, index: usize) {
    let mut round = 0;
    let skipped = eventually(NO_HANG, || {
        round += 1;
        let redlock = redlock.clone();
        let key = format!("provoke-{round}");
        async move {
            // A call that fails on the node makes the engine check (and skip) it.
            if let Ok(lock) = redlock.try_acquire(&key).await {
                let _ = lock.release().await;
            }
            redlock.health().await.nodes[index].skipped
        }
    })
    .await;
    assert!(skipped, "node {index} was never skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_and_two_lagging_still_serve_acquisitions_and_keep_a_held_lease() {
    const BACKLOG: usize = 2;
    let cluster = cluster(5).await;
    let proxies = cluster.proxies().await.unwrap();
    let redlock = proxied_builder(&cluster, &proxies, &[0, 1])
        .ttl(Duration::from_secs(20))
        .node_timeout(Duration::from_secs(3))
        .node_backlog(BACKLOG)
        .build()
        .await
        .unwrap();
    // Two keys: the acquire script, which reports a held key itself (a bare `SET` would
    // ask the holder's time with one more round).
    let taken = ["taken-1", "taken-2"];
    let held = redlock.acquire_many(taken).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            holders(&cluster, taken[0]).await == 5
        })
        .await,
        "the lease never reached every node"
    );
    cluster.kill(4).await.unwrap();
    until_skipped(&redlock, 4).await;
    // Nodes 0 and 1 now answer 2 s late. An attempt on the held keys is decided without
    // them (nodes 2 and 3 say held, node 4 is skipped): each leaves one reply overdue on
    // both. Passing both by would leave two nodes of five for every call.
    for proxy in &proxies[..2] {
        proxy.set_latency(Duration::from_secs(1));
    }
    let once = LockOptions::new().no_retry();
    for _ in 0..BACKLOG {
        let error = redlock
            .acquire_many_with(taken, once.clone())
            .await
            .unwrap_err();
        assert!(matches!(error, LockError::Contended { .. }), "{error}");
    }
    // At most one of them is passed by: a free key still reaches a quorum (waiting for the
    // other lagging node), and so does the held lease's extension.
    let free = redlock.acquire_with("free", once).await.unwrap();
    held.extend(Duration::from_secs(20)).await.unwrap();
    assert!(held.is_held(), "the held lease was lost");
    free.release().await.unwrap();
    held.release().await.unwrap();
}

/// An engine (`fencing` as given) with the shared node timeout and a long ttl. (The node
/// timeout is generous: the calls to the healthy nodes must succeed on a loaded machine;
/// a frozen node costs one timeout per call until it is skipped.)
async fn long_ttl(cluster: &LocalCluster, fencing: bool) -> Redlock {
    builder(cluster.urls())
        .ttl(Duration::from_secs(60))
        .fencing(fencing)
        .build()
        .await
        .unwrap()
}

/// Freezes node 4 (SIGSTOP: a frozen process whose kernel still takes in what is written
/// to its sockets) until the engine skips it. (Not the fault proxy: it drops the bytes it
/// delays when the client closes the connection, where TCP would deliver them.)
async fn freeze_until_skipped(cluster: &LocalCluster, redlock: &Redlock) {
    cluster.pause(4).unwrap();
    until_skipped(redlock, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reaches_a_node_skipped_while_the_lease_was_held() {
    let cluster = cluster(5).await;
    let redlock = long_ttl(&cluster, false).await;
    let lock = redlock.try_acquire("kept").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            lock_value(&cluster, 4, "kept").await.is_some()
        })
        .await,
        "node 4 never took the lease"
    );
    freeze_until_skipped(&cluster, &redlock).await;
    lock.release().await.unwrap();
    cluster.resume(4).unwrap();
    // The ttl is 60 s: only the release can remove the key from node 4 before the deadline.
    assert!(
        eventually(Duration::from_secs(30), || async {
            lock_value(&cluster, 4, "kept").await.is_none()
        })
        .await,
        "the release never reached the skipped node: its key stays until the ttl"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencing_write_back_reaches_a_skipped_node() {
    let cluster = cluster(5).await;
    let redlock = long_ttl(&cluster, true).await;
    freeze_until_skipped(&cluster, &redlock).await;
    // Node 4 gets no acquisition (it is skipped); its counter can only come from the
    // write-back.
    let lock = redlock.try_acquire("fenced").await.unwrap();
    let token = lock.fencing_token().unwrap();
    cluster.resume(4).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            fence_value(&cluster, 4, "fenced").await == Some(token)
        })
        .await,
        "the fencing write-back never reached the skipped node"
    );
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencing_write_back_reaches_a_lagging_node() {
    const BACKLOG: usize = 2;
    let cluster = cluster(5).await;
    let proxies = cluster.proxies().await.unwrap();
    let redlock = proxied_builder(&cluster, &proxies, &[0])
        .ttl(Duration::from_secs(60))
        .node_timeout(Duration::from_secs(5))
        .node_backlog(BACKLOG)
        .fencing(true)
        .build()
        .await
        .unwrap();
    // Node 0 answers ~2 s late: two acquisitions leave two replies of it overdue, and it
    // is passed by (the next acquisition sends it nothing: no `INCR` there).
    proxies[0].set_latency(Duration::from_secs(1));
    let options = LockOptions::new().no_retry().fencing(false);
    let mut held = Vec::new();
    for i in 0..BACKLOG {
        let key = format!("lag-{i}");
        held.push(redlock.acquire_with(key, options.clone()).await.unwrap());
    }
    let lock = redlock.try_acquire("fenced").await.unwrap();
    let token = lock.fencing_token().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            fence_value(&cluster, 0, "fenced").await == Some(token)
        })
        .await,
        "the fencing write-back never reached the lagging node"
    );
    lock.release().await.unwrap();
    for lock in held {
        lock.release().await.unwrap();
    }
}

#[tokio::test]
async fn fencing_needs_three_node_timeouts_within_the_validity() {
    let url = "redis://127.0.0.1:1";
    // 1 s less 12 ms of drift: 400 ms fits once and twice, not three times.
    let tight = Redlock::builder()
        .node(url)
        .ttl(Duration::from_secs(1))
        .node_timeout(Duration::from_millis(400));
    let error = tight.clone().fencing(true).build().await.unwrap_err();
    assert!(
        matches!(&error, ConfigError::InvalidNodeTimeout { reason, .. } if reason.contains("fencing")),
        "{error}"
    );
    // Without fencing the same settings are fine, but a fenced call is not.
    let redlock = tight.build().await.unwrap();
    let fenced = LockOptions::new().no_retry().fencing(true);
    let error = redlock.acquire_with("k", fenced.clone()).await.unwrap_err();
    assert!(
        matches!(&error, LockError::InvalidOptions { reason, .. } if reason.contains("fencing")),
        "{error}"
    );
    // A longer ttl for the call fits them (the node is down: the quorum is unavailable).
    let error = redlock
        .acquire_with("k", fenced.ttl(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::Unavailable { .. }), "{error}");
}
