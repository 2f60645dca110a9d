//! A failover while a lease is held: the lease is kept (the lock was replicated) or ends
//! (`lost()`), and a rival never gets the lock while the holder still believes it holds it.

use std::net::SocketAddr;
use std::time::Duration;

use tower_redlock::testkit::SentinelGroup;
use tower_redlock::{HeldLock, LockError, LockOptions, Redlock};

use crate::support::*;

async fn engine(group: &SentinelGroup) -> Redlock {
    builder([group.url()]).build().await.expect("an engine")
}

/// Waits until `redlock`'s one node names `primary` as its primary (its link followed the
/// failover: a `+switch-master` notice, or a refused or failed call).
async fn follows(redlock: &Redlock, primary: SocketAddr) {
    let primary = primary.to_string();
    let followed = eventually(NO_HANG, || async {
        redlock.health().await.nodes[0].primary.as_deref() == Some(primary.as_str())
    })
    .await;
    assert!(followed, "the engine follows the failover to {primary}");
}

/// A rival's single attempt on `key`; when it gets the lock, the holder must no longer
/// believe it holds it.
async fn rival_attempt(rival: &Redlock, key: &str, holder: &HeldLock) -> bool {
    match rival.acquire_with(key, LockOptions::new().no_retry()).await {
        Ok(lock) => {
            assert!(
                !holder.is_held(),
                "a silent second holder: the rival got {key} while the holder holds it"
            );
            lock.release().await.unwrap();
            true
        }
        Err(LockError::Contended { .. }) => false,
        Err(e) => panic!("the rival's attempt: {e:?}"),
    }
}

#[tokio::test]
async fn a_forced_failover_while_held_keeps_the_replicated_lease() {
    let group = SentinelGroup::start("forced")
        .await
        .expect("a Sentinel group");
    let (holder, rival) = (engine(&group).await, engine(&group).await);
    let lock = holder.acquire("failover:a").await.expect("free");
    assert!(group.wait_replicated().await, "the replica has the lock");

    let new = group.failover().await.expect("a failover");
    assert_eq!(new, group.data().addr(1), "the replica was promoted");
    follows(&holder, new).await;

    // The lock is on the new primary: the holder extends it there, the rival is refused.
    lock.extend(Duration::from_secs(5))
        .await
        .expect("extended on the new primary");
    assert!(lock_value(group.data(), 1, "failover:a").await.is_some());
    assert!(!rival_attempt(&rival, "failover:a", &lock).await);
    let kept = lock.clone();
    lock.release().await.expect("released on the new primary");
    assert!(
        rival_attempt(&rival, "failover:a", &kept).await,
        "free after release"
    );
}

#[tokio::test]
async fn the_primary_killed_while_held_never_leaves_two_holders() {
    let group = SentinelGroup::start("killed")
        .await
        .expect("a Sentinel group");
    let (holder, rival) = (engine(&group).await, engine(&group).await);
    let lock = holder.acquire("failover:b").await.expect("free");
    assert!(group.wait_replicated().await, "the replica has the lock");

    let old = group.kill_primary().await.expect("the primary killed");
    let new = group.wait_new_primary(old).await.expect("a new primary");
    follows(&rival, new).await;
    follows(&holder, new).await;

    // Kept (the watchdog extended it on the new primary) or lost; either way the rival
    // gets the lock only once the holder knows it lost it.
    let rival_got_it = rival_attempt(&rival, "failover:b", &lock).await;
    if rival_got_it || !lock.is_held() {
        within("lost() fires", lock.lost()).await;
    } else {
        lock.extend(Duration::from_secs(5))
            .await
            .expect("a kept lease extends on the new primary");
        assert!(!rival_attempt(&rival, "failover:b", &lock).await);
    }
}
