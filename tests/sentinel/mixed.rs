//! Mixed topologies: five votes from three standalone masters and two Sentinel groups.
//! (With the Cluster transport, one standalone master can become a `redis+cluster://`
//! node: every node is one vote whatever stands behind it.)

use std::time::Duration;

use tower_redlock::testkit::SentinelGroup;
use tower_redlock::{LockOptions, NodeKind};

use crate::support::*;

#[tokio::test]
async fn five_votes_from_standalone_and_sentinel_nodes_keep_a_lease_through_two_failovers() {
    let (a, b) = tokio::join!(
        SentinelGroup::start("mixed-a"),
        SentinelGroup::start("mixed-b")
    );
    let (a, b) = (a.expect("group a"), b.expect("group b"));
    let standalone = cluster(3).await;
    let mut urls = standalone.urls();
    urls.extend([a.url(), b.url()]);
    let holder = builder(urls.clone()).fencing(true).build().await.unwrap();
    let rival = builder(urls).build().await.unwrap();
    assert_eq!((holder.node_count(), holder.quorum()), (5, 3));
    let kinds: Vec<NodeKind> = holder.health().await.nodes.iter().map(|n| n.kind).collect();
    assert_eq!(kinds[..3], [NodeKind::Standalone; 3]);
    assert_eq!(kinds[3..], [NodeKind::Sentinel; 2]);

    let lock = holder.acquire("mixed:a").await.expect("free");
    assert!(lock.fencing_token().is_some());
    assert!(a.wait_replicated().await && b.wait_replicated().await);

    // Group a loses its primary, group b fails over on purpose.
    let old = a.kill_primary().await.expect("a's primary killed");
    b.failover().await.expect("b fails over");
    a.wait_new_primary(old)
        .await
        .expect("a promotes its replica");

    assert_contended(&rival, "mixed:a").await;
    lock.extend(Duration::from_secs(5))
        .await
        .expect("a majority of the five votes");
    lock.release().await.unwrap();
    rival
        .acquire_with("mixed:a", LockOptions::new().retry(retry_for(NO_HANG)))
        .await
        .expect("free after the release")
        .release()
        .await
        .unwrap();
}
