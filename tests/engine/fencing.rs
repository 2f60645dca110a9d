//! Fencing tokens strictly increase across successive holders.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_over_1000_holders_from_4_clients() {
    let cluster = cluster().await;
    let seen = Arc::new(Mutex::new(Vec::with_capacity(1000)));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let redlock = builder(&cluster).fencing(true).build().await.unwrap();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                assert!(
                    Instant::now() < deadline,
                    "fencing test ran past its deadline"
                );
                let Ok(lock) = redlock.acquire("fenced").await else {
                    continue;
                };
                let token = lock.fencing_token().expect("fencing is on");
                let done = {
                    let mut seen = seen.lock().unwrap();
                    if seen.len() < 1000 {
                        // Recorded while holding the lock: the vector is in acquisition order.
                        seen.push(token);
                    }
                    seen.len() >= 1000
                };
                lock.release().await.unwrap();
                if done {
                    return;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1000);
    for pair in seen.windows(2) {
        assert!(
            pair[0] < pair[1],
            "fencing tokens went {} then {}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_minority_restarted_empty() {
    let cluster = cluster().await;
    let redlock = builder(&cluster).fencing(true).build().await.unwrap();
    let mut last = 0;
    for round in 0..6 {
        let lock = redlock.acquire("restarts").await.unwrap();
        let token = lock.fencing_token().unwrap();
        assert!(token > last, "round {round}: {token} after {last}");
        last = token;
        lock.release().await.unwrap();
        // Two nodes lose everything between holders.
        cluster.restart(round % 5).await.unwrap();
        cluster.restart((round + 1) % 5).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_followers_get_fresh_fencing_tokens() {
    // Four tasks of one process on one key: each release has a local follower, and with
    // fencing on the lease is released and acquired anew, never handed on.
    let cluster = cluster().await;
    let redlock = builder(&cluster).fencing(true).build().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::with_capacity(200)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (redlock, seen) = (redlock.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                assert!(Instant::now() < deadline, "ran past its deadline");
                let Ok(lock) = redlock.acquire("fenced-local").await else {
                    continue;
                };
                let token = lock
                    .fencing_token()
                    .expect("every holder has a fencing token");
                let done = {
                    let mut seen = seen.lock().unwrap();
                    if seen.len() < 200 {
                        seen.push(token);
                    }
                    seen.len() >= 200
                };
                lock.release().await.unwrap();
                if done {
                    return;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "fencing tokens did not strictly increase: {seen:?}"
    );
}
