//! A Redis Cluster as ONE node (one vote), against real clusters started by the test kit
//! (`testkit::RedisCluster`).
//!
//! - `slots`: locks on keys in every slot owner, fencing, multi-key locks (a common hash
//!   tag works; keys in several slots are refused before anything is sent), batched
//!   extension of leases in many slots;
//! - `topology`: a slot moved, a graceful failover and a killed primary while a lease is
//!   held: the lease is kept or `lost()` fires, never a silent second holder.
#![cfg(feature = "testkit")]

#[path = "../support/mod.rs"]
mod support;

mod slots;
mod topology;

use tower_redlock::testkit::RedisCluster;

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each.
pub async fn redis_cluster(primaries: usize, replicas: usize) -> RedisCluster {
    RedisCluster::start(primaries, replicas)
        .await
        .expect("start a redis cluster")
}
