//! Dropping an acquire future at any await point leaves no key behind.

use std::time::Duration;

use tower_redlock::LockOptions;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquire_leaves_no_key() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    // Cancel at many different points of the attempt.
    for micros in (0..3000).step_by(150) {
        let attempt = redlock.acquire_with("cancel", LockOptions::new().no_retry());
        match tokio::time::timeout(Duration::from_micros(micros), attempt).await {
            Ok(Ok(lock)) => drop(lock), // finished first: the drop releases it
            // The previous round's lock is still being released in the background.
            Ok(Err(e)) if e.is_contended() => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
    assert!(
        released_everywhere(&cluster, "cancel").await,
        "a cancelled acquire left its key behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquire_on_frozen_nodes_is_cleaned_when_they_wake() {
    let cluster = cluster(5).await;
    // A node timeout far beyond the 50 ms the caller waits: the attempt cannot end first,
    // however loaded the machine.
    let redlock = builder(cluster.urls())
        .node_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    // Connected to every node, so that the requests below really go out.
    assert_eq!(redlock.health().await.reachable, 5);
    pause(&cluster, 0..5);
    // The requests are written, then the caller gives up.
    let attempt = redlock.acquire_with("frozen", LockOptions::new().no_retry());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), attempt)
            .await
            .is_err()
    );
    resume(&cluster, 0..5);
    // When the nodes wake they run the SET, then our cleanup deletes it again.
    assert!(
        released_everywhere(&cluster, "frozen").await,
        "late replies were not cleaned up"
    );
}
