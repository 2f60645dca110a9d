//! The quorum rule, node failures as "no" votes, and bounded waits on sick nodes.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::time::Instant;
use tower_redlock::testkit::LocalCluster;
use tower_redlock::{LockError, LockOptions};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_matrix_over_every_subset() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let mut conns = Vec::new();
    for i in 0..5 {
        conns.push(raw(&cluster, i).await);
    }
    for mask in 0u32..32 {
        let key = format!("matrix-{mask}");
        let lock_key = lock_key(&key);
        let occupied: Vec<usize> = (0..5).filter(|i| mask & (1 << i) != 0).collect();
        let set_at = Instant::now();
        for &i in &occupied {
            let _: () = conns[i].set_ex(&lock_key, "foreign", 30).await.unwrap();
        }
        let free = 5 - occupied.len();
        let result = redlock.try_acquire(&key).await;
        if free >= 3 {
            let lock = result.unwrap_or_else(|e| panic!("mask {mask:05b}: {e}"));
            lock.release().await.unwrap();
        } else {
            match result {
                Err(LockError::Contended { retry_after, .. }) => {
                    // The foreign keys' remaining time: what is left of their 30 s.
                    let left = Duration::from_secs(30).saturating_sub(set_at.elapsed());
                    assert!(
                        retry_after + Duration::from_millis(1) >= left
                            && retry_after <= Duration::from_secs(30),
                        "mask {mask:05b}: {retry_after:?}, {left:?} left"
                    );
                }
                other => panic!("mask {mask:05b}: expected Contended, got {other:?}"),
            }
        }
        // Foreign keys are untouched; our partial acquisitions are gone.
        let all_clean = eventually(NO_HANG, || {
            let conns = conns.clone();
            let lock_key = lock_key.clone();
            let occupied = occupied.clone();
            async move {
                for (i, mut conn) in conns.into_iter().enumerate() {
                    let v: Option<String> = conn.get(&lock_key).await.unwrap();
                    let expected = occupied.contains(&i).then(|| "foreign".to_owned());
                    if v != expected {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        assert!(
            all_clean,
            "mask {mask:05b}: nodes not back to the foreign layout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_down_still_acquires_three_down_is_unavailable() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    cluster.kill(0).await.unwrap();
    cluster.kill(1).await.unwrap();
    let lock = redlock.try_acquire("k").await.unwrap();
    assert_eq!(holders(&cluster, "k").await, 3);
    lock.release().await.unwrap();

    cluster.kill(2).await.unwrap();
    let start = Instant::now();
    let err = redlock.try_acquire("k").await.unwrap_err();
    // Bounded (refused connections, or the node timeout): no hang.
    assert!(start.elapsed() < NO_HANG, "{:?}", start.elapsed());
    match err {
        LockError::Unavailable {
            total, required, ..
        } => assert_eq!((total, required), (5, 3)),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.is_unavailable());
    assert_eq!(
        holders(&cluster, "k").await,
        0,
        "partial acquisition released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_paused_nodes_cost_one_node_timeout() {
    let cluster = cluster(5).await;
    // A long node timeout: a second one could not hide in the time the rest of the
    // attempt takes, however loaded the machine.
    let node_timeout = Duration::from_secs(3);
    let redlock = builder(cluster.urls())
        .node_timeout(node_timeout)
        .build()
        .await
        .unwrap();
    // `build` has connected to every node (and loaded the scripts) already.
    pause(&cluster, 0..3);
    let start = Instant::now();
    let err = redlock.try_acquire("p").await.unwrap_err();
    let took = start.elapsed();
    resume(&cluster, 0..3);
    assert!(err.is_unavailable(), "{err:?}");
    assert!(took >= node_timeout - Duration::from_millis(50), "{took:?}");
    assert!(took < 2 * node_timeout, "{took:?}");
    // The late yeses from the paused nodes are released once they wake up.
    assert!(released_everywhere(&cluster, "p").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_paused_node_does_not_slow_acquire_or_release() {
    let cluster = cluster(5).await;
    // A long node timeout: waiting for the paused node even once would take longer than
    // all five cycles, however loaded the machine.
    let node_timeout = Duration::from_secs(10);
    let redlock = builder(cluster.urls())
        .ttl(Duration::from_secs(30))
        .node_timeout(node_timeout)
        .build()
        .await
        .unwrap();
    cluster.pause(4).unwrap();
    let start = Instant::now();
    for i in 0..5 {
        let lock = redlock.try_acquire(format!("fast-{i}")).await.unwrap();
        lock.release().await.unwrap();
    }
    let took = start.elapsed();
    cluster.resume(4).unwrap();
    assert!(
        took < node_timeout,
        "5 cycles took {took:?}: waited for the paused node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_is_used_again() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    redlock
        .try_acquire("r")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    cluster.restart(0).await.unwrap();
    // The old connection is dead; the pool must replace it, so node 0 votes yes again.
    let recovered = eventually(NO_HANG, || async {
        let Ok(lock) = redlock.try_acquire("r").await else {
            return false;
        };
        let on_node0 = lock_value(&cluster, 0, "r").await.is_some();
        lock.release().await.unwrap();
        on_node0
    })
    .await;
    assert!(recovered, "node 0 never took part again after its restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_node_at_start_up_does_not_stop_build() {
    let cluster = cluster(5).await;
    cluster.kill(3).await.unwrap();
    let redlock = redlock(&cluster).await;
    let lock = redlock
        .acquire_with("s", LockOptions::new().no_retry())
        .await
        .unwrap();
    lock.release().await.unwrap();
}

/// Calls of `command` (lower case) node `i` has run.
async fn calls(cluster: &LocalCluster, i: usize, command: &str) -> u64 {
    let mut conn = raw(cluster, i).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_skipped_until_it_answers_again() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    let before = calls(&cluster, 4, "set").await;
    cluster.pause(4).unwrap();
    // Until the node is skipped, acquisitions still go to it: count them all. (Releases
    // still go to it while skipped, on the connection it stopped answering on.)
    let (mut acquisitions, mut skipped) = (0u64, false);
    for round in 0..50 {
        for i in 0..5 {
            let lock = redlock
                .try_acquire(format!("stall-{round}-{i}"))
                .await
                .unwrap();
            lock.release().await.unwrap();
        }
        let report = redlock.health().await;
        assert_eq!(report.nodes.len(), 5, "a frozen node is in the report too");
        // 5 cycles and the health check's test lock.
        acquisitions += 6;
        if report.nodes[4].skipped {
            skipped = true;
            break;
        }
    }
    assert!(skipped, "the stalled node was never skipped");
    // While skipped, no acquisition is sent to it.
    for i in 0..100 {
        let lock = redlock.try_acquire(format!("skipped-{i}")).await.unwrap();
        lock.release().await.unwrap();
    }
    cluster.resume(4).unwrap();
    let back = eventually(NO_HANG, || async {
        let lock = redlock.try_acquire("back").await.unwrap();
        let on_node4 = lock_value(&cluster, 4, "back").await.is_some();
        lock.release().await.unwrap();
        on_node4
    })
    .await;
    assert!(back, "the node was not used again once it answered");
    let sent = calls(&cluster, 4, "set").await - before;
    // The acquisitions before the skip, those after the node came back (the last
    // `eventually` rounds), and none of the 100 cycles in between.
    assert!(
        sent < acquisitions + 50,
        "{sent} acquisitions reached the node, {acquisitions} were sent before it was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_is_passed_by_but_still_gets_the_releases() {
    const BACKLOG: usize = 4;
    let cluster = cluster(5).await;
    let proxies = cluster.proxies().await.unwrap();
    let mut urls = cluster.urls();
    urls[0] = proxies[0].url();
    let redlock = tower_redlock::Redlock::builder()
        .nodes(urls)
        .key_prefix(PREFIX)
        .ttl(Duration::from_secs(20))
        .node_timeout(Duration::from_secs(3))
        .node_backlog(BACKLOG)
        .build()
        .await
        .unwrap();
    // Node 0 now answers 600 ms late, far behind the other four (which decide).
    proxies[0].set_latency(Duration::from_millis(300));
    let options = LockOptions::new().no_retry();
    let acquire_four = |round: &'static str| {
        let (redlock, options) = (redlock.clone(), options.clone());
        async move {
            let mut held = Vec::new();
            for i in 0..BACKLOG {
                let key = format!("lag-{round}-{i}");
                held.push(redlock.acquire_with(key, options.clone()).await.unwrap());
            }
            held
        }
    };
    // Four acquisitions leave four replies of node 0 overdue: it falls behind. The next
    // one is not sent to node 0 at all, and still gets a quorum.
    let mut held = acquire_four("a").await;
    let passed = redlock
        .acquire_with("lag-passed", options.clone())
        .await
        .unwrap();
    // Its releases still go to node 0 (unawaited), after what they undo.
    for lock in held.drain(..) {
        lock.release().await.unwrap();
    }
    passed.release().await.unwrap();
    // Once the five releases ran there, so had anything sent before them.
    assert!(
        eventually(NO_HANG, || async {
            calls(&cluster, 0, "evalsha").await >= 5
        })
        .await,
        "the releases never reached the lagging node"
    );
    assert_eq!(
        calls(&cluster, 0, "set").await,
        BACKLOG as u64,
        "an acquisition went to the node while it was behind"
    );
    for i in 0..BACKLOG {
        assert_eq!(lock_value(&cluster, 0, &format!("lag-a-{i}")).await, None);
    }
    // Health reports it while it lags (as of the start of the check), not as skipped.
    held = acquire_four("b").await;
    let health = redlock.health().await;
    assert!(health.nodes[0].behind, "{health:?}");
    assert!(
        !health.nodes[0].skipped,
        "lagging is not unresponsive: {health:?}"
    );
    for lock in held {
        lock.release().await.unwrap();
    }
    // Caught up, it is used again.
    proxies[0].set_latency(Duration::ZERO);
    assert!(
        eventually(NO_HANG, || async {
            !redlock.health().await.nodes[0].behind
        })
        .await
    );
    let lock = redlock.acquire_with("lag-after", options).await.unwrap();
    assert!(
        eventually(NO_HANG, || async {
            lock_value(&cluster, 0, "lag-after").await.is_some()
        })
        .await,
        "node 0 was not used again"
    );
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_backlog_never_passes_by_more_nodes_than_the_quorum_can_spare() {
    // With a backlog of 1, any reply read in the background would put its node behind; all
    // healthy nodes lag alike under load, and at most two of five may be passed by: every
    // call still reaches a quorum, so nothing fails.
    let cluster = cluster(5).await;
    let redlock = builder(cluster.urls())
        .node_backlog(1)
        .build()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let redlock = redlock.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    let key = format!("tiny-backlog-{task}-{n}");
                    let options = LockOptions::new().no_retry();
                    let lock = redlock.acquire_with(key, options).await.unwrap();
                    lock.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("no hang")
            .unwrap();
    }
    let health = redlock.health().await;
    assert!(
        health.nodes.iter().filter(|n| n.behind).count() <= 2,
        "{health:?}"
    );
}
