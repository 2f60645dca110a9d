//! Reliability and security: the engine and the middleware under injected faults.
//!
//! Every test starts its own `redis-server` nodes (`LocalCluster`), usually behind one
//! `FaultProxy` each, and injects latency, partitions, node restarts, holder crashes or
//! ACL restrictions:
//!
//! - `latency`: slow nodes cost validity, and validity counts from before the first request.
//! - `partition`: a partitioned majority is `Unavailable` (`503` through the layer) without
//!   hanging, recovery after the partition heals, and a lease lost while held cancels the
//!   handler.
//! - `restart`: nodes restarted empty re-grant a held lock (why the delayed-restart rule
//!   exists); with `appendfsync always` they do not.
//! - `crash`: a holder process killed with `SIGKILL` blocks the key for at most one ttl.
//! - `acl`: a Redis user restricted to the lock prefix and the minimal command set works,
//!   other prefixes fail cleanly, and the password never shows up anywhere.
#![cfg(feature = "testkit")]

mod app;
#[path = "../support/mod.rs"]
mod support;

mod acl;
mod crash;
mod latency;
mod partition;
mod restart;

use std::time::Duration;

use tower_redlock::{RedlockBuilder, RetryPolicy};

/// The shared test builder with one attempt, no circuit breaker and a 2 s ttl: these tests
/// look at the outcome of single calls under faults.
fn single_shot(urls: impl IntoIterator<Item = String>) -> RedlockBuilder {
    support::builder(urls)
        .ttl(Duration::from_secs(2))
        .retry(RetryPolicy::none())
        .no_circuit_breaker()
}
