//! Redis ACLs: a user that may only touch the lock prefix, with the minimal command set.
//!
//! The nodes get a user `locker` whose keys are limited to `~t:*`, channels to `&t:*` (the
//! shared test [`PREFIX`]), and commands to [`COMMANDS`]. The engine connects as
//! `redis://locker:<password>@127.0.0.1:PORT` with `key_prefix("t:")`. Every feature works
//! (health, acquire, contention, extend, release, fencing, wake-on-release); another prefix
//! or a wrong password fails with `Unavailable`, never a panic; and the password shows up in
//! no `Debug`/`Display` text, error or log line.

use std::fmt::Write as _;
use std::time::Duration;

use redis::AsyncCommands;
use tower_redlock::testkit::{ClusterOptions, LocalCluster};
use tower_redlock::{LockError, LockOptions, Redlock, ReleaseOutcome, RetryPolicy};

use crate::support::{
    Captured, NO_HANG, PREFIX, connect_url, eventually, lock_key, marked_on, raw, released_channel,
    subscribers,
};

const USER: &str = "locker";
const PASSWORD: &str = "s3cret-Pa55-acl-7Qx";
const WRONG_PASSWORD: &str = "wr0ng-Pa55-acl-9Kz";

/// The minimal command set of the lock user (what the README documents).
///
/// `SCRIPT LOAD` (every script is loaded when a connection is made), `SET` (single-key
/// acquire), `PTTL` (the holder's remaining time after a refused `SET`), `EVALSHA` (scripts: acquire with fencing or several
/// keys, extend, release, fencing write-back) and `EVAL` (the fallback when a node answers
/// `NOSCRIPT`, e.g. after `SCRIPT FLUSH`); the scripts call `EXISTS`, `PTTL`, `SET`, `INCR`,
/// `GET`, `PEXPIRE`, `DEL`, `APPEND` (a waiter marks the held key) and `PUBLISH`, which ACLs
/// check too; `SUBSCRIBE`/`UNSUBSCRIBE`
/// (wake-on-release), `PING`/`INFO` (health).
pub const COMMANDS: &[&str] = &[
    "script|load",
    "set",
    "get",
    "del",
    "exists",
    "pttl",
    "pexpire",
    "append",
    "incr",
    "publish",
    "subscribe",
    "unsubscribe",
    "eval",
    "evalsha",
    "ping",
    "info",
];

/// `redis-server` arguments that create the lock user with `commands`.
fn acl_args(commands: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--user", USER, "on", &format!(">{PASSWORD}")]
        .iter()
        .map(ToString::to_string)
        .collect();
    args.push(format!("~{PREFIX}*"));
    args.push(format!("&{PREFIX}*"));
    args.extend(commands.iter().map(|c| format!("+{c}")));
    args
}

async fn acl_cluster(n: usize, commands: &[&str]) -> LocalCluster {
    LocalCluster::start_with(n, ClusterOptions::new().args(acl_args(commands)))
        .await
        .expect("start redis-server nodes with an ACL user")
}

fn urls(cluster: &LocalCluster, password: &str) -> Vec<String> {
    (0..cluster.len())
        .map(|i| format!("redis://{USER}:{password}@127.0.0.1:{}", cluster.port(i)))
        .collect()
}

async fn engine(cluster: &LocalCluster, password: &str, prefix: &str) -> Redlock {
    Redlock::builder()
        .nodes(urls(cluster, password))
        .key_prefix(prefix)
        .ttl(Duration::from_secs(10))
        // Generous: nothing here waits for a timeout (refusals and wrong passwords are
        // answered at once), and on a loaded machine a tight timeout turns a slow PTTL
        // into "no answer" (the contention check then sees the ttl, not the holder's time).
        .node_timeout(Duration::from_secs(3))
        .retry(RetryPolicy::none())
        .no_circuit_breaker()
        .build()
        .await
        .expect("build")
}

/// Subscribers of `channel` on every node, asked as the (unrestricted) default user.
async fn subscribers_everywhere(cluster: &LocalCluster, channel: &str) -> Vec<i64> {
    let mut counts = Vec::new();
    for i in 0..cluster.len() {
        counts.push(subscribers(cluster, i, channel).await);
    }
    counts
}

/// Whether lock key `key` is marked as awaited (its value ends in `+`) on a quorum of
/// nodes: a refused APPEND marks none, while one
/// node whose mark timed out on a loaded machine stays unmarked for the waiter's whole
/// retry pause (the release still publishes from the others).
async fn marked(cluster: &LocalCluster, key: &str) -> bool {
    let mut marked = 0;
    for i in 0..cluster.len() {
        if marked_on(cluster, i, &lock_key(key)).await {
            marked += 1;
        }
    }
    marked > cluster.len() / 2
}

/// Runs every engine feature as the lock user; `texts` collects every `Debug`/`Display`
/// text produced on the way. `Err` says which feature failed.
async fn exercise(
    cluster: &LocalCluster,
    redlock: &Redlock,
    texts: &mut Vec<String>,
) -> Result<(), String> {
    let other = engine(cluster, PASSWORD, PREFIX).await;
    texts.push(format!("{redlock:?}"));

    // Health: PING, INFO, and a test lock.
    let report = redlock.health().await;
    texts.push(format!("{report:?}"));
    if !report.is_healthy() {
        return Err(format!("health (PING/test lock): {report:?}"));
    }
    if report.nodes.iter().any(|n| n.redis_version.is_none()) {
        return Err("health: INFO refused".to_owned());
    }

    // Single key, no fencing: SET NX PX; extend and release are scripts.
    let lock = redlock
        .try_acquire("plain")
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    texts.push(format!("{lock:?}"));
    lock.extend(Duration::from_secs(10))
        .await
        .map_err(|e| format!("extend: {e}"))?;
    match lock.release().await {
        Ok(ReleaseOutcome::Released) => {}
        other => return Err(format!("release: {other:?}")),
    }

    // The nodes forget the scripts (SCRIPT FLUSH, as the default user): EVALSHA answers
    // NOSCRIPT and the engine falls back to EVAL on the same connection.
    for i in 0..cluster.len() {
        let mut conn = raw(cluster, i).await;
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let lock = redlock
        .acquire_with("flushed", LockOptions::new().fencing(true))
        .await
        .map_err(|e| format!("acquire after SCRIPT FLUSH: {e}"))?;
    lock.release()
        .await
        .map_err(|e| format!("release after SCRIPT FLUSH: {e}"))?;

    // Contention: the holder's remaining time (7 s of a lease, not the 10 s default ttl)
    // comes from PTTL, asked once the refused attempt is final.
    let held = other
        .acquire_with("busy", LockOptions::new().ttl(Duration::from_secs(7)))
        .await
        .map_err(|e| format!("acquire (other): {e}"))?;
    // (Ordering, not speed: at least what the holder has left after the refusal.)
    let refused = redlock.try_acquire("busy").await;
    let left = held.remaining();
    match refused {
        Err(LockError::Contended { retry_after, .. })
            if retry_after + Duration::from_millis(1) >= left
                && retry_after <= Duration::from_secs(7) => {}
        other => return Err(format!("contention: {other:?} with {left:?} left")),
    }
    held.release()
        .await
        .map_err(|e| format!("release (other): {e}"))?;

    // Fencing: the acquire script INCRs the counters, the write-back GETs and SETs them.
    let fenced = LockOptions::new().fencing(true);
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let lock = redlock
            .acquire_with("fenced", fenced.clone())
            .await
            .map_err(|e| format!("acquire with fencing: {e}"))?;
        tokens.push(lock.fencing_token().ok_or("no fencing token")?);
        lock.release()
            .await
            .map_err(|e| format!("release with fencing: {e}"))?;
    }
    if tokens[1] <= tokens[0] {
        return Err(format!("fencing tokens did not increase: {tokens:?}"));
    }

    // Wake-on-release across engines: the waiter's fallback timer is an hour, so a waiter
    // that gets the lock at all (within the no-hang bound) was woken by the release message
    // (PUBLISH → SUBSCRIBE).
    let held = other
        .try_acquire("wake")
        .await
        .map_err(|e| format!("acquire (wake holder): {e}"))?;
    let waiter = redlock.clone();
    let fallback = Duration::from_secs(3600);
    let policy = RetryPolicy::default()
        .base_delay(fallback)
        .max_delay(fallback)
        .jitter(0.0)
        .deadline(2 * fallback);
    let wait = tokio::spawn(async move {
        waiter
            .acquire_with("wake", LockOptions::new().retry(policy))
            .await
    });
    let channel = released_channel("wake");
    let subscribed = eventually(NO_HANG, || async {
        subscribers_everywhere(cluster, &channel)
            .await
            .iter()
            .all(|&n| n > 0)
    })
    .await;
    if !subscribed {
        wait.abort();
        return Err("the waiter never subscribed (SUBSCRIBE refused?)".to_owned());
    }
    // The waiter marks the held key once subscribed; only a marked release publishes.
    if !eventually(NO_HANG, || marked(cluster, "wake")).await {
        wait.abort();
        return Err("the waiter never marked the held key (APPEND refused?)".to_owned());
    }
    held.release()
        .await
        .map_err(|e| format!("release (wake holder): {e}"))?;
    let lock = tokio::time::timeout(NO_HANG, wait)
        .await
        .map_err(|_| "the waiter was not woken by the release: PUBLISH refused?".to_owned())?
        .map_err(|e| format!("waiter task: {e}"))?
        .map_err(|e| format!("waiter: {e}"))?;
    lock.release()
        .await
        .map_err(|e| format!("release (waiter): {e}"))?;
    // Nobody waits any more: the subscription goes away (UNSUBSCRIBE, in the background).
    let unsubscribed = eventually(NO_HANG, || async {
        subscribers_everywhere(cluster, &channel)
            .await
            .iter()
            .all(|&n| n == 0)
    })
    .await;
    if !unsubscribed {
        return Err("the subscription stayed after the wait (UNSUBSCRIBE refused?)".to_owned());
    }
    Ok(())
}

fn assert_no_secret(texts: &[String]) {
    for text in texts {
        for secret in [PASSWORD, WRONG_PASSWORD] {
            assert!(!text.contains(secret), "a password leaked into: {text}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn lock_user_restricted_to_the_prefix_works_and_nothing_leaks_the_password() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // Global, not scoped: a scoped (thread-local) subscriber misses events whose callsites
    // other tests of this binary hit concurrently. Other tests' logs land here too, which
    // only widens the no-secret check below. (The only global subscriber in this binary.)
    tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");

    let cluster = acl_cluster(3, COMMANDS).await;
    let mut texts = Vec::new();

    // Every feature works for the restricted user.
    let redlock = engine(&cluster, PASSWORD, PREFIX).await;
    exercise(&cluster, &redlock, &mut texts)
        .await
        .unwrap_or_else(|e| panic!("with the minimal command set: {e}"));

    // The user really is restricted: as it, keys outside the prefix are refused.
    let mut conn = connect_url(&urls(&cluster, PASSWORD)[0], NO_HANG)
        .await
        .unwrap();
    let err = conn
        .set::<_, _, ()>("elsewhere:x", "1")
        .await
        .expect_err("a key outside the prefix must be refused");
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    conn.set::<_, _, ()>(format!("{PREFIX}x"), "1")
        .await
        .unwrap();

    // Another prefix: every node says NOPERM, which is a "no" vote: Unavailable.
    let outside = engine(&cluster, PASSWORD, "other:").await;
    texts.push(format!("{outside:?}"));
    for fencing in [false, true] {
        let err = outside
            .acquire_with("k", LockOptions::new().fencing(fencing))
            .await
            .unwrap_err();
        texts.push(format!("{err} {err:?}"));
        assert!(
            matches!(err, LockError::Unavailable { reachable: 0, .. }),
            "{err:?}"
        );
    }
    let report = outside.health().await;
    texts.push(format!("{report:?}"));
    assert!(!report.test_lock_ok && !report.is_healthy(), "{report:?}");

    // A wrong password: Unavailable too, and the wrong password is not echoed either.
    let wrong = engine(&cluster, WRONG_PASSWORD, PREFIX).await;
    texts.push(format!("{wrong:?}"));
    let err = wrong.try_acquire("k").await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    assert!(err.is_unavailable(), "{err:?}");
    let report = wrong.health().await;
    texts.push(format!("{report:?}"));
    assert!(!report.is_healthy());

    // The URLs, parsed or not.
    for url in urls(&cluster, PASSWORD) {
        let parsed = tower_redlock::NodeUrl::parse(&url).unwrap();
        texts.push(format!("{parsed} {parsed:?}"));
        let builder = Redlock::builder().node(url);
        texts.push(format!("{builder:?}"));
    }

    assert_no_secret(&texts);
    let logged = logs.text();
    assert_no_secret(std::slice::from_ref(&logged));
    // The failures were logged, with the URL redacted.
    assert!(
        logged.contains(&format!("{USER}:***@127.0.0.1")),
        "expected redacted node URLs in the log:\n{logged}"
    );
}

/// Removing any one command from [`COMMANDS`] breaks a feature: the set is minimal (for
/// what the engine does today). One single-node cluster per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_minimal_set_is_needed() {
    let mut report = String::new();
    let mut unneeded = Vec::new();
    for omitted in COMMANDS {
        let commands: Vec<&str> = COMMANDS.iter().copied().filter(|c| c != omitted).collect();
        let cluster = acl_cluster(1, &commands).await;
        let redlock = engine(&cluster, PASSWORD, PREFIX).await;
        let mut texts = Vec::new();
        match exercise(&cluster, &redlock, &mut texts).await {
            Ok(()) => unneeded.push(*omitted),
            Err(e) => {
                let _ = writeln!(report, "without {omitted}: {e}");
            }
        }
        assert_no_secret(&texts);
    }
    assert!(
        unneeded.is_empty(),
        "not needed: {unneeded:?}\nneeded:\n{report}"
    );
    println!("{report}");
}
