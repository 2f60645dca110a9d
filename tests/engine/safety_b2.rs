//! Cleanups that must not vanish: a partial acquisition whose caller went away while it was
//! being released, and a late `SET` overtaken by the lease's release after the node's
//! connection was replaced.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tower_redlock::{LockOptions, Redlock};

use crate::support::*;

/// No-hang bound for events the tests wait for (they normally come within milliseconds).
const EVENT: Duration = Duration::from_secs(10);
/// Long enough that a key still there after the wait was left behind, not slow to go.
const TTL: Duration = Duration::from_secs(60);
const FOREIGN: &str = "someone-else";

async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<String> {
    conn.get(lock_key(key)).await.unwrap()
}

/// Whether the client that last ran a `SET` on this node has had its reply written out
/// (its output buffer is empty).
async fn set_reply_flushed(conn: &mut MultiplexedConnection) -> bool {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    list.lines()
        .any(|client| client.contains(" cmd=set ") && client.contains(" obl=0 "))
}

/// Opens (and gives back) a lease on a throw-away key, so that every node's connection is
/// made and its scripts loaded.
async fn warm_up(redlock: &Redlock) {
    let lock = redlock.acquire("warm-up").await.unwrap();
    lock.release().await.unwrap();
}

/// A partial acquisition is being released (`release_now`) when the caller's future is
/// dropped; the release to one node is still unanswered (the node is frozen) and, that node
/// having lost its scripts, needs a second request (`EVAL` after `NOSCRIPT`) that only a live
/// caller would send. The cleanup must still happen once the node wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_dropped_while_releasing_a_partial_acquisition_still_cleans_up() {
    let cluster = cluster(5).await;
    // Node 0 is frozen during the attempt: the attempt decides when it times out.
    let redlock = builder(cluster.urls())
        .ttl(TTL)
        .node_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    warm_up(&redlock).await;
    let mut conns = Vec::new();
    for i in 0..cluster.len() {
        conns.push(raw(&cluster, i).await);
    }
    // Another client holds the key on nodes 0, 1, 2: the attempt gets yeses from 3 and 4 only.
    for conn in &mut conns[..3] {
        let _: () = conn.set(lock_key("k"), FOREIGN).await.unwrap();
    }
    pause(&cluster, 0..1);
    let mut attempt = Box::pin(redlock.acquire_with("k", LockOptions::new().no_retry()));
    let (node3, node4) = (conns[3].clone(), conns[4].clone());
    let steps = async {
        // The SETs ran on nodes 3 and 4, and node 3's reply went out.
        let set = eventually(EVENT, || {
            let (mut node3, mut node4) = (node3.clone(), node4.clone());
            async move {
                get(&mut node3, "k").await.is_some()
                    && get(&mut node4, "k").await.is_some()
                    && set_reply_flushed(&mut node3).await
            }
        })
        .await;
        assert!(set, "the attempt's SETs never ran");
        // Node 3 forgets its scripts and freezes: its release will hang, then need EVAL.
        let mut node3 = node3.clone();
        let token = get(&mut node3, "k").await.unwrap();
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut node3)
            .await
            .unwrap();
        pause(&cluster, 3..4);
        // Node 0 times out, the attempt fails and releases nodes 3 and 4: 4 answers.
        let released = eventually(EVENT, || {
            let mut node4 = node4.clone();
            async move { get(&mut node4, "k").await.is_none() }
        })
        .await;
        assert!(released, "the partial acquisition was never released");
        token
    };
    let token = tokio::select! {
        result = &mut attempt => panic!("the attempt ended before it was dropped: {result:?}"),
        token = steps => token,
    };
    // The caller goes away while node 3's release is unanswered.
    drop(attempt);
    resume(&cluster, 0..1);
    resume(&cluster, 3..4);
    let cleaned = eventually(EVENT, || {
        let (mut node3, token) = (conns[3].clone(), token.clone());
        async move { get(&mut node3, "k").await != Some(token) }
    })
    .await;
    assert!(cleaned, "the cancelled attempt left its key on node 3");
    for (i, conn) in conns.iter_mut().enumerate() {
        let value = get(conn, "k").await;
        assert_ne!(
            value.as_deref(),
            Some(token.as_str()),
            "key left on node {i}"
        );
    }
}

/// Node 4's `SET` is delayed past the decision and its reply times out; a probe replaces the
/// node's connection, and the lease is released on the new one before the delayed `SET`
/// lands on the old one. The key it creates there must be released too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_set_after_a_connection_replacement_is_released() {
    let cluster = cluster(5).await;
    let proxies = cluster.proxies().await.unwrap();
    let redlock = Redlock::builder()
        .nodes(proxies.iter().map(|p| p.url()))
        .key_prefix(PREFIX)
        .ttl(TTL)
        .node_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    warm_up(&redlock).await;
    let mut node4 = raw(&cluster, 4).await;
    // A round counts when the proxy took node 4's SET before its latency was lifted (it runs
    // on its own task): then the SET lands late. Otherwise the round is run again.
    for round in 0..5 {
        let key = format!("k{round}");
        let mut changes = key_changes(&cluster, 4, &key).await;
        // Node 4's SET (and everything after it on that connection) is held in the proxy.
        proxies[4].set_latency(Duration::from_secs(3));
        let lock = redlock.acquire(&key).await.unwrap();
        proxies[4].set_latency(Duration::ZERO);
        // The reply times out; so does a probe on the old connection (queued behind the
        // SET); a new connection answers the next probe, and node 4 takes requests again.
        let back = eventually(EVENT, || async {
            let Ok(other) = redlock
                .acquire_with("other", LockOptions::new().no_retry())
                .await
            else {
                return false;
            };
            let mut node4 = node4.clone();
            let reached = get(&mut node4, "other").await.is_some();
            other.release().await.unwrap();
            reached
        })
        .await;
        assert!(back, "node 4 never took requests on a new connection");
        if get(&mut node4, &key).await.is_some() {
            lock.release().await.unwrap();
            continue; // the SET was not delayed
        }
        lock.release().await.unwrap();
        let landed = tokio::time::timeout(EVENT, changes.next()).await;
        assert_eq!(
            landed.ok().flatten().as_deref(),
            Some("set"),
            "the delayed SET never reached node 4"
        );
        let cleaned = eventually(EVENT, || {
            let (mut node4, key) = (node4.clone(), key.clone());
            async move { get(&mut node4, &key).await.is_none() }
        })
        .await;
        assert!(
            cleaned,
            "the late SET left a key on node 4 after the release"
        );
        return;
    }
    panic!("node 4's SET was never delayed");
}

/// The events (`set`, `del`, ...) of lock key `key` on node `i`, from keyspace notifications.
async fn key_changes(
    cluster: &tower_redlock::testkit::LocalCluster,
    i: usize,
    key: &str,
) -> impl futures_util::Stream<Item = String> + Unpin {
    let mut conn = raw(cluster, i).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kg$")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut pubsub = redis::Client::open(cluster.url(i))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(format!("__keyspace@0__:{}", lock_key(key)))
        .await
        .unwrap();
    Box::pin(
        pubsub
            .into_on_message()
            .map(|msg| msg.get_payload::<String>().unwrap()),
    )
}
