//! acquire / extend / release / try_acquire / with_lock, tokens, drop and Send-ness.

use std::time::Duration;

use tokio::time::Instant;
use tower_redlock::{HeldLock, LockError, LockOptions, Redlock, ReleaseOutcome};

use crate::support::*;

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn handles_are_send_sync_static() {
    assert_send_sync::<Redlock>();
    assert_send_sync::<HeldLock>();
    assert_send_sync::<LockError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_extend_release() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;

    let before = Instant::now();
    let lock = redlock.acquire("basic").await.unwrap();
    let after = Instant::now();
    assert!(lock.is_held());
    assert_eq!(lock.key(), "basic");
    assert_eq!(lock.fencing_token(), None);
    // Validity is ttl − drift (50 ms + 2 ms), counted from a start within the call.
    let span = Duration::from_millis(5000 - 52);
    assert!(before + span <= lock.valid_until() && lock.valid_until() <= after + span);
    assert!(lock.remaining() <= span);
    // Decided at quorum: the last two nodes' SETs may still be landing.
    let everywhere = eventually(NO_HANG, || async { holders(&cluster, "basic").await == 5 }).await;
    assert!(everywhere, "the lock never reached all five nodes");

    // The token is 128 random bits (32 hex digits), the same on every node.
    let token = lock_value(&cluster, 0, "basic").await.unwrap();
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    for i in 1..5 {
        assert_eq!(lock_value(&cluster, i, "basic").await.unwrap(), token);
    }
    // ...and never shown.
    assert!(!format!("{lock:?}").contains(&token));

    // Someone else is told who holds it and for how long: the nodes' remaining time,
    // which outlasts our validity (asked before `left` was read) and is at most the ttl.
    let err = redlock.try_acquire("basic").await.unwrap_err();
    let left = lock.remaining();
    match err {
        LockError::Contended { retry_after, .. } => assert!(
            retry_after + Duration::from_millis(1) >= left && retry_after <= Duration::from_secs(5),
            "{retry_after:?} for {left:?} left"
        ),
        other => panic!("expected Contended, got {other:?}"),
    }
    assert!(err.is_contended() && !err.is_unavailable());

    // Extend: validity counts from the start of the call.
    let call = Instant::now();
    let old_end = lock.valid_until();
    lock.extend(Duration::from_secs(20)).await.unwrap();
    assert!(lock.valid_until() <= call + Duration::from_secs(20));
    assert!(lock.valid_until() > old_end + Duration::from_secs(10));
    // The nodes' expiry was moved too: another caller is told it outlasts our validity
    // (read after the answer) and is at most the new ttl.
    let err = redlock.try_acquire("basic").await.unwrap_err();
    let left = lock.remaining();
    match err {
        LockError::Contended { retry_after, .. } => assert!(
            retry_after + Duration::from_millis(1) >= left
                && retry_after <= Duration::from_secs(20),
            "{retry_after:?} for {left:?} left"
        ),
        other => panic!("expected Contended, got {other:?}"),
    }

    assert_eq!(
        lock.clone().release().await.unwrap(),
        ReleaseOutcome::Released
    );
    assert!(!lock.is_held());
    assert!(lock.is_released());
    assert_eq!(
        lock.release().await.unwrap(),
        ReleaseOutcome::AlreadyReleased
    );
    assert!(released_everywhere(&cluster, "basic").await);

    // A fresh token for every acquisition.
    let again = redlock.try_acquire("basic").await.unwrap();
    let token2 = lock_value(&cluster, 0, "basic").await.unwrap();
    assert_ne!(token, token2);
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lock_runs_and_always_releases() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;

    let value = redlock
        .with_lock("job", async |lock| {
            assert!(lock.is_held());
            assert!(redlock.try_acquire("job").await.unwrap_err().is_contended());
            41 + 1
        })
        .await
        .unwrap();
    assert_eq!(value, 42);
    // Released before with_lock returned.
    redlock
        .try_acquire("job")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    // Contention surfaces as an error, and the closure does not run.
    let holder = redlock.try_acquire("job").await.unwrap();
    let mut ran = false;
    let err = redlock
        .with_lock_options("job", LockOptions::new().no_retry(), async |_| ran = true)
        .await
        .unwrap_err();
    assert!(err.is_contended());
    assert!(!ran);
    holder.release().await.unwrap();

    // Spawnable: the future is Send.
    let r2 = redlock.clone();
    let joined = tokio::spawn(async move { r2.with_lock("spawned", async |_| 7).await })
        .await
        .unwrap();
    assert_eq!(joined.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_releases_in_background() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let other = redlock.clone();

    // A long ttl: the lease cannot simply run out while the test looks.
    let long = LockOptions::new().ttl(Duration::from_secs(60));
    let lock = redlock.acquire_with("dropped", long).await.unwrap();
    let clone = lock.clone();
    drop(lock);
    // A clone keeps the lease.
    assert!(clone.is_held());
    assert!(
        other
            .try_acquire("dropped")
            .await
            .unwrap_err()
            .is_contended()
    );
    let valid_until = clone.valid_until();
    drop(clone);

    // Another client gets it while the dropped lease would still be valid: it was
    // released, not left to expire.
    let got = other
        .acquire_with(
            "dropped",
            LockOptions::new().retry(tower_redlock::RetryPolicy::until(Duration::from_secs(50))),
        )
        .await
        .unwrap();
    assert!(Instant::now() < valid_until);
    got.release().await.unwrap();
}

#[test]
fn drop_without_blocking_on_a_current_thread_runtime() {
    // A single-threaded runtime deadlocks if Drop blocks on the release; it must not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = cluster(5).await;
        let redlock = redlock(&cluster).await;
        let lock = redlock.acquire("ct").await.unwrap();
        drop(lock);
        assert!(released_everywhere(&cluster, "ct").await);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_or_expired_lock_reports_it() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let lock = redlock
        .acquire_with(
            "short",
            LockOptions::new().ttl(SHORT_TTL).auto_extend(false),
        )
        .await
        .unwrap();
    tokio::time::timeout(NO_HANG, lock.lost())
        .await
        .expect("lost() resolves when the lease runs out");
    assert!(!lock.is_held());
    assert!(released_everywhere(&cluster, "short").await);
    assert_eq!(
        lock.release().await.unwrap(),
        ReleaseOutcome::AlreadyExpired
    );

    let mine = redlock
        .acquire_with(
            "taken",
            LockOptions::new().ttl(SHORT_TTL).auto_extend(false),
        )
        .await
        .unwrap();
    mine.lost().await;
    // The nodes' copies expire a few ms after the local validity (the drift allowance).
    assert!(released_everywhere(&cluster, "taken").await);
    let theirs = redlock.acquire("taken").await.unwrap();
    assert_eq!(mine.release().await.unwrap(), ReleaseOutcome::OwnedByOther);
    assert!(theirs.is_held());
    // Our release deleted nothing of theirs: they still hold a quorum.
    assert!(holders(&cluster, "taken").await >= 3);
    theirs.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_locks_are_order_independent() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let ab = redlock.acquire_many(["a", "b"]).await.unwrap();
    assert_eq!(ab.keys(), ["a", "b"]);
    // Overlapping sets exclude each other, in any order; disjoint sets do not.
    assert!(
        redlock
            .acquire_many_with(["b", "a"], LockOptions::new().no_retry())
            .await
            .unwrap_err()
            .is_contended()
    );
    assert!(
        redlock
            .acquire_many_with(["c", "b"], LockOptions::new().no_retry())
            .await
            .unwrap_err()
            .is_contended()
    );
    // The failed attempt left nothing on "c".
    assert_eq!(holders(&cluster, "c").await, 0);
    let cd = redlock.acquire_many(["d", "c"]).await.unwrap();
    ab.release().await.unwrap();
    cd.release().await.unwrap();
}
