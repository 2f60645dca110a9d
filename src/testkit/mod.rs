//! Test kit: real `redis-server` processes plus a TCP fault proxy.
//!
//! Enabled by the `testkit` feature. It is meant for integration tests of
//! code that talks to several independent Redis masters (such as Redlock):
//!
//! * [`LocalCluster`] spawns `n` throw-away `redis-server` processes on free
//!   loopback ports (no persistence, one temporary directory each) and lets a
//!   test [`kill`](LocalCluster::kill), [`pause`](LocalCluster::pause),
//!   [`resume`](LocalCluster::resume) and [`restart`](LocalCluster::restart)
//!   single nodes. Every process is killed and every directory removed when
//!   the cluster is dropped, including while a failing test unwinds.
//! * [`FaultProxy`] sits in front of one node and injects latency, jitter,
//!   partitions ([`blackhole`](FaultProxy::blackhole)) and connection resets.
//!   [`LocalCluster::proxies`] puts one in front of every node.
//!
//! The `redis-server` binary is taken from the `REDIS_SERVER` environment
//! variable if set, otherwise from `PATH`; when it cannot be found,
//! [`LocalCluster::start`] returns [`TestkitError::RedisServerNotFound`].
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_redlock::testkit::{LocalCluster, ping};
//!
//! # async fn demo() -> Result<(), tower_redlock::testkit::TestkitError> {
//! let cluster = LocalCluster::start(3).await?;
//! let urls: Vec<String> = cluster.urls(); // "redis://127.0.0.1:PORT" each
//! assert_eq!(urls.len(), 3);
//!
//! // Crash one node and bring it back empty on the same port.
//! cluster.kill(0).await?;
//! assert!(!ping(cluster.addr(0), Duration::from_millis(200)).await);
//! cluster.restart(0).await?;
//!
//! // Partition node 1 from its clients, then heal.
//! let proxies = cluster.proxies().await?;
//! let proxied_urls: Vec<String> = proxies.iter().map(|p| p.url()).collect();
//! proxies[1].blackhole();
//! assert!(!ping(proxies[1].addr(), Duration::from_millis(200)).await);
//! proxies[1].heal();
//! assert!(ping(proxies[1].addr(), Duration::from_secs(2)).await);
//! # let _ = proxied_urls;
//! # Ok(())
//! # }
//! ```

mod cluster;
mod proxy;

pub use cluster::{ClusterOptions, LocalCluster, NodeState, TestkitError, ping};
pub use proxy::FaultProxy;
