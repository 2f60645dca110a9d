//! Fencing tokens strictly increase across successive holders.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tower_redlock::Redlock;

use crate::support::*;

/// Runs one task per engine in `engines`, all taking `key` in turn, until `holders` locks
/// were held; returns their fencing tokens in acquisition order (each recorded while held).
async fn tokens_of_successive_holders(
    engines: Vec<Redlock>,
    key: &'static str,
    holders: usize,
) -> Vec<u64> {
    let seen = Arc::new(Mutex::new(Vec::with_capacity(holders)));
    let deadline = Instant::now() + Duration::from_secs(240);
    let tasks: Vec<_> = engines
        .into_iter()
        .map(|redlock| {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "fencing test ran past its deadline"
                    );
                    let Ok(lock) = redlock.acquire(key).await else {
                        continue;
                    };
                    let token = lock
                        .fencing_token()
                        .expect("every holder has a fencing token");
                    let done = {
                        let mut seen = seen.lock().unwrap();
                        if seen.len() < holders {
                            seen.push(token);
                        }
                        seen.len() >= holders
                    };
                    lock.release().await.unwrap();
                    if done {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), holders);
    seen
}

fn assert_strictly_increasing(tokens: &[u64]) {
    for pair in tokens.windows(2) {
        assert!(
            pair[0] < pair[1],
            "fencing tokens went {} then {}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_over_1000_holders_from_4_clients() {
    let cluster = cluster(5).await;
    let mut engines = Vec::new();
    for _ in 0..4 {
        engines.push(builder(cluster.urls()).fencing(true).build().await.unwrap());
    }
    assert_strictly_increasing(&tokens_of_successive_holders(engines, "fenced", 1000).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_minority_restarted_empty() {
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls()).fencing(true).build().await.unwrap();
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
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls()).fencing(true).build().await.unwrap();
    let engines = vec![redlock; 4];
    assert_strictly_increasing(&tokens_of_successive_holders(engines, "fenced-local", 200).await);
}
