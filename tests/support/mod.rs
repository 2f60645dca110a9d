//! Helpers shared by the integration tests: one copy, included by each test crate with
//! `#[path = "../support/mod.rs"] mod support;` (`"support/mod.rs"` from a top-level file).
//!
//! - this file: the key prefix, time bounds, clusters and engine builders;
//! - [`nodes`]: the engine's key layout and direct (raw) access to the nodes;
//! - [`sync`]: gates, signals and drop flags between a test and its handlers;
//! - [`web`] (`axum`): requests through a router or a real server, read replies;
//! - [`proxied`]: nodes behind fault proxies;
//! - [`child`]: child processes of a test binary, always killed;
//! - [`logs`]: log output captured for a test to read.
// Each test crate uses a subset of these helpers; in that crate the rest is unused, which is
// expected here (and only here).
#![allow(dead_code, unused_imports)]

pub mod child;
pub mod logs;
pub mod nodes;
pub mod proxied;
pub mod sync;
#[cfg(feature = "axum")]
pub mod web;

use std::time::Duration;

pub use child::*;
pub use logs::*;
pub use nodes::*;
pub use proxied::*;
pub use sync::*;
use tower_redlock::testkit::LocalCluster;
pub use tower_redlock::testkit::eventually;
use tower_redlock::{LockError, LockOptions, Redlock, RedlockBuilder, RetryPolicy};
#[cfg(feature = "axum")]
pub use web::*;

/// The key prefix of every engine the helpers build.
pub const PREFIX: &str = "t:";

/// How long a test waits for an event that should come at once before it gives up: a bound
/// against hanging, not a speed requirement (a loaded 2-core machine must pass too).
pub const NO_HANG: Duration = Duration::from_secs(30);

/// The node timeout of [`builder`]: generous, so that a loaded machine does not turn a slow
/// answer into a failed call. Tests that wait for a timeout on purpose (paused nodes,
/// partitions) set their own. Small enough for fencing with the 5 s ttl (3 rounds < ttl).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(1);

/// `n` local `redis-server` nodes.
pub async fn cluster(n: usize) -> LocalCluster {
    LocalCluster::start(n)
        .await
        .expect("start redis-server nodes")
}

/// An engine builder on `urls` with test defaults: [`PREFIX`], 5 s ttl, [`NODE_TIMEOUT`],
/// retries for up to 10 s with short pauses.
pub fn builder(urls: impl IntoIterator<Item = String>) -> RedlockBuilder {
    Redlock::builder()
        .nodes(urls)
        .key_prefix(PREFIX)
        .ttl(Duration::from_secs(5))
        .node_timeout(NODE_TIMEOUT)
        .retry(retry_for(Duration::from_secs(10)))
}

/// An engine with the [`builder`] defaults on every node of `cluster`.
pub async fn redlock(cluster: &LocalCluster) -> Redlock {
    builder(cluster.urls())
        .build()
        .await
        .expect("build redlock")
}

/// Asserts that `redlock` is refused `key` at once (`Contended`, one attempt): someone
/// holds it.
pub async fn assert_contended(redlock: &Redlock, key: &str) {
    match redlock
        .acquire_with(key, LockOptions::new().no_retry())
        .await
    {
        Err(LockError::Contended { .. }) => {}
        Err(other) => panic!("{key}: refused with {other:?}, not as contended"),
        Ok(_) => panic!("{key}: a second holder got it"),
    }
}

/// Retry for up to `deadline` with short, fast-growing pauses.
pub fn retry_for(deadline: Duration) -> RetryPolicy {
    RetryPolicy::until(deadline)
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(10))
}

/// The engine's drift allowance for `ttl` at the default factor 0.01 (`0.01·ttl + 2 ms`).
pub fn default_drift(ttl: Duration) -> Duration {
    Duration::try_from_secs_f64(ttl.as_secs_f64() * 0.01).unwrap() + Duration::from_millis(2)
}

/// SIGSTOPs nodes `nodes`.
pub fn pause(cluster: &LocalCluster, nodes: std::ops::Range<usize>) {
    for i in nodes {
        cluster.pause(i).unwrap();
    }
}

/// SIGCONTs nodes `nodes`.
pub fn resume(cluster: &LocalCluster, nodes: std::ops::Range<usize>) {
    for i in nodes {
        cluster.resume(i).unwrap();
    }
}

/// The shortest ttl a test lock with the [`builder`] defaults may ask for: above
/// [`NODE_TIMEOUT`] (the engine refuses a ttl that is not), for tests that wait for a lease
/// to run out.
pub const SHORT_TTL: Duration = Duration::from_millis(1500);
