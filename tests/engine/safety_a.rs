//! Safety regressions (issue 11): keys that could pass for other key sets, a breaker probe
//! cancelled mid-attempt, releases cancelled mid-way, extensions racing each other.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{CircuitBreaker, LockError, LockOptions, ReleaseOutcome};

use crate::support::*;

/// Polls `future` once, then drops it.
async fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// No key set can be forged from one key: a NUL (or any ASCII control character) is
/// refused before any node is asked, and the refusal does not echo the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_control_character_cannot_pass_for_a_key_set() {
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    // Spelled like the pair's line in the local queue when ids were joined with NUL.
    let forged = format!("secret:1\u{0}{}", lock_key("secret:2"));
    for key in [forged.as_str(), "secret\n", "secret\u{7f}"] {
        let err = engine.try_acquire(key).await.unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let err = engine
        .acquire_many(["secret:1", forged.as_str()])
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
    assert_eq!(holders(&cluster, &forged).await, 0);
    assert_eq!(holders(&cluster, "secret:1").await, 0);
}

/// A multi-key waiter queued in this process while single-key leases on one of its keys
/// come and go (with hand-offs between them) gets a lease on exactly its own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_waiter_only_ever_gets_its_own_keys() {
    const PAIR: [&str; 2] = ["acct:1", "acct:2"];
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    let rival = redlock(&cluster).await;
    let first = engine.acquire(PAIR[0]).await.unwrap();
    // Two single-key waiters (the second is handed the first's lease) and a pair waiter.
    let singles: Vec<_> = (0..2)
        .map(|_| {
            let e = engine.clone();
            tokio::spawn(async move {
                let lock = e.acquire(PAIR[0]).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let keys = lock.keys().to_vec();
                lock.release().await?;
                Ok::<_, LockError>(keys)
            })
        })
        .collect();
    // The pair may win before the singles or after them: each waiter lets go by itself.
    let e = engine.clone();
    let pair = tokio::spawn(async move {
        let lock = e.acquire_many(PAIR).await?;
        let keys = lock.keys().to_vec();
        // Really held on the nodes: another engine is refused the second key.
        let refused = rival.try_acquire(PAIR[1]).await.unwrap_err();
        let outcome = lock.release().await?;
        Ok::<_, LockError>((keys, refused, outcome))
    });
    let marked = eventually(Duration::from_secs(5), || async {
        lock_value(&cluster, 0, PAIR[0])
            .await
            .is_some_and(|v| v.ends_with('+'))
    })
    .await;
    assert!(marked, "nobody waited on the nodes");
    assert_eq!(first.release().await.unwrap(), ReleaseOutcome::Released);
    for single in singles {
        assert_eq!(
            within("a single waiter", single).await.unwrap().unwrap(),
            [PAIR[0]]
        );
    }
    let (keys, refused, outcome) = within("the pair waiter", pair)
        .await
        .unwrap()
        .expect("the pair waiter gets its lock");
    assert_eq!(keys, PAIR);
    assert!(refused.is_contended(), "{refused:?}");
    assert_eq!(outcome, ReleaseOutcome::Released);
    for key in PAIR {
        assert!(released_everywhere(&cluster, key).await);
    }
}

/// The half-open probe's acquire, dropped mid-attempt, gives the probe slot back: the next
/// attempt is admitted (before, the breaker stayed half-open and failed every attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_mid_attempt_does_not_wedge_the_breaker() {
    let cluster = cluster(5).await;
    let engine = builder(cluster.urls())
        .circuit_breaker(CircuitBreaker::new(1, Duration::from_millis(200)))
        .build()
        .await
        .unwrap();
    pause(&cluster, 0..3);
    let err = engine.try_acquire("probe").await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    resume(&cluster, 0..3);
    // Once the cool-down is over, the first attempt is the probe: polled once (its requests
    // sent, no reply yet), then dropped.
    let mut dropped = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match poll_once(engine.try_acquire("probe")).await {
            Poll::Pending => {
                dropped = true;
                break;
            }
            // Still cooling down, or the probe failed at once (nodes not back yet).
            Poll::Ready(Err(LockError::Unavailable { .. })) => {}
            Poll::Ready(other) => panic!("the probe finished at its first poll: {other:?}"),
        }
    }
    assert!(dropped, "no probe was ever in flight");
    let admitted = eventually(Duration::from_secs(15), || async {
        match engine.try_acquire("probe").await {
            Ok(lock) => lock.release().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        admitted,
        "the breaker stayed half-open after its probe was dropped"
    );
}

/// A release whose future is dropped after it began (a client disconnect, a cancelled
/// `with_lock`) still happens, in the background: a local waiter and another engine get
/// the key long before its 60 s ttl, and no node keeps it. One thread: the release's
/// requests are queued but not yet written when it is dropped, so none of them would go
/// out on its own.
#[tokio::test]
async fn a_release_dropped_mid_way_still_releases() {
    const KEY: &str = "cancelled-release";
    let cluster = cluster(5).await;
    let long = || builder(cluster.urls()).ttl(Duration::from_secs(60));
    let engine = long().build().await.unwrap();
    let other = long().build().await.unwrap();
    let lock = engine.acquire(KEY).await.unwrap();
    let e = engine.clone();
    let waiter = tokio::spawn(async move {
        let options =
            LockOptions::new().retry(tower_redlock::RetryPolicy::until(Duration::from_secs(30)));
        e.acquire_with(KEY, options).await
    });
    let marked = eventually(Duration::from_secs(5), || async {
        lock_value(&cluster, 0, KEY)
            .await
            .is_some_and(|v| v.ends_with('+'))
    })
    .await;
    assert!(marked, "the local waiter never waited on the nodes");

    assert!(poll_once(lock.release()).await.is_pending());
    let next = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the local waiter got the key before the ttl")
        .unwrap()
        .expect("the local waiter got the key");
    assert_eq!(next.release().await.unwrap(), ReleaseOutcome::Released);
    let free = eventually(Duration::from_secs(20), || async {
        holders(&cluster, KEY).await == 0
    })
    .await;
    assert!(free, "a node kept the key");
    let lock = other
        .try_acquire(KEY)
        .await
        .expect("another engine gets it");
    lock.release().await.unwrap();

    // Uncontended, with nobody waiting: the same.
    let lock = engine.acquire(KEY).await.unwrap();
    assert!(poll_once(lock.release()).await.is_pending());
    let free = eventually(Duration::from_secs(20), || async {
        holders(&cluster, KEY).await == 0
    })
    .await;
    assert!(free, "a node kept the key");
    let lock = other
        .try_acquire(KEY)
        .await
        .expect("another engine gets it");
    lock.release().await.unwrap();
}

/// The latest expiry that at least a quorum of nodes holds for lock key `key`, as a lower
/// bound on the monotonic clock (each `PTTL` asked after `Instant::now()`, taken per node
/// once connected: one instant before every connection would understate the later nodes'
/// expiry by the connections' time, which on a loaded machine fails the check falsely).
async fn quorum_expiry(cluster: &tower_redlock::testkit::LocalCluster, key: &str) -> Instant {
    let mut ends = Vec::new();
    for i in 0..cluster.len() {
        let mut conn = raw(cluster, i).await;
        let asked = Instant::now();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(lock_key(key))
            .query_async(&mut conn)
            .await
            .unwrap();
        ends.push(asked + Duration::from_millis(u64::try_from(pttl).unwrap_or(0)));
    }
    ends.sort_unstable_by(|a, b| b.cmp(a));
    ends[cluster.len() / 2]
}

/// `valid_until` never overstates what a quorum of nodes holds (1 ms for `PTTL`'s rounding).
async fn assert_not_overstated(
    cluster: &tower_redlock::testkit::LocalCluster,
    lock: &tower_redlock::HeldLock,
    round: usize,
) {
    let claimed = lock.valid_until();
    let held = quorum_expiry(cluster, lock.key()).await + Duration::from_millis(1);
    assert!(
        claimed <= held,
        "round {round}: valid_until is {:?} past what a quorum holds",
        claimed - held
    );
}

fn no_watchdog() -> LockOptions {
    LockOptions::new().auto_extend(false)
}

/// A long extension sent first but finishing last (its caller was busy) must not leave
/// `valid_until` at its end when a short one sent after it ran last on the nodes.
#[tokio::test]
async fn an_extension_finishing_last_does_not_overstate_the_lease() {
    const KEY: &str = "ext-order";
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    let lock = engine.acquire_with(KEY, no_watchdog()).await.unwrap();
    let (a, b) = (lock.clone(), lock.clone());
    let mut long = std::pin::pin!(a.extend(Duration::from_secs(60)));
    // The long extension's requests are queued; then its caller looks away.
    let first = std::future::poll_fn(|cx| Poll::Ready(long.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    let mut short = std::pin::pin!(b.extend(Duration::from_secs(5)));
    // The short one, alone: it used to run at once; now it waits for the long one.
    let short_alone = tokio::time::timeout(Duration::from_millis(300), short.as_mut()).await;
    long.await.unwrap();
    match short_alone {
        Ok(result) => result.unwrap(),
        Err(_waiting) => short.await.unwrap(),
    }
    assert_not_overstated(&cluster, &lock, 0).await;
    lock.release().await.unwrap();
}

/// Long and short extensions of one lease, from two clones at once, many times: after
/// each round, `valid_until` is within what a quorum of nodes holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_extensions_never_overstate_the_lease() {
    const KEY: &str = "ext-race";
    const ROUNDS: usize = 40;
    let cluster = cluster(5).await;
    let engine = redlock(&cluster).await;
    let lock = engine.acquire_with(KEY, no_watchdog()).await.unwrap();
    for round in 0..ROUNDS {
        let (a, b) = (lock.clone(), lock.clone());
        let (long, short) = (Duration::from_secs(60), Duration::from_secs(5));
        let (first, second) = if round % 2 == 0 {
            (long, short)
        } else {
            (short, long)
        };
        let one = tokio::spawn(async move { a.extend(first).await });
        let two = tokio::spawn(async move { b.extend(second).await });
        one.await.unwrap().unwrap();
        two.await.unwrap().unwrap();
        assert_not_overstated(&cluster, &lock, round).await;
    }
    lock.release().await.unwrap();
}
