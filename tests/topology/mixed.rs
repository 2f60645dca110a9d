//! Mixed topologies: 2 standalone servers + 1 Redis Cluster + 2 Sentinel groups = 5 votes,
//! quorum 3. Every kind counts once; losing two votes keeps the lock working, a held lease
//! is never granted to a rival meanwhile, and losing a third fails closed.

use std::time::Duration;

use tower_redlock::testkit::{LocalCluster, RedisCluster, SentinelGroup};
use tower_redlock::{LockError, LockOptions, NodeKind, Redlock};

use crate::support::*;

/// The five votes, started side by side.
struct Mixed {
    standalone: LocalCluster,
    cluster: RedisCluster,
    sentinels: [SentinelGroup; 2],
}

impl Mixed {
    async fn start() -> Mixed {
        let (standalone, cluster, first, second) = tokio::join!(
            LocalCluster::start(2),
            RedisCluster::start(3, 0),
            SentinelGroup::start("mixed-a"),
            SentinelGroup::start("mixed-b"),
        );
        Mixed {
            standalone: standalone.expect("2 standalone servers"),
            cluster: cluster.expect("a Redis Cluster"),
            sentinels: [
                first.expect("Sentinel group a"),
                second.expect("Sentinel group b"),
            ],
        }
    }

    /// Node URLs in the order standalone, standalone, cluster, sentinel, sentinel.
    fn urls(&self) -> Vec<String> {
        let mut urls = self.standalone.urls();
        urls.push(self.cluster.url());
        urls.extend(self.sentinels.iter().map(SentinelGroup::url));
        urls
    }

    async fn engine(&self) -> Redlock {
        builder(self.urls())
            .fencing(true)
            .build()
            .await
            .expect("an engine on five mixed nodes")
    }
}

#[tokio::test]
async fn five_mixed_nodes_are_five_votes() {
    let nodes = Mixed::start().await;
    let (holder, rival) = (nodes.engine().await, nodes.engine().await);
    assert_eq!((holder.node_count(), holder.quorum()), (5, 3));

    let health = holder.health().await;
    assert!(health.is_healthy(), "{health:?}");
    let kinds: Vec<NodeKind> = health.nodes.iter().map(|node| node.kind).collect();
    assert_eq!(
        kinds,
        [
            NodeKind::Standalone,
            NodeKind::Standalone,
            NodeKind::Cluster,
            NodeKind::Sentinel,
            NodeKind::Sentinel
        ]
    );
    for node in &health.nodes[2..] {
        assert!(node.primary.is_some(), "{node:?}");
    }

    // Keys in different cluster slots, each a lock on all five votes.
    let mut tokens = Vec::new();
    for key in ["mixed:a", "mixed:b", "mixed:c", "mixed:d"] {
        let lock = holder.acquire(key).await.expect("free");
        assert_contended(&rival, key).await;
        tokens.push(lock.fencing_token().expect("fencing is on"));
        lock.release().await.expect("release");
        let after = rival.acquire(key).await.expect("free after the release");
        after.release().await.unwrap();
    }
    assert!(tokens.iter().all(|&token| token >= 1), "{tokens:?}");
}

#[tokio::test]
async fn two_lost_votes_of_any_kind_keep_the_lock_working() {
    let nodes = Mixed::start().await;
    let (holder, rival) = (nodes.engine().await, nodes.engine().await);
    let lease = holder.acquire("mixed:held").await.expect("free");

    // Both standalone servers die: the cluster and the two Sentinel groups are 3 votes.
    nodes.standalone.kill(0).await.unwrap();
    nodes.standalone.kill(1).await.unwrap();
    lease
        .extend(Duration::from_secs(5))
        .await
        .expect("3 of 5 votes extend the lease");
    let refused = rival
        .acquire_with("mixed:held", LockOptions::new().no_retry())
        .await
        .unwrap_err();
    assert!(lease.is_held());
    assert!(
        matches!(
            refused,
            LockError::Contended { .. } | LockError::Unavailable { .. }
        ),
        "{refused:?}"
    );
    let other = rival.acquire("mixed:other").await.expect("3 votes suffice");
    other.release().await.unwrap();

    // A third vote gone (the whole cluster, which has no replicas): 2 of 5 is no quorum,
    // and the engine says so instead of locking.
    for primary in 0..3 {
        nodes.cluster.kill(primary).await.unwrap();
    }
    let closed = rival
        .acquire_with("mixed:third", LockOptions::new().no_retry())
        .await
        .unwrap_err();
    assert!(
        matches!(closed, LockError::Unavailable { .. }),
        "{closed:?}"
    );
    lease.release().await.ok();
}
