//! `Redlock::check_config`: node settings that break locks (eviction, no persistence with
//! fencing), read from real nodes started with those settings; a node whose ACL refuses
//! `CONFIG GET` is unknown, not an error.

use tower_redlock::health::SettingWarning;
use tower_redlock::testkit::{ClusterOptions, LocalCluster};

use crate::support::*;

async fn cluster_with(args: &[&str]) -> LocalCluster {
    LocalCluster::start_with(3, ClusterOptions::new().args(args.iter().copied()))
        .await
        .expect("start redis-server nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_nodes_and_no_persistence_with_fencing_are_reported() {
    // The test kit's nodes persist nothing (`appendonly no`, `save ""`).
    let cluster = cluster_with(&["--maxmemory-policy", "allkeys-lru"]).await;
    let fenced = builder(cluster.urls()).fencing(true).build().await.unwrap();
    let report = fenced.check_config().await;
    assert!(!report.is_clean() && report.fencing);
    for node in &report.nodes {
        assert_eq!(node.unknown, None, "{node:?}");
        assert_eq!(node.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(node.appendonly, Some(false));
        assert!(
            matches!(
                node.warnings.as_slice(),
                [
                    SettingWarning::Eviction { policy, .. },
                    SettingWarning::NoPersistence
                ] if policy == "allkeys-lru"
            ),
            "{node:?}"
        );
    }
    let json = report.to_json();
    assert!(json.contains(r#""kind":"eviction""#), "{json}");
    assert!(json.contains(r#""kind":"no_persistence""#), "{json}");

    // Without fencing, persistence is not a lock's concern: eviction only.
    let plain = redlock(&cluster).await;
    let report = plain.check_config().await;
    assert_eq!(report.warnings().count(), 3);
    assert!(
        report
            .warnings()
            .all(|(_, w)| matches!(w, SettingWarning::Eviction { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noeviction_with_appendonly_is_clean() {
    let cluster = cluster_with(&["--maxmemory-policy", "noeviction", "--appendonly", "yes"]).await;
    let fenced = builder(cluster.urls()).fencing(true).build().await.unwrap();
    let report = fenced.check_config().await;
    assert!(report.is_clean(), "{report:?}");
    assert!(report.nodes.iter().all(|n| n.appendonly == Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refusing_config_get_is_unknown() {
    // A user with every command but CONFIG, on an evicting node.
    let cluster = cluster_with(&[
        "--maxmemory-policy",
        "allkeys-lru",
        "--user",
        "locker",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-config",
    ])
    .await;
    let urls =
        (0..cluster.len()).map(|i| format!("redis://locker:pw@127.0.0.1:{}", cluster.port(i)));
    let redlock = builder(cluster.urls())
        .nodes(urls)
        .fencing(true)
        .build()
        .await
        .unwrap();
    let report = redlock.check_config().await;
    assert!(report.is_clean(), "unknown is not a warning: {report:?}");
    for node in &report.nodes {
        let reason = node.unknown.as_deref().expect("unknown");
        assert!(
            reason.contains("NOPERM") || reason.contains("permission"),
            "{reason}"
        );
        assert!(!node.url.contains("pw@"), "{}", node.url);
    }
    // Locks still work.
    let lock = redlock.try_acquire("acl").await.unwrap();
    lock.release().await.unwrap();
}
