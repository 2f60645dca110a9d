//! Locks through a Cluster node on keys in several slots.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use tower_redlock::testkit::RedisCluster;
use tower_redlock::{LockError, LockOptions, NodeKind, Redlock};

use crate::redis_cluster;
use crate::support::*;

/// The slot owner's copy of `redis_key`, asked directly.
async fn stored(cluster: &RedisCluster, redis_key: &str) -> Option<String> {
    let slot = cluster.slot_of(redis_key).await.unwrap();
    let owner = cluster.owner(slot).await.unwrap();
    let mut get = redis::cmd("GET");
    get.arg(redis_key);
    match cluster.command(owner, &get).await.unwrap() {
        Value::BulkString(bytes) => Some(String::from_utf8(bytes).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn locks_on_keys_in_every_shard_work_through_one_cluster_node() {
    let cluster = redis_cluster(3, 0).await;
    let redlock = builder([cluster.url()])
        .fencing(true)
        .build()
        .await
        .expect("an engine on one cluster node");
    assert_eq!((redlock.node_count(), redlock.quorum()), (1, 1));
    let rival = builder([cluster.url()]).build().await.unwrap();

    let keys: Vec<String> = (0..24).map(|i| format!("cl:key:{i}")).collect();
    let mut owners = BTreeSet::new();
    let mut last_token = 0;
    for key in &keys {
        let slot = cluster.slot_of(&lock_key(key)).await.unwrap();
        owners.insert(cluster.owner(slot).await.unwrap());

        let lock = redlock.acquire(key).await.expect("a free key");
        let token = lock.fencing_token().expect("fencing is on");
        assert!(token >= 1);
        assert!(
            stored(&cluster, &lock_key(key)).await.is_some(),
            "at the slot owner"
        );
        assert_contended(&rival, key).await;
        lock.extend(Duration::from_secs(5)).await.expect("extend");
        lock.release().await.expect("release");
        assert_eq!(stored(&cluster, &lock_key(key)).await, None, "released");
        last_token = token;
    }
    assert_eq!(owners.len(), 3, "the keys cover every primary");
    let again = redlock.acquire(&keys[keys.len() - 1]).await.unwrap();
    assert!(
        again.fencing_token().unwrap() > last_token,
        "tokens only go up"
    );
    again.release().await.unwrap();

    let health = redlock.health().await;
    assert!(health.is_healthy(), "{health:?}");
    let node = &health.nodes[0];
    assert_eq!(node.kind, NodeKind::Cluster);
    let primaries = node.primary.clone().expect("the primaries are known");
    assert_eq!(primaries.split(',').count(), 3, "{primaries}");
}

#[tokio::test]
async fn a_multi_key_lock_needs_one_slot_on_a_cluster_node() {
    let cluster = redis_cluster(3, 0).await;
    let redlock = builder([cluster.url()]).build().await.unwrap();

    let both = redlock
        .acquire_many(["order:{42}:debit", "order:{42}:credit"])
        .await
        .expect("keys with a common tag share a slot");
    assert_contended(&redlock, "order:{42}:credit").await;
    both.release().await.unwrap();

    let spread = redlock
        .acquire_many(["account:1", "account:2"])
        .await
        .unwrap_err();
    let LockError::InvalidKey { reason, .. } = &spread else {
        panic!("{spread:?}")
    };
    assert!(reason.contains("hash tag"), "{reason}");
    // Refused before anything was sent: no node holds either key.
    for key in ["account:1", "account:2"] {
        assert_eq!(stored(&cluster, &lock_key(key)).await, None);
    }
    // A standalone-only engine takes the same keys.
    let standalone = cluster_nodes_standalone().await;
    let lock = standalone.1.acquire_many(["account:1", "account:2"]).await;
    assert!(lock.is_ok(), "{lock:?}");
}

/// One standalone node and an engine on it.
async fn cluster_nodes_standalone() -> (tower_redlock::testkit::LocalCluster, Redlock) {
    let node = cluster(1).await;
    let redlock = redlock(&node).await;
    (node, redlock)
}

#[tokio::test]
async fn leases_in_many_slots_are_extended_in_batches() {
    let cluster = redis_cluster(3, 0).await;
    let redlock = builder([cluster.url()])
        .ttl(SHORT_TTL)
        .build()
        .await
        .unwrap();
    let rival = builder([cluster.url()]).build().await.unwrap();
    let mut leases = Vec::new();
    for i in 0..40 {
        leases.push(redlock.acquire(&format!("batch:{i}")).await.unwrap());
    }
    // Past the first validity by a whole ttl: only extension (one EXTEND_MANY per slot on
    // the cluster node; one call over every slot would be CROSSSLOT) kept them.
    let first_end = leases[0].valid_until();
    tokio::time::sleep_until(first_end + SHORT_TTL).await;
    for (i, lease) in leases.iter().enumerate() {
        assert!(lease.is_held(), "lease {i}");
        assert_contended(&rival, &format!("batch:{i}")).await;
    }
    for lease in leases {
        lease.release().await.unwrap();
    }
}

/// Calls on one lock reach its primary in order: the cleanup of an acquisition cancelled
/// at any point (a release sent after it on the cluster's one handle) never runs before
/// it, or the key would stay for its whole (long) ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquisitions_leave_no_key_behind() {
    let cluster = redis_cluster(3, 0).await;
    let redlock = builder([cluster.url()])
        .ttl(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..6).map(|i| format!("cancel:{i}")).collect();
    for micros in (0..3000).step_by(150) {
        for key in &keys {
            let attempt = redlock.acquire_with(key, LockOptions::new().no_retry());
            match tokio::time::timeout(Duration::from_micros(micros), attempt).await {
                Ok(Ok(lock)) => drop(lock),
                Ok(Err(e)) if e.is_contended() => {}
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {}
            }
        }
    }
    for key in &keys {
        let cleaned = eventually(Duration::from_secs(10), || async {
            stored(&cluster, &lock_key(key)).await.is_none()
        })
        .await;
        assert!(
            cleaned,
            "{key}: a cancelled acquisition left its key behind"
        );
    }
}

/// The script cache is per server: after `SCRIPT FLUSH` on every node (as after a restart
/// or on a node added by a reshard), calls go again as `EVAL`.
#[tokio::test]
async fn flushed_scripts_are_sent_again() {
    let cluster = redis_cluster(3, 0).await;
    let redlock = builder([cluster.url()])
        .fencing(true)
        .build()
        .await
        .unwrap();
    let first = redlock.acquire("flush:a").await.unwrap();
    let mut flush = redis::cmd("SCRIPT");
    flush.arg("FLUSH");
    for node in 0..cluster.nodes().len() {
        cluster.command(node, &flush).await.unwrap();
    }
    first
        .extend(Duration::from_secs(5))
        .await
        .expect("EXTEND as EVAL");
    first.release().await.expect("RELEASE as EVAL");
    assert_eq!(stored(&cluster, &lock_key("flush:a")).await, None);
    let second = redlock.acquire("flush:a").await.expect("ACQUIRE as EVAL");
    second.release().await.unwrap();
}
