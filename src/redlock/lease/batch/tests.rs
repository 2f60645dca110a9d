//! The batched extension on simulated nodes under paused time (and one run on real Redis):
//! each test checks one rule of the safety argument in [`super`].

use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::redlock::core::validity;
use crate::redlock::node::Call;
use crate::redlock::sim::SimNode;
use crate::{HeldLock, Redlock};

const TTL: Duration = Duration::from_secs(3);
const NODE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on every wait (virtual time: it passes at once when nothing else runs).
const WAIT: Duration = Duration::from_secs(60);

fn nodes(n: usize) -> Vec<SimNode> {
    (0..n).map(|i| SimNode::with_seed(i as u64)).collect()
}

async fn engine(nodes: &[SimNode]) -> Redlock {
    Redlock::builder()
        .simulated_nodes(nodes.to_vec())
        .ttl(TTL)
        .node_timeout(NODE_TIMEOUT)
        .no_circuit_breaker()
        .build()
        .await
        .unwrap()
}

fn lock_key(lock: &HeldLock) -> String {
    lock.core().claim.keys.lock_keys()[0].clone()
}

/// Sets `key` to `value` on `node` (someone else's token, say), keeping it for a minute.
async fn overwrite(node: &SimNode, key: &str, value: &str) {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(60_000);
    node.connect().call(&Call::Command(cmd)).await.unwrap();
}

/// Waits (virtual time, bounded) until `done` holds, checking every 10 ms.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Whether at least a quorum of `nodes` hold `lock`'s token until at least its
/// `valid_until` (what the lease claims never exceeds what the nodes hold).
fn quorum_covers(nodes: &[SimNode], lock: &HeldLock) -> bool {
    let key = lock_key(lock);
    let token = lock.core().claim.token.as_bytes().to_vec();
    let now = Instant::now();
    let holding = nodes
        .iter()
        .filter(|node| {
            let value = node.value(&key);
            let ours = value.as_deref().is_some_and(|v| v.starts_with(&token));
            let pttl = u64::try_from(node.pttl(&key)).unwrap_or(0);
            ours && now + Duration::from_millis(pttl + 1) >= lock.valid_until()
        })
        .count();
    holding > nodes.len() / 2
}

/// One node refusing one lease's token affects that lease only; refused by more than
/// N − quorum nodes, a lease is lost at once, the others of its batch are extended.
#[tokio::test(start_paused = true)]
async fn a_refused_lease_affects_only_itself() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let kept = redlock.acquire("kept").await.unwrap();
    let one_refuses = redlock.acquire("one-refuses").await.unwrap();
    let two_refuse = redlock.acquire("two-refuse").await.unwrap();
    overwrite(&nodes[0], &lock_key(&one_refuses), "foreign").await;
    for node in &nodes[..2] {
        overwrite(node, &lock_key(&two_refuse), "foreign").await;
    }
    let first = kept.valid_until();
    // Their first extensions come due together: one batch.
    until(|| kept.valid_until() > first).await;
    assert!(
        !two_refuse.is_held(),
        "refused by two of three: lost at once"
    );
    assert!(
        Instant::now() < first,
        "lost on the refusal, not at the validity end"
    );
    assert!(
        one_refuses.valid_until() > first,
        "a quorum still extended it"
    );
    // And it stays so, tick after tick.
    let later = Instant::now() + TTL * 2;
    until(|| Instant::now() >= later).await;
    assert!(kept.is_held() && one_refuses.is_held());
    assert!(quorum_covers(&nodes, &kept) && quorum_covers(&nodes, &one_refuses));
    let key = lock_key(&kept);
    for node in &nodes {
        assert!(node.pttl(&key) > 0, "every node extended the kept lease");
    }
}

/// A batch that reaches no quorum (two of three nodes silent) retries, and the lease is
/// lost by the end of its validity, no later.
#[tokio::test(start_paused = true)]
async fn without_a_quorum_the_lease_is_lost_by_its_validity_end() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let lock = redlock.acquire("no-quorum").await.unwrap();
    let end = lock.valid_until();
    nodes[1].partition(true);
    nodes[2].partition(true);
    tokio::time::timeout(WAIT, lock.lost()).await.unwrap();
    // (Tokio's timers have a resolution of 1 ms.)
    assert!(
        Instant::now() <= end + Duration::from_millis(1),
        "lost() fired after the validity ended"
    );
    assert!(!lock.is_held());
}

/// The validity counts from the batch's start, not from when the replies came: with slow
/// nodes, `valid_until ≤ start + ttl − drift`, and the nodes hold the keys at least that
/// long.
#[tokio::test(start_paused = true)]
async fn validity_counts_from_the_batch_start() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let lock = redlock.acquire("from-start").await.unwrap();
    let acquired = Instant::now();
    for node in &nodes {
        node.set_delay(Duration::from_millis(300), Duration::ZERO);
    }
    let first = lock.valid_until();
    until(|| lock.valid_until() > first).await;
    // The batch started no later than the extension was due.
    let drift = validity::drift(TTL, redlock.engine.settings.drift_factor);
    let latest_start = acquired + TTL / 3;
    assert!(
        lock.valid_until() <= latest_start + TTL - drift,
        "validity counted from after the batch started"
    );
    assert!(quorum_covers(&nodes, &lock));
}

/// A user's `extend` racing the batch (slow nodes, the user's shorter ttl sent while the
/// batch is out) never leaves `valid_until` above what a quorum of nodes holds.
#[tokio::test(start_paused = true)]
async fn a_user_extend_racing_the_batch_never_overstates() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let lock = redlock.acquire("race").await.unwrap();
    for node in &nodes {
        node.set_delay(Duration::from_millis(400), Duration::ZERO);
    }
    let first = lock.valid_until();
    // 50 ms after the batch went out (its requests take 200 ms to arrive).
    let due = Instant::now() + TTL / 3 + Duration::from_millis(50);
    until(|| Instant::now() >= due).await;
    let user = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.extend(Duration::from_millis(1500)).await })
    };
    // The invariant holds at every moment while both run, and after.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        assert!(
            quorum_covers(&nodes, &lock),
            "valid_until above what a quorum holds"
        );
        sleep(Duration::from_millis(5)).await;
    }
    user.await.unwrap().unwrap();
    assert!(lock.valid_until() != first && lock.is_held());
    assert!(quorum_covers(&nodes, &lock));
}

/// A batch whose replies are lost after the nodes applied it (no quorum of answers, but
/// the nodes shortened the keys' expiry from a user's long extension to the ttl) leaves
/// `valid_until` at what the nodes hold: it was lowered before the batch was sent.
#[tokio::test(start_paused = true)]
async fn a_failed_batch_never_leaves_an_overstated_validity() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let lock = redlock.acquire("lowered").await.unwrap();
    lock.extend(Duration::from_secs(60)).await.unwrap();
    assert!(lock.remaining() > Duration::from_secs(50));
    for node in &nodes[1..] {
        node.drop_replies(true);
    }
    // The next batch reaches every node, but only one answer comes back.
    let due = Instant::now() + TTL / 3 + NODE_TIMEOUT * 2;
    while Instant::now() < due {
        assert!(
            quorum_covers(&nodes, &lock),
            "valid_until above what a quorum holds"
        );
        sleep(Duration::from_millis(5)).await;
    }
    assert!(
        lock.remaining() < TTL,
        "lowered to the batch's start + ttl − drift"
    );
}

/// Many leases are held through several ticks with one batch per tick.
#[tokio::test(start_paused = true)]
async fn many_leases_are_held_tick_after_tick() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let mut locks = Vec::new();
    for i in 0..2500 {
        locks.push(redlock.acquire(format!("many-{i}")).await.unwrap());
    }
    let later = Instant::now() + TTL * 3;
    until(|| Instant::now() >= later).await;
    assert!(locks.iter().all(HeldLock::is_held));
    assert!(locks.iter().all(|lock| quorum_covers(&nodes, lock)));
}

/// Without auto-extension a lease is not extended, and is lost at its validity end: by it,
/// at most the timers' resolution (1 ms) before it.
#[tokio::test(start_paused = true)]
async fn without_auto_extension_the_lease_ends_with_its_validity() {
    let nodes = nodes(3);
    let redlock = engine(&nodes).await;
    let options = crate::LockOptions::new().auto_extend(false);
    let lock = redlock.acquire_with("no-auto", options).await.unwrap();
    let end = lock.valid_until();
    tokio::time::timeout(WAIT, lock.lost()).await.unwrap();
    assert_eq!(lock.valid_until(), end);
    let now = Instant::now();
    assert!(now <= end, "lost() after the validity end");
    assert!(
        end - now <= Duration::from_millis(1),
        "lost() well before the end"
    );
}

/// Real Redis, several connection lanes per node: every lease's batch calls go down its own
/// lane, and the leases are held through several ticks.
#[cfg(feature = "testkit")]
#[tokio::test]
async fn real_redis_with_pool_lanes_holds_the_leases() {
    let cluster = crate::testkit::LocalCluster::start(3).await.unwrap();
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(TTL)
        .node_timeout(NODE_TIMEOUT)
        .pool_size(4)
        .build()
        .await
        .unwrap();
    let mut locks = Vec::new();
    for i in 0..200 {
        locks.push(redlock.acquire(format!("lanes-{i}")).await.unwrap());
    }
    let mut seen: Vec<_> = locks.iter().map(|lock| (lock.valid_until(), 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Every lease extended at least twice.
    while seen.iter().any(|(_, extended)| *extended < 2) {
        for (lock, (last, extended)) in locks.iter().zip(&mut seen) {
            assert!(lock.is_held(), "a lease was lost");
            if lock.valid_until() > *last {
                *last = lock.valid_until();
                *extended += 1;
            }
        }
        assert!(Instant::now() < deadline, "not extended twice in 30 s");
        sleep(Duration::from_millis(20)).await;
    }
    for lock in locks {
        lock.release().await.unwrap();
    }
}
