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
//! * [`RedisCluster`]: a real Redis Cluster (`--cluster-enabled yes`, joined with
//!   `redis-cli --cluster create`) as one node of the quorum, with helpers to move a slot,
//!   fail over gracefully, kill a primary and wait for its replica to take over.
//! * [`SentinelGroup`]: a Sentinel-managed primary, its replica and three Sentinels, with
//!   forced and crash failovers and a replication link that can be cut.
//! * `tower_redlock::sim::SimCluster` (same feature): simulated nodes in this process (no
//!   `redis-server`), with faults per node, for deterministic tests under paused time.
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
mod redis_cluster;
mod sentinel;

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub use cluster::{ClusterOptions, LocalCluster, NodeState};
pub use proxy::FaultProxy;
pub use redis_cluster::{CLUSTER_NODE_TIMEOUT, RedisCluster};
pub use sentinel::SentinelGroup;

/// Errors from [`LocalCluster`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No usable `redis-server` binary was found.
    #[error(
        "redis-server not found ({detail}); install it with `apt-get install redis-server` \
         (Debian/Ubuntu) or `brew install redis` (macOS), or set REDIS_SERVER=/path/to/redis-server"
    )]
    RedisServerNotFound {
        /// What was looked at.
        detail: String,
    },
    /// Spawning `redis-server` failed.
    #[error("failed to spawn redis-server: {0}")]
    Spawn(#[source] io::Error),
    /// A node did not answer `PING` in time.
    #[error("redis-server on 127.0.0.1:{port} did not become ready within {waited:?}")]
    NotReady {
        /// The node's port.
        port: u16,
        /// How long we waited.
        waited: Duration,
    },
    /// A node exited while starting (bad argument, port taken, ...).
    #[error("redis-server on 127.0.0.1:{port} exited during start-up ({status}); log tail:\n{log}")]
    Exited {
        /// The node's port.
        port: u16,
        /// Its exit status.
        status: String,
        /// The last lines of its output.
        log: String,
    },
    /// Other I/O failure (temporary directories, sockets, proxies).
    #[error("test kit I/O error: {0}")]
    Io(#[from] io::Error),
    /// A node index was out of range.
    #[error("node index {index} out of range for a cluster of {len} nodes")]
    InvalidIndex {
        /// The index asked for.
        index: usize,
        /// The number of nodes.
        len: usize,
    },
    /// The node is killed; [`LocalCluster::restart`] it first.
    #[error("node {index} is killed; restart it first")]
    NodeDown {
        /// The node's index.
        index: usize,
    },
    /// Setting up or changing a [`RedisCluster`] failed.
    #[error("redis cluster: {detail}")]
    Cluster {
        /// What failed.
        detail: String,
    },
    /// A [`SentinelGroup`] did not start, or did not fail over, as asked.
    #[error("sentinel group: {0}")]
    Sentinel(String),
    /// Sending a signal with `kill` failed.
    #[error("failed to send SIG{signal} to pid {pid}: {detail}")]
    Signal {
        /// Signal name without the `SIG` prefix.
        signal: &'static str,
        /// Target process.
        pid: u32,
        /// Why it failed.
        detail: String,
    },
}

/// Polls `check` every 10 ms until it returns `true`: at most 10 000 times and within
/// `deadline`. Returns whether it did. For outcomes a test cannot await directly, such as a
/// key expiring on the nodes or a port answering again.
///
/// ```no_run
/// # async fn demo(addr: std::net::SocketAddr) {
/// use std::time::Duration;
/// use tower_redlock::testkit::{eventually, ping};
///
/// let back = eventually(Duration::from_secs(5), || ping(addr, Duration::from_millis(200))).await;
/// assert!(back, "the node did not come back");
/// # }
/// ```
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    for _ in 0..10_000 {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Sends `PING` over a fresh TCP connection and reports whether `+PONG`
/// came back within `timeout`. Never panics; any error means `false`.
pub async fn ping(addr: SocketAddr, timeout: Duration) -> bool {
    let line = exchange(addr, b"PING\r\n", timeout, |buf| {
        first_line(buf).map(<[u8]>::to_vec)
    });
    line.await.as_deref() == Some(b"+PONG".as_slice())
}

/// Writes `request` on a fresh connection, then reads until `parse` accepts
/// the bytes received so far (64 KiB at most). `None` on any failure.
async fn exchange<T>(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    mut parse: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while buf.len() <= 64 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(parsed) = parse(&buf) {
                return Some(parsed);
            }
        }
        None
    };
    tokio::time::timeout(timeout, run).await.ok().flatten()
}

/// The first CRLF-terminated line of `buf`, without the CRLF.
fn first_line(buf: &[u8]) -> Option<&[u8]> {
    buf.windows(2)
        .position(|w| w == b"\r\n")
        .map(|end| &buf[..end])
}

/// Resolves the `redis-server` binary from `REDIS_SERVER` or `PATH`.
fn find_redis_server() -> Result<PathBuf, TestkitError> {
    if let Some(value) = std::env::var_os("REDIS_SERVER").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        let found = if path.components().count() == 1 && !path.is_file() {
            search_path(&path)
        } else {
            Some(path).filter(|p| is_executable(p))
        };
        return found.ok_or_else(|| TestkitError::RedisServerNotFound {
            detail: format!(
                "REDIS_SERVER={} is not an executable file",
                value.to_string_lossy()
            ),
        });
    }
    search_path(Path::new("redis-server")).ok_or_else(|| TestkitError::RedisServerNotFound {
        detail: "`redis-server` is not on PATH".to_owned(),
    })
}

fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
