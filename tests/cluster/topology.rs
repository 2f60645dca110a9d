//! The cluster changes under a held lease: a slot moved to another primary, a graceful
//! failover, a killed primary. Each time the lease is kept (or `lost()` fires): a rival
//! engine never gets the lock while the holder believes it holds it.

use redis::Value;
use tower_redlock::testkit::{CLUSTER_NODE_TIMEOUT, RedisCluster};
use tower_redlock::{HeldLock, LockError, LockOptions, Redlock, ReleaseOutcome};

use crate::redis_cluster;
use crate::support::*;

/// The Redis name of the lock of a key carrying hash tag `tag` (see `core/keys.rs`).
fn tagged_lock_key(tag: &str, key: &str) -> String {
    let escaped = key.replace('{', "%7B").replace('}', "%7D");
    format!("{PREFIX}{{{tag}}}:lock:{escaped}")
}

/// `rival` cannot take `key` now while `lease` is held.
async fn rival_is_refused(rival: &Redlock, key: &str, lease: &HeldLock) {
    let err = rival
        .acquire_with(key, LockOptions::new().no_retry())
        .await
        .expect_err("a second holder");
    assert!(lease.is_held(), "the lease was lost: {err:?}");
    assert!(
        matches!(
            err,
            LockError::Contended { .. } | LockError::Unavailable { .. }
        ),
        "{err:?}"
    );
}

/// The value node `i` of the cluster stores under `redis_key`.
async fn stored_at(cluster: &RedisCluster, i: usize, redis_key: &str) -> Option<Vec<u8>> {
    let mut get = redis::cmd("GET");
    get.arg(redis_key);
    match cluster.command(i, &get).await {
        Ok(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Waits until a whole ttl past the lease's current validity went by (only extensions keep
/// it held then).
async fn outlive_a_ttl(lease: &HeldLock) {
    let end = lease.valid_until();
    tokio::time::sleep_until(end + SHORT_TTL).await;
}

#[tokio::test]
async fn a_slot_moved_while_a_lease_is_held_keeps_the_lease() {
    let cluster = redis_cluster(3, 0).await;
    let holder = builder([cluster.url()])
        .ttl(SHORT_TTL)
        .build()
        .await
        .unwrap();
    let rival = builder([cluster.url()]).build().await.unwrap();
    let key = "move:{m}:a";
    let redis_key = tagged_lock_key("m", key);
    let slot = cluster.slot_of(&redis_key).await.unwrap();
    let lease = holder.acquire(key).await.unwrap();
    // Another lease in the slot, to be released while the slot migrates.
    let early_key = "move:{m}:c";
    let early = holder.acquire(early_key).await.unwrap();
    let from = cluster.owner(slot).await.unwrap();
    let to = *cluster
        .primaries()
        .await
        .unwrap()
        .iter()
        .find(|&&p| p != from)
        .unwrap();

    // Mid-migration: the key is still at `from` (served there); a new key of the slot
    // goes to `to` by ASK. A release is served too: it declares only the lock key (Redis
    // answers TRYAGAIN to a script with a declared key missing in a migrating slot, and a
    // wake-up channel is never stored, so it is an argument).
    cluster.begin_migration(slot, to).await.unwrap();
    assert_eq!(
        early.release().await.expect("released mid-migration"),
        ReleaseOutcome::Released
    );
    assert_eq!(
        stored_at(&cluster, from, &tagged_lock_key("m", early_key)).await,
        None
    );
    rival_is_refused(&rival, key, &lease).await;
    lease
        .extend(SHORT_TTL)
        .await
        .expect("extended at the old owner");
    let other = rival
        .acquire("move:{m}:b")
        .await
        .expect("a new key, by ASK");
    let mut count = redis::cmd("CLUSTER");
    count.arg("COUNTKEYSINSLOT").arg(slot);
    let at_to = cluster.command(to, &count).await.unwrap();
    assert_eq!(at_to, Value::Int(1), "created at the importing node");
    // Released mid-migration too, by ASK.
    assert_eq!(
        other
            .release()
            .await
            .expect("released at the importing node"),
        ReleaseOutcome::Released
    );
    assert_eq!(cluster.command(to, &count).await.unwrap(), Value::Int(0));

    cluster.finish_migration(slot, to).await.unwrap();
    assert!(
        stored_at(&cluster, to, &redis_key).await.is_some(),
        "the key moved"
    );
    rival_is_refused(&rival, key, &lease).await;
    // Extensions follow MOVED to the new owner.
    outlive_a_ttl(&lease).await;
    assert!(lease.is_held());
    rival_is_refused(&rival, key, &lease).await;
    lease.release().await.unwrap();
    assert_eq!(stored_at(&cluster, to, &redis_key).await, None);
    let _free = rival.acquire(key).await.expect("free after the release");
}

#[tokio::test]
async fn a_graceful_failover_while_a_lease_is_held_keeps_the_lease() {
    let cluster = redis_cluster(3, 1).await;
    let holder = builder([cluster.url()])
        .ttl(SHORT_TTL)
        .build()
        .await
        .unwrap();
    let rival = builder([cluster.url()]).build().await.unwrap();
    let key = "failover:a";
    let lease = holder.acquire(key).await.unwrap();
    let owner = cluster
        .owner(cluster.slot_of(&lock_key(key)).await.unwrap())
        .await
        .unwrap();
    let replica = cluster.replicas_of(owner).await.unwrap()[0];
    let before = holder.health().await.nodes[0].primary.clone().unwrap();

    cluster.failover(replica).await.unwrap();
    assert!(
        stored_at(&cluster, replica, &lock_key(key)).await.is_some(),
        "the promoted replica has the key"
    );
    rival_is_refused(&rival, key, &lease).await;
    outlive_a_ttl(&lease).await;
    assert!(lease.is_held(), "extended on the new primary");
    rival_is_refused(&rival, key, &lease).await;
    // Health reports the new primaries (looked up in the background after a report).
    let replica_addr = cluster.nodes().addr(replica).to_string();
    let reported = eventually(NO_HANG, || async {
        let primary = holder.health().await.nodes[0].primary.clone();
        primary.is_some_and(|p| p.contains(&replica_addr))
    })
    .await;
    assert!(reported, "health still says {before}");
    lease.release().await.unwrap();
    let _free = rival.acquire(key).await.expect("free after the release");
}

#[tokio::test]
async fn a_killed_primary_costs_one_vote_of_three() {
    let standalone = cluster(2).await;
    let cluster = redis_cluster(3, 1).await;
    let mut urls = vec![cluster.url()];
    urls.extend(standalone.urls());
    let holder = builder(urls.clone()).ttl(SHORT_TTL).build().await.unwrap();
    let rival = builder(urls).build().await.unwrap();
    assert_eq!((holder.node_count(), holder.quorum()), (3, 2));
    let key = "kill:a";
    let lease = holder.acquire(key).await.unwrap();
    let owner = cluster
        .owner(cluster.slot_of(&lock_key(key)).await.unwrap())
        .await
        .unwrap();
    let replica = cluster.replicas_of(owner).await.unwrap()[0];

    cluster.kill(owner).await.unwrap();
    rival_is_refused(&rival, key, &lease).await;
    outlive_a_ttl(&lease).await;
    assert!(lease.is_held(), "two standalone votes of three keep it");
    rival_is_refused(&rival, key, &lease).await;

    cluster
        .wait_primary(replica, NO_HANG.max(CLUSTER_NODE_TIMEOUT * 10))
        .await
        .unwrap();
    rival_is_refused(&rival, key, &lease).await;
    lease.release().await.unwrap();

    // The cluster votes again once its new primary serves the slot.
    let back = eventually(NO_HANG, || async {
        holder.health().await.nodes[0].reachable
    })
    .await;
    assert!(back, "the cluster node answers again");
    let again = rival.acquire(key).await.expect("free after the release");
    let on_cluster = eventually(NO_HANG, || async {
        stored_at(&cluster, replica, &lock_key(key)).await.is_some()
    })
    .await;
    assert!(on_cluster, "the new primary holds the new lock too");
    again.release().await.unwrap();
}
