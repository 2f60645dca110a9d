//! Locking through a Sentinel node works as through a standalone one.

use std::time::Duration;

use tower_redlock::testkit::SentinelGroup;
use tower_redlock::{LockError, LockOptions, NodeKind};

use crate::support::*;

#[tokio::test]
async fn a_sentinel_node_locks_extends_releases_and_fences() {
    let group = SentinelGroup::start("basic")
        .await
        .expect("a Sentinel group");
    let redlock = builder([group.url()])
        .fencing(true)
        .build()
        .await
        .expect("an engine on one Sentinel node");
    assert_eq!((redlock.node_count(), redlock.quorum()), (1, 1));

    let lock = redlock.acquire("sentinel:a").await.expect("free");
    let token = lock.fencing_token().expect("fencing is on");
    assert_contended(&redlock, "sentinel:a").await;
    lock.extend(Duration::from_secs(5)).await.expect("extend");

    // The lock is on the primary the Sentinels name, and nowhere else was written to.
    let primary = group.primary().await.unwrap();
    assert_eq!(primary, group.data().addr(0));
    let stored = lock_value(group.data(), 0, "sentinel:a").await;
    assert!(stored.is_some(), "the lock is on the primary");

    let health = redlock.health().await;
    assert!(health.is_healthy(), "{health:?}");
    let node = &health.nodes[0];
    assert_eq!(node.kind, NodeKind::Sentinel);
    assert_eq!(node.primary.as_deref(), Some(primary.to_string().as_str()));

    lock.release().await.expect("release");
    let again = redlock.acquire("sentinel:a").await.expect("free again");
    assert!(again.fencing_token().unwrap() > token, "tokens only go up");
    again.release().await.unwrap();
}

#[tokio::test]
async fn a_master_the_sentinels_do_not_know_fails_closed() {
    // The Sentinels are asked for a master they do not monitor: no primary, no lock.
    let group = SentinelGroup::start("named")
        .await
        .expect("a Sentinel group");
    let wrong = group.url().replace("/named", "/unknown");
    let redlock = builder([wrong])
        .retry(tower_redlock::RetryPolicy::none())
        .build()
        .await
        .expect("an engine (nodes connect on first use)");
    let err = redlock.acquire("sentinel:b").await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    assert_eq!(holders(group.data(), "sentinel:b").await, 0);
}

/// Sends `args` to the server at `addr` (as the default user, without a password).
async fn send(addr: std::net::SocketAddr, args: &[&str]) {
    let mut conn = connect_url(&format!("redis://{addr}"), RAW_BOUND)
        .await
        .expect("a connection");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

#[tokio::test]
async fn the_sentinels_and_the_primary_get_their_passwords_from_the_url_and_never_show_them() {
    let group = SentinelGroup::start("auth")
        .await
        .expect("a Sentinel group");
    // The data nodes ask for "data-s3cret" (Sentinel and the replica know it), then the
    // Sentinels for "sentinel-s3cret".
    for sentinel in group.sentinel_addrs() {
        send(
            sentinel,
            &["SENTINEL", "SET", "auth", "auth-pass", "data-s3cret"],
        )
        .await;
    }
    send(
        group.data().addr(1),
        &["CONFIG", "SET", "masterauth", "data-s3cret"],
    )
    .await;
    send(
        group.data().addr(0),
        &["CONFIG", "SET", "requirepass", "data-s3cret"],
    )
    .await;
    for sentinel in group.sentinel_addrs() {
        send(
            sentinel,
            &["ACL", "SETUSER", "default", "resetpass", ">sentinel-s3cret"],
        )
        .await;
    }
    let hosts = group.url().replace("redis+sentinel://", "");
    let url = |data: &str, sentinel: &str| {
        format!("redis+sentinel://:{data}@{hosts}?sentinel_password={sentinel}")
    };

    let redlock = builder([url("data-s3cret", "sentinel-s3cret")])
        .build()
        .await
        .unwrap();
    let lock = redlock
        .acquire("sentinel:auth")
        .await
        .expect("both passwords right");
    lock.release().await.unwrap();

    for wrong in [
        url("data-s3cret", "wrong-s3cret"),
        url("wrong-s3cret", "sentinel-s3cret"),
    ] {
        let redlock = builder([wrong])
            .retry(tower_redlock::RetryPolicy::none())
            .build()
            .await
            .unwrap();
        let err = redlock.acquire("sentinel:auth").await.unwrap_err();
        assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
        let health = redlock.health().await;
        assert!(!health.is_healthy());
        let shown = format!("{err} {err:?} {health:?}");
        assert!(!shown.contains("s3cret"), "a password shown: {shown}");
    }
}

#[tokio::test]
async fn a_frozen_sentinel_holds_no_call_up() {
    let group = SentinelGroup::start("frozen")
        .await
        .expect("a Sentinel group");
    // It accepts connections and never answers: asked first, it would use up the whole
    // node timeout of every call that looks for the primary.
    group.freeze_sentinel(0, true).unwrap();
    let redlock = builder([group.url()]).build().await.unwrap();
    let lock = redlock
        .acquire_with("sentinel:frozen", LockOptions::new().no_retry())
        .await
        .expect("found through the other two Sentinels within one node timeout");
    lock.release().await.unwrap();
}

#[tokio::test]
async fn a_replica_the_sentinels_name_as_primary_gets_no_lock_call() {
    let group = SentinelGroup::start("named-replica")
        .await
        .expect("a Sentinel group");
    // A writable replica, monitored as master "wrong" (Sentinel names it as the primary
    // until it notices the role, seconds later): only the ROLE check keeps locks off it.
    let replica = group.data().addr(1);
    send(replica, &["CONFIG", "SET", "replica-read-only", "no"]).await;
    let port = replica.port().to_string();
    for sentinel in group.sentinel_addrs() {
        send(
            sentinel,
            &["SENTINEL", "MONITOR", "wrong", "127.0.0.1", &port, "2"],
        )
        .await;
    }
    let url = group.url().replace("/named-replica", "/wrong");
    let redlock = builder([url])
        .retry(tower_redlock::RetryPolicy::none())
        .build()
        .await
        .unwrap();
    let err = redlock.acquire("sentinel:replica").await.unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
    assert!(
        lock_value(group.data(), 1, "sentinel:replica")
            .await
            .is_none()
    );
    let health = redlock.health().await;
    assert!(!health.is_healthy(), "{health:?}");
}
