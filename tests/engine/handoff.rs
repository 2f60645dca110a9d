//! Local hand-off: a lease released while another task of the same process waits for the
//! key moves to that task's fresh token in one step, never leaving the key free; waiters
//! elsewhere are not starved by it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_redlock::testkit::LocalCluster;
use tower_redlock::{HeldLock, LockError, LockOptions, Redlock, ReleaseOutcome, RetryPolicy};

use crate::support::*;

/// Spawns `acquire` and returns once its first poll is over: when it is pending, the task
/// holds its place in the process's line for the key (taken synchronously on first poll).
async fn spawn_queued<F>(acquire: F) -> JoinHandle<Result<HeldLock, LockError>>
where
    F: Future<Output = Result<HeldLock, LockError>> + Send + 'static,
{
    let (polled, queued) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut acquire = Box::pin(acquire);
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        let _ = polled.send(());
        match first {
            Poll::Ready(result) => result,
            Poll::Pending => acquire.await,
        }
    });
    queued.await.expect("the acquiring task was polled");
    task
}

/// Sets up, on `engine`: a lease `b` on `keys` that owns the process's turn on them (it
/// waited for it), and a task queued behind it, acquiring with `follower`. Returns `b`, its
/// value on the nodes, a node that holds it, and the follower's task.
async fn holder_with_follower(
    cluster: &LocalCluster,
    engine: &Redlock,
    keys: &'static [&'static str],
    follower: LockOptions,
) -> (
    HeldLock,
    String,
    usize,
    JoinHandle<Result<HeldLock, LockError>>,
) {
    let key = keys[0];
    let a = engine.acquire_many(keys).await.unwrap();
    // B fails once, takes the turn, marks the keys and waits for A's release.
    let e = engine.clone();
    let b = tokio::spawn(async move { e.acquire_many(keys).await });
    let marked = eventually(NO_HANG, || async {
        lock_value(cluster, 0, key)
            .await
            .is_some_and(|v| v.ends_with('+'))
    })
    .await;
    assert!(marked, "the first waiter never marked the key");
    let e = engine.clone();
    let c = spawn_queued(async move { e.acquire_many_with(keys, follower).await }).await;
    assert_eq!(a.release().await.unwrap(), ReleaseOutcome::Released);
    let b = b.await.unwrap().expect("the first waiter gets the lock");
    // A node where B's token landed (a release straggler of A's may have refused it on one).
    let found = std::sync::Mutex::new(None);
    let seen = eventually(NO_HANG, || async {
        for i in 0..cluster.len() {
            if let Some(v) = lock_value(cluster, i, key)
                .await
                .filter(|v| !v.ends_with('+'))
            {
                *found.lock().unwrap() = Some((v, i));
                return true;
            }
        }
        false
    })
    .await;
    assert!(seen, "B's token is on no node");
    let (value, node) = found.into_inner().unwrap().unwrap();
    (b, value, node, c)
}

/// Subscribes to the keyspace events of lock key `key` on node `i`.
async fn key_events(
    cluster: &LocalCluster,
    i: usize,
    key: &str,
) -> impl futures_util::Stream<Item = String> + Unpin {
    let mut conn = raw(cluster, i).await;
    let () = redis::cmd("CONFIG")
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
    pubsub
        .into_on_message()
        .map(|msg| msg.get_payload::<String>().unwrap())
}

/// The key's next event is a `set` (the hand-off), not a `del` first.
async fn assert_set_first(events: &mut (impl futures_util::Stream<Item = String> + Unpin)) {
    let first = tokio::time::timeout(NO_HANG, events.next())
        .await
        .expect("a keyspace event for the hand-off")
        .unwrap();
    assert_eq!(
        first, "set",
        "the key went through {first:?} before the hand-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_waiter_takes_the_lease_over_without_the_key_going_free() {
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    let (b, b_value, node, c) =
        holder_with_follower(&cluster, &engine, &["relay"], LockOptions::new()).await;
    let mut events = key_events(&cluster, node, "relay").await;

    assert_eq!(b.release().await.unwrap(), ReleaseOutcome::Released);
    let c = c.await.unwrap().expect("the follower gets the lease");
    assert!(c.is_held());
    assert!(c.remaining() <= engine.ttl());
    // On the node, B's token was replaced by C's in one write: a set, never a del first.
    assert_set_first(&mut events).await;
    let c_value = lock_value(&cluster, node, "relay").await.unwrap();
    assert_ne!(c_value, b_value, "the new holder has a fresh token");
    assert!(holders(&cluster, "relay").await >= engine.quorum());
    assert_eq!(c.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(released_everywhere(&cluster, "relay").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_lease_is_handed_on_whole() {
    const KEYS: &[&str] = &["pair-a", "pair-b"];
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    let (b, b_value, node, c) =
        holder_with_follower(&cluster, &engine, KEYS, LockOptions::new()).await;
    let mut events_a = key_events(&cluster, node, KEYS[0]).await;
    let mut events_b = key_events(&cluster, node, KEYS[1]).await;
    assert_eq!(b.release().await.unwrap(), ReleaseOutcome::Released);
    let c = c.await.unwrap().expect("the follower gets the lease");
    assert_eq!(c.keys(), KEYS);
    assert_set_first(&mut events_a).await;
    assert_set_first(&mut events_b).await;
    let (a_value, other_value) = (
        lock_value(&cluster, node, KEYS[0]).await.unwrap(),
        lock_value(&cluster, node, KEYS[1]).await.unwrap(),
    );
    assert_eq!(
        a_value, other_value,
        "both keys carry the new holder's token"
    );
    assert_ne!(a_value, b_value);
    assert_eq!(c.release().await.unwrap(), ReleaseOutcome::Released);
    for key in KEYS {
        assert!(released_everywhere(&cluster, key).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_the_follower_cannot_take_is_released() {
    let cluster = cluster(5).await;
    // A long ttl for B: its keys cannot simply run out while the test looks.
    let engine = builder(cluster.urls())
        .ttl(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    // The follower wants another ttl: it cannot take B's lease as it is.
    let other_ttl = LockOptions::new().ttl(Duration::from_secs(7));
    let (b, _, _, c) = holder_with_follower(&cluster, &engine, &["relay2"], other_ttl).await;
    let b_valid_until = b.valid_until();
    assert_eq!(b.release().await.unwrap(), ReleaseOutcome::Released);
    let c = c.await.unwrap().expect("the follower gets the lock");
    // While B's lease would still be valid: it was released, not left to expire.
    assert!(
        Instant::now() < b_valid_until,
        "the follower got the lock only after B's validity"
    );
    assert!(c.is_held());
    assert_eq!(c.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(released_everywhere(&cluster, "relay2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_in_another_process_is_not_starved_by_hand_offs() {
    let cluster = cluster(5).await;
    let busy = redlock(&cluster).await;
    let other = redlock(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sections = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + 3 * NO_HANG;
    // Four tasks of one process keep the key busy: each release has a local follower.
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (busy, stop, sections) = (busy.clone(), stop.clone(), sections.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(lock) = busy.acquire("busy").await {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    sections.fetch_add(1, Ordering::Relaxed);
                    lock.release().await.unwrap();
                }
            }
        }));
    }
    let warm = eventually(NO_HANG, || async { sections.load(Ordering::Relaxed) >= 20 }).await;
    assert!(warm, "the busy process never got going");
    let lock = other
        .acquire_with(
            "busy",
            LockOptions::new().retry(RetryPolicy::until(NO_HANG)),
        )
        .await
        .expect("the waiter elsewhere gets the lock between the local hand-offs");
    lock.release().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.unwrap();
    }
}

/// How long each proxy holds each direction in the carried-over tests: no reply can come
/// back sooner than twice this. The tests use it only for lower bounds (a round trip takes
/// at least this long, however fast or loaded the machine).
const ONE_WAY: Duration = Duration::from_millis(250);

/// The carried-over tests' node timeout: long, so that nothing times out while the test
/// holds the nodes (SIGSTOP) or the machine is loaded.
const SLOW_NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// The carried-over tests' ttl: more than two node timeouts of validity (a carry needs
/// that), and a first watchdog extension (after ttl/3) well after any [`NO_HANG`] wait.
const SLOW_TTL: Duration = Duration::from_secs(120);

/// What the carried-over tests start from: an engine reaching `cluster`'s nodes through
/// fault proxies, a lease `b` on `key` with a local follower queued behind it (see
/// [`holder_with_follower`]), then every proxy delaying each direction by [`ONE_WAY`].
async fn slowed_holder_with_follower(
    cluster: &LocalCluster,
    key: &'static [&'static str],
) -> (
    Redlock,
    Vec<tower_redlock::testkit::FaultProxy>,
    HeldLock,
    String,
    JoinHandle<Result<HeldLock, LockError>>,
) {
    let proxies = cluster.proxies().await.unwrap();
    let engine = builder(cluster.urls())
        .nodes(proxies.iter().map(|p| p.url()))
        .ttl(SLOW_TTL)
        .node_timeout(SLOW_NODE_TIMEOUT)
        .build()
        .await
        .unwrap();
    let (b, b_value, _, c) = holder_with_follower(cluster, &engine, key, LockOptions::new()).await;
    for proxy in &proxies {
        proxy.set_latency(ONE_WAY);
    }
    (engine, proxies, b, b_value, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_over_follower_starts_before_the_swap_lands() {
    let cluster = cluster(5).await;
    let (engine, _proxies, b, b_value, c) = slowed_holder_with_follower(&cluster, &["carry"]).await;
    let before = b.valid_until();
    // Every node is frozen (SIGSTOP): the swap to the follower's token cannot land until
    // they resume, so a follower that starts now started before the swap landed.
    pause(&cluster, 0..cluster.len());
    let let_go = Instant::now();
    let release_b = tokio::spawn(b.release());
    let c = c.await.unwrap().expect("the follower gets the lease");
    assert!(
        !release_b.is_finished(),
        "B's release (the swap) ended before the follower started"
    );
    assert!(c.is_held(), "the follower's lease was decided by the nodes");
    assert!(
        c.valid_until() <= before,
        "it runs on the ending lease's validity"
    );
    resume(&cluster, 0..cluster.len());
    // Whatever the follower sends waits for the swap: an extension sent at once could
    // overtake it on a node, find the old token there and count as a refusal. The swap
    // lands a round trip after `let_go` at the earliest, the extension one more after that
    // (lower bounds: they hold on any machine).
    c.extend(SLOW_TTL).await.unwrap();
    let took = let_go.elapsed();
    assert!(
        took >= 4 * ONE_WAY - Duration::from_millis(50),
        "the extension did not wait for the swap: {took:?}"
    );
    // Once the swap landed, the follower's lease has a fresh validity and a token of its own.
    let e = engine.clone();
    let d = spawn_queued(async move { e.acquire("carry").await }).await;
    assert_eq!(release_b.await.unwrap().unwrap(), ReleaseOutcome::Released);
    assert!(
        c.valid_until() > before,
        "the swap gave it a fresh validity"
    );
    let mut moved = 0;
    for i in 0..cluster.len() {
        let value = lock_value(&cluster, i, "carry").await;
        moved += usize::from(value.is_some_and(|v| v != b_value));
    }
    assert!(moved >= 3, "the new token is on {moved} nodes");
    // C carries over to D, and D lets go at once, before its own swap landed: its release
    // waits for that swap, so on every node it comes after it and no key is left behind.
    let let_go = Instant::now();
    let release_c = tokio::spawn(c.release());
    let d = d.await.unwrap().expect("the next follower gets the lease");
    assert_eq!(d.release().await.unwrap(), ReleaseOutcome::Released);
    // Two round trips at least from C letting go: C's swap, then D's release (a release
    // sent at once could overtake the swap on a node, and the swap would then set a token
    // nobody holds).
    let took = let_go.elapsed();
    assert!(
        took >= 4 * ONE_WAY - Duration::from_millis(50),
        "D's release did not wait for the swap: {took:?}"
    );
    assert_eq!(release_c.await.unwrap().unwrap(), ReleaseOutcome::Released);
    assert!(
        released_everywhere(&cluster, "carry").await,
        "a token outlived its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_over_lease_whose_swap_fails_is_lost() {
    let cluster = cluster(5).await;
    let (_engine, _proxies, b, _, c) = slowed_holder_with_follower(&cluster, &["carry-lost"]).await;
    // B's keys vanish behind its back on three nodes (as after restarts without
    // persistence): the swap can reach no quorum.
    for i in 0..3 {
        let mut conn = raw(&cluster, i).await;
        let _: i64 = redis::AsyncCommands::del(&mut conn, lock_key("carry-lost"))
            .await
            .unwrap();
    }
    let release_b = tokio::spawn(b.release());
    let c = c
        .await
        .unwrap()
        .expect("the follower starts on B's validity");
    assert!(c.is_held());
    // From the swap itself: the first watchdog extension is due only after ttl/3 (40 s),
    // past this no-hang bound.
    assert!(NO_HANG < SLOW_TTL / 3);
    tokio::time::timeout(NO_HANG, c.lost())
        .await
        .expect("the follower is told its lease is lost");
    assert!(!c.is_held());
    assert_eq!(
        release_b.await.unwrap().unwrap(),
        ReleaseOutcome::AlreadyExpired
    );
}

/// The switch: with local hand-over off, a lease released while another task of the
/// process waits for the key is deleted (the key goes free) and the waiter takes the lock
/// with its own acquisition. With it on, the same steps hand the lease over (a `set`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_handover_off_the_key_is_released_and_acquired_again() {
    let cluster = cluster(3).await;
    for handover in [true, false] {
        let engine = builder(cluster.urls())
            .local_handover(handover)
            .build()
            .await
            .unwrap();
        let a = engine.acquire("plain").await.unwrap();
        // Both waiters keep trying for as long as the test may take.
        let patient = || LockOptions::new().retry(retry_for(NO_HANG));
        let e = engine.clone();
        let b = tokio::spawn(async move { e.acquire_with("plain", patient()).await });
        let marked = eventually(NO_HANG, || async {
            lock_value(&cluster, 0, "plain")
                .await
                .is_some_and(|v| v.ends_with('+'))
        })
        .await;
        assert!(marked, "the first waiter never marked the key");
        let e = engine.clone();
        let c = spawn_queued(async move { e.acquire_with("plain", patient()).await }).await;
        assert_eq!(a.release().await.unwrap(), ReleaseOutcome::Released);
        // On, B has the turn and C waits behind it; off, either may win the nodes.
        let (mut b, mut c) = (b, c);
        let (first, other) = tokio::select! {
            first = &mut b => (first, c),
            first = &mut c => (first, b),
        };
        let first = first.unwrap().expect("a waiter gets the lock");
        let mut events = key_events(&cluster, 0, "plain").await;
        assert_eq!(first.release().await.unwrap(), ReleaseOutcome::Released);
        // The first write after its release (a waiter's mark is an `append`: skipped).
        let first = loop {
            let event = tokio::time::timeout(NO_HANG, events.next())
                .await
                .expect("a keyspace event for the release")
                .unwrap();
            if event != "append" {
                break event;
            }
        };
        let expected = if handover { "set" } else { "del" };
        assert_eq!(first, expected, "local hand-over {handover}");
        let other = other.await.unwrap().expect("the last waiter gets the lock");
        assert_eq!(other.release().await.unwrap(), ReleaseOutcome::Released);
        assert!(released_everywhere(&cluster, "plain").await);
        engine.shutdown().await;
    }
}
