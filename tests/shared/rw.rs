//! Read/write leases: readers share; a writer excludes readers, writers and exclusive
//! leases; a waiting writer blocks new readers; readers are extended one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use tokio::time::Instant;
use tower_redlock::{LockError, LockOptions};

use crate::support::*;

fn once() -> LockOptions {
    LockOptions::new().no_retry()
}

fn contended<T: std::fmt::Debug>(result: Result<T, LockError>) -> bool {
    matches!(result, Err(LockError::Contended { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_and_writers_exclude() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let r1 = redlock.acquire_read_with("doc", once()).await.unwrap();
    let r2 = redlock.acquire_read_with("doc", once()).await.unwrap();
    // A reader excludes writers and exclusive leases on the same key.
    assert!(contended(redlock.acquire_write_with("doc", once()).await));
    assert!(contended(redlock.acquire_with("doc", once()).await));
    r1.release().await.unwrap();
    assert!(contended(redlock.acquire_write_with("doc", once()).await));
    r2.release().await.unwrap();
    // The last reader out frees the key.
    let w = redlock.acquire_write_with("doc", once()).await.unwrap();
    assert!(contended(redlock.acquire_read_with("doc", once()).await));
    assert!(contended(redlock.acquire_write_with("doc", once()).await));
    assert!(contended(redlock.acquire_with("doc", once()).await));
    w.release().await.unwrap();
    // An exclusive lease excludes readers and writers too.
    let x = redlock.acquire_with("doc", once()).await.unwrap();
    assert!(contended(redlock.acquire_read_with("doc", once()).await));
    assert!(contended(redlock.acquire_write_with("doc", once()).await));
    x.release().await.unwrap();
    let r = redlock.acquire_read_with("doc", once()).await.unwrap();
    r.release().await.unwrap();
    assert!(released_everywhere(&cluster, "doc").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_extended_one_by_one() {
    let cluster = cluster(3).await;
    let redlock = builder(cluster.urls())
        .ttl(SHORT_TTL)
        .build()
        .await
        .unwrap();
    let r1 = redlock.acquire_read("ext").await.unwrap();
    let r2 = redlock.acquire_read("ext").await.unwrap();
    let first = r1.valid_until();
    // The watchdog extends each reader past several ttls.
    let extended = eventually(NO_HANG, || async {
        r1.valid_until() > first + 2 * SHORT_TTL && r2.is_held()
    })
    .await;
    assert!(extended, "the readers were not extended");
    assert!(contended(redlock.acquire_write_with("ext", once()).await));
    // One reader's release leaves the other's lease (and the exclusion) alone.
    r2.release().await.unwrap();
    let before = r1.valid_until();
    assert!(eventually(NO_HANG, || async { r1.valid_until() > before }).await);
    assert!(r1.is_held());
    assert!(contended(redlock.acquire_write_with("ext", once()).await));
    // A user's extension of a reader: its own member only.
    r1.extend(4 * SHORT_TTL).await.unwrap();
    assert!(r1.remaining() > 2 * SHORT_TTL);
    r1.clone().release().await.unwrap();
    assert!(r1.extend(SHORT_TTL).await.is_err());
    let _w = redlock.acquire_write_with("ext", once()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_blocks_new_readers() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let reader = redlock.acquire_read("pref").await.unwrap();
    let writer = tokio::spawn({
        let redlock = redlock.clone();
        async move { redlock.acquire_write("pref").await }
    });
    // The writer, refused, left its intent on every node.
    let intent = format!("{PREFIX}{{pref}}:rw.intent");
    let left = eventually(NO_HANG, || async {
        let mut n = 0;
        for i in 0..3 {
            let exists: bool = raw(&cluster, i).await.exists(&intent).await.unwrap();
            n += usize::from(exists);
        }
        n == 3
    })
    .await;
    assert!(left, "the waiting writer left no intent");
    // Only a reader holds, but a new reader is refused: the writer goes first.
    assert!(contended(redlock.acquire_read_with("pref", once()).await));
    reader.release().await.unwrap();
    let w = within("the writer", writer).await.unwrap().unwrap();
    // Got in: its intent is gone, and readers wait for it to finish.
    let gone = eventually(NO_HANG, || async {
        let exists: bool = raw(&cluster, 0).await.exists(&intent).await.unwrap();
        !exists
    })
    .await;
    assert!(gone, "the intent outlived the writer's wait");
    assert!(contended(redlock.acquire_read_with("pref", once()).await));
    w.release().await.unwrap();
    let _r = redlock.acquire_read_with("pref", once()).await.unwrap();
}

/// Four readers keep the key read-held without a gap (each re-acquires while the others
/// hold); a writer still gets in, within a bound, and never overlaps a reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_gets_in_under_a_continuous_reader_load() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let (reading, writing) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (stop, overlaps, reads) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (redlock, reading, writing, stop, overlaps, reads) = (
            redlock.clone(),
            reading.clone(),
            writing.clone(),
            stop.clone(),
            overlaps.clone(),
            reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok(lock) = redlock.acquire_read("hot-report").await else {
                    continue;
                };
                reading.fetch_add(1, Ordering::SeqCst);
                if writing.load(Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                reading.fetch_sub(1, Ordering::SeqCst);
                let _ = lock.release().await;
            }
        }));
    }
    // The load is on: readers overlap each other.
    assert!(eventually(NO_HANG, || async { reading.load(Ordering::SeqCst) >= 2 }).await);
    let start = Instant::now();
    let mut writes = 0;
    for _ in 0..3 {
        let w = redlock.acquire_write("hot-report").await.unwrap();
        writing.store(true, Ordering::SeqCst);
        if reading.load(Ordering::SeqCst) > 0 {
            overlaps.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        writing.store(false, Ordering::SeqCst);
        w.release().await.unwrap();
        writes += 1;
        // Readers get back in between writes.
        let before = reads.load(Ordering::SeqCst);
        assert!(eventually(NO_HANG, || async { reads.load(Ordering::SeqCst) > before }).await);
    }
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        within("a reader", reader).await.unwrap();
    }
    assert_eq!(writes, 3);
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a writer overlapped a reader"
    );
    assert!(took < Duration::from_secs(20), "writers took {took:?}");
    println!(
        "3 writes under 4 looping readers in {took:?}; {} reads",
        reads.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_is_refused_for_readers_and_given_to_writers() {
    let cluster = cluster(3).await;
    let redlock = builder(cluster.urls()).fencing(true).build().await.unwrap();
    let err = redlock.acquire_read("fenced").await.unwrap_err();
    assert!(matches!(err, LockError::InvalidOptions { .. }), "{err}");
    let w1 = redlock.acquire_write("fenced").await.unwrap();
    let t1 = w1.fencing_token().unwrap();
    w1.release().await.unwrap();
    // Writers and exclusive leases share the counter.
    let x = redlock.acquire("fenced").await.unwrap();
    assert!(x.fencing_token().unwrap() > t1);
    x.release().await.unwrap();
    let r = redlock
        .acquire_read_with("fenced", LockOptions::new().fencing(false))
        .await
        .unwrap();
    assert_eq!(r.fencing_token(), None);
}

/// Waiters whose retry pauses are 20 s get in soon after the holder leaves: a finished
/// writer wakes a waiting reader, and the last reader out wakes a waiting writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_writer_or_last_reader_wakes_waiters() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster).await;
    let slow = || {
        LockOptions::new().retry(
            tower_redlock::RetryPolicy::until(Duration::from_secs(60))
                .base_delay(Duration::from_secs(20))
                .max_delay(Duration::from_secs(20)),
        )
    };
    for writer_first in [true, false] {
        let held = if writer_first {
            redlock.acquire_write("wake").await.unwrap()
        } else {
            redlock.acquire_read("wake").await.unwrap()
        };
        let waiter = tokio::spawn({
            let (redlock, options) = (redlock.clone(), slow());
            async move {
                if writer_first {
                    redlock.acquire_read_with("wake", options).await
                } else {
                    redlock.acquire_write_with("wake", options).await
                }
            }
        });
        // It tried, was refused, subscribed and marked the key.
        let (lock, channel) = (lock_key("wake"), released_channel("wake"));
        assert!(eventually(NO_HANG, || awaited(&cluster, &lock, &channel)).await);
        assert!(!waiter.is_finished());
        let freed = Instant::now();
        held.release().await.unwrap();
        let lock = within("the waiter", waiter).await.unwrap().unwrap();
        let took = freed.elapsed();
        assert!(took < Duration::from_secs(10), "woken after {took:?}");
        lock.release().await.unwrap();
    }
}
