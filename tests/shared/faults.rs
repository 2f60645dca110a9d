//! Shared leases under node faults: a majority partition loses them; two of five nodes
//! down, they still work.

use tower_redlock::{HeldLock, LockOptions, Redlock};

use crate::support::*;

async fn one_of_each(redlock: &Redlock, key: &str) -> Vec<HeldLock> {
    let once = LockOptions::new().no_retry();
    vec![
        redlock.acquire_read_with(key, once.clone()).await.unwrap(),
        redlock.acquire_read_with(key, once.clone()).await.unwrap(),
        redlock
            .acquire_permit_with(key, 2, once.clone())
            .await
            .unwrap(),
        redlock
            .acquire_write_with(format!("{key}-w"), once)
            .await
            .unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_partition_loses_every_kind() {
    let nodes = Proxied::start(5).await;
    let redlock = builder(nodes.urls()).ttl(SHORT_TTL).build().await.unwrap();
    let held = one_of_each(&redlock, "part").await;
    nodes.blackhole(0..3);
    for lock in &held {
        within("lost()", lock.lost()).await;
        assert!(!lock.is_held());
    }
    nodes.heal_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_five_down_still_works() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    cluster.kill(3).await.unwrap();
    cluster.kill(4).await.unwrap();
    let held = one_of_each(&redlock, "down").await;
    let once = LockOptions::new().no_retry();
    assert!(
        redlock
            .acquire_write_with("down", once.clone())
            .await
            .is_err()
    );
    // The second permit, then no third.
    let second = redlock.acquire_permit_with("down", 2, once.clone()).await;
    assert!(second.is_ok());
    assert!(redlock.acquire_permit_with("down", 2, once).await.is_err());
    for lock in held {
        lock.release().await.unwrap();
    }
}
