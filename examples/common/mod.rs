//! Shared by the examples: where the Redis nodes come from.
//!
//! With `REDLOCK_NODES` set (comma-separated `redis://` URLs), the examples use those nodes.
//! Otherwise they start 5 throw-away local `redis-server` processes, which stop when the
//! returned [`LocalCluster`] is dropped at the end of `main`.
//!
//! Each example uses a subset of these helpers.
#![allow(dead_code)]

use std::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tower_redlock::testkit::LocalCluster;
use tower_redlock::{ConfigError, Redlock, RedlockBuilder};

/// The error type of the examples' `main`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Number of local nodes started when `REDLOCK_NODES` is unset.
const LOCAL_NODES: usize = 5;

/// The Redis nodes an example runs on.
pub struct Nodes {
    /// Node URLs, in order.
    pub urls: Vec<String>,
    /// The local cluster, when one was started: dropping it stops the nodes.
    pub local: Option<LocalCluster>,
}

impl Nodes {
    /// Uses `REDLOCK_NODES` when set, otherwise starts 5 local `redis-server` nodes.
    pub async fn from_env_or_local() -> Result<Nodes, BoxError> {
        if let Some(list) = std::env::var_os("REDLOCK_NODES") {
            let list = list
                .into_string()
                .map_err(|_| "REDLOCK_NODES is not valid UTF-8")?;
            let urls: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if urls.is_empty() {
                return Err("REDLOCK_NODES is set but holds no node URL".into());
            }
            println!("REDLOCK_NODES is set: using its {} node(s)", urls.len());
            return Ok(Nodes { urls, local: None });
        }
        let cluster = LocalCluster::start(LOCAL_NODES)
            .await
            .map_err(|e| format!("could not start local Redis nodes: {e}"))?;
        let ports: Vec<String> = (0..cluster.len())
            .map(|i| cluster.port(i).to_string())
            .collect();
        println!(
            "REDLOCK_NODES is unset: started {LOCAL_NODES} local redis-server nodes on ports {}",
            ports.join(", ")
        );
        Ok(Nodes {
            urls: cluster.urls(),
            local: Some(cluster),
        })
    }

    /// A builder on these nodes. With `REDLOCK_NODES`, the other `REDLOCK_*` variables apply
    /// too; settings made on the returned builder override them.
    pub fn builder(&self) -> Result<RedlockBuilder, ConfigError> {
        let builder = Redlock::builder().nodes(self.urls.iter().cloned());
        if self.local.is_some() {
            Ok(builder)
        } else {
            builder.with_env()
        }
    }

    /// A plain connection to node 0, for the example's own data (kept under its own key
    /// prefix, apart from the lock keys).
    pub async fn data_connection(&self) -> Result<MultiplexedConnection, BoxError> {
        let url = &self.urls[0];
        let connect = async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("cannot connect to node 0 for data: {e}").into()),
            Err(_) => Err("cannot connect to node 0 for data: timed out after 5 s".into()),
        }
    }
}

/// An engine with default settings on `REDLOCK_NODES`, or on 5 local nodes (returned, so
/// they keep running until it is dropped).
pub async fn redlock_or_local() -> Result<(Redlock, Option<LocalCluster>), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes.builder()?.build().await?;
    Ok((redlock, nodes.local))
}

/// A short id unique to this run, to keep the keys of concurrent runs on shared nodes apart.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:05x}", std::process::id(), nanos & 0xf_ffff)
}
