//! The failover caveat, shown: replication is asynchronous, so a lock written to the
//! primary and not yet copied to the replica is gone once the replica is promoted.
//!
//! - One Sentinel node alone (a quorum of 1): a rival acquires the lock the holder still
//!   holds until its next extension fails (it then ends: `lost()`). The documented caveat.
//! - Among three votes (that node plus two standalone masters): the rival gets one vote of
//!   three, the holder keeps two; the lock stays exclusive.

use std::time::Duration;

use tower_redlock::LockOptions;
use tower_redlock::testkit::SentinelGroup;

use crate::support::*;

#[tokio::test]
async fn alone_a_sentinel_node_loses_a_lock_its_replica_never_got() {
    let group = SentinelGroup::start("alone")
        .await
        .expect("a Sentinel group");
    let holder = builder([group.url()]).build().await.unwrap();
    group.cut_replication();
    let lock = holder.acquire("caveat:a").await.expect("free");
    assert!(lock_value(group.data(), 0, "caveat:a").await.is_some());
    assert!(
        lock_value(group.data(), 1, "caveat:a").await.is_none(),
        "not replicated"
    );

    let new = group.failover().await.expect("a failover");
    assert_eq!(new, group.data().addr(1));
    assert!(
        lock_value(group.data(), 1, "caveat:a").await.is_none(),
        "lost"
    );

    // The caveat: the new primary never saw the lock, so a rival gets it.
    let rival = builder([group.url()]).build().await.unwrap();
    let stolen = rival
        .acquire_with("caveat:a", LockOptions::new().retry(retry_for(NO_HANG)))
        .await
        .expect("the rival acquires the lock the replica never got");
    // The holder finds out at its next extension, on the new primary.
    within("the holder's lease ends", lock.lost()).await;
    assert!(!lock.is_held());
    stolen.release().await.unwrap();
}

#[tokio::test]
async fn among_three_votes_the_promoted_replica_gives_a_rival_no_quorum() {
    let group = SentinelGroup::start("three")
        .await
        .expect("a Sentinel group");
    let standalone = cluster(2).await;
    let mut urls = vec![group.url()];
    urls.extend(standalone.urls());
    let holder = builder(urls.clone()).build().await.unwrap();
    group.cut_replication();
    let lock = holder.acquire("caveat:b").await.expect("free");
    assert!(lock_value(group.data(), 0, "caveat:b").await.is_some());
    assert!(
        lock_value(group.data(), 1, "caveat:b").await.is_none(),
        "not replicated"
    );

    group.failover().await.expect("a failover");
    let rival = builder(urls).build().await.unwrap();
    assert_contended(&rival, "caveat:b").await;
    // The holder keeps two votes of three.
    lock.extend(Duration::from_secs(5))
        .await
        .expect("two standalone votes");
    assert!(lock.is_held());
    assert_contended(&rival, "caveat:b").await;
    lock.release().await.unwrap();
}
