//! A holder process killed with `SIGKILL` (no release, no cleanup): its lease stops being
//! extended, its keys run out within one ttl of the kill, and the next holder gets the key.

use std::time::Duration;

use tower_redlock::{LockOptions, RetryPolicy};

use crate::single_shot;
use crate::support::*;

const NODES_VAR: &str = "TOWER_REDLOCK_HOLDER_NODES";
/// Above the shared builder's 1 s node timeout, with room for the watchdog's extensions.
const TTL: Duration = Duration::from_secs(3);

/// Child mode: holds "crash" with a 3 s ttl (auto-extended), prints `ACQUIRED`, then
/// `EXTENDED` once the watchdog has extended it, then waits to be killed (30 s at most, or
/// until the parent closes our stdin). Does nothing unless started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper, run in a child process"]
async fn holder_process_helper() {
    let Ok(nodes) = std::env::var(NODES_VAR) else {
        return;
    };
    exit_when_parent_goes();
    let redlock = single_shot(nodes.split(',').map(str::to_owned))
        .ttl(TTL)
        .build()
        .await
        .unwrap();
    let lock = redlock
        .acquire_with(
            "crash",
            LockOptions::new().retry(RetryPolicy::until(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    println!("ACQUIRED pid={}", std::process::id());
    let first = lock.valid_until();
    let extended = eventually(NO_HANG, || async { lock.valid_until() > first }).await;
    assert!(extended, "the watchdog never extended the lease");
    println!("EXTENDED");
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_blocks_the_key_for_at_most_one_ttl() {
    let cluster = cluster(5).await;
    let redlock = single_shot(cluster.urls()).ttl(TTL).build().await.unwrap();
    let mut child = ChildProcess::spawn_helper(
        "crash::holder_process_helper",
        &[(NODES_VAR, cluster.urls().join(","))],
    );
    let line = child
        .wait_for_line("ACQUIRED", Duration::from_secs(60))
        .await;
    assert_eq!(line, format!("ACQUIRED pid={}", child.pid()));
    child
        .wait_for_line("EXTENDED", Duration::from_secs(60))
        .await;
    // The child holds the key, alive and extending: we cannot take it.
    assert!(
        redlock
            .try_acquire("crash")
            .await
            .unwrap_err()
            .is_contended()
    );

    child.kill().await;
    // Once the holder is dead, what is left of its keys on every node is at most one ttl
    // (ordering, not speed: read after the kill, nothing can extend them any more).
    for i in 0..cluster.len() {
        let mut conn = raw(&cluster, i).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(lock_key("crash"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            u64::try_from(pttl).map_or(true, |ms| Duration::from_millis(ms) <= TTL),
            "node {i}: {pttl} ms left of a dead holder's lease of {TTL:?}"
        );
    }
    // So the key comes free (the retry deadline only stops a hang).
    let lock = redlock
        .acquire_with("crash", LockOptions::new().retry(retry_for(NO_HANG)))
        .await
        .expect("the key is free once the dead holder's lease runs out");
    assert!(lock.is_held());
    lock.release().await.unwrap();
}
