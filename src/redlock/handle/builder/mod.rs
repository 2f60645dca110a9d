//! [`RedlockBuilder`]: configuration, checked before anything connects.

mod build;
mod env;

use std::fmt;
use std::time::Duration;

use crate::redlock::config::node_url::redact;
use crate::redlock::config::retry::RetryPolicy;
use crate::redlock::core::error::ConfigError;
use crate::redlock::core::telemetry::KeyLabeler;
use crate::redlock::handle::Redlock;
use crate::redlock::node::breaker::CircuitBreaker;
use crate::redlock::sim::SimNode;

/// Default of [`RedlockBuilder::node_backlog`].
const DEFAULT_NODE_BACKLOG: usize = 64;

/// Configures a [`Redlock`]. Every setting has a default except the nodes.
///
/// | setting | default |
/// |---|---|
/// | `ttl` | 10 s |
/// | `retry` | [`RetryPolicy::default`] (up to 10 s) |
/// | `drift_factor` | 0.01 (plus 2 ms) |
/// | `node_timeout` | 100 ms |
/// | `node_backlog` | 64 overdue replies |
/// | `pool_size` | 1 connection per node |
/// | `key_prefix` | `"redlock:"` |
/// | `fencing` | off |
/// | `circuit_breaker` | on: opens after 5 unreachable quorums in a row, for 1 s |
/// | `local_handover` | on |
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redlock::{Redlock, RetryPolicy};
///
/// # async fn demo() -> Result<(), tower_redlock::ConfigError> {
/// let redlock = Redlock::builder()
///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .ttl(Duration::from_secs(30))
///     .node_timeout(Duration::from_millis(50))
///     .retry(RetryPolicy::until(Duration::from_secs(5)))
///     .fencing(true)
///     .build()
///     .await?;
/// # let _ = redlock; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedlockBuilder {
    pub(crate) nodes: Vec<String>,
    pub(crate) ttl: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) drift_factor: f64,
    pub(crate) node_timeout: Duration,
    pub(crate) node_backlog: usize,
    pub(crate) pool_size: usize,
    pub(crate) key_prefix: String,
    pub(crate) fencing: bool,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) fence_ttl: Option<Duration>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) labeler: Option<KeyLabeler>,
    pub(crate) tls_root: Option<Vec<u8>>,
    /// Simulated nodes instead of URLs (`in_memory`).
    pub(crate) simulated: Option<Vec<SimNode>>,
    pub(crate) local_handover: bool,
}

impl Default for RedlockBuilder {
    fn default() -> Self {
        RedlockBuilder {
            nodes: Vec::new(),
            ttl: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            drift_factor: 0.01,
            node_timeout: Duration::from_millis(100),
            node_backlog: DEFAULT_NODE_BACKLOG,
            pool_size: 1,
            key_prefix: "redlock:".to_owned(),
            fencing: false,
            max_hold: None,
            fence_ttl: None,
            breaker: Some(CircuitBreaker::default()),
            labeler: None,
            tls_root: None,
            simulated: None,
            local_handover: true,
        }
    }
}

impl fmt::Debug for RedlockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|u| redact(u)).collect();
        f.debug_struct("RedlockBuilder")
            .field("nodes", &nodes)
            .field("ttl", &self.ttl)
            .field("retry", &self.retry)
            .field("drift_factor", &self.drift_factor)
            .field("node_timeout", &self.node_timeout)
            .field("node_backlog", &self.node_backlog)
            .field("pool_size", &self.pool_size)
            .field("key_prefix", &self.key_prefix)
            .field("fencing", &self.fencing)
            .field("max_hold", &self.max_hold)
            .field("fence_ttl", &self.fence_ttl)
            .field("breaker", &self.breaker)
            .field(
                "labeler",
                &self.labeler.as_ref().map(|_| "Fn(&str) -> String"),
            )
            .field("in_memory", &self.simulated.as_ref().map(Vec::len))
            .finish()
    }
}

impl RedlockBuilder {
    /// The node URLs (replacing any given before). Use 3, 5 or 7 independent masters.
    ///
    /// Each URL is one vote, whatever Redis it names: a standalone server
    /// (`redis://`, `rediss://`, `redis+unix://`), a Redis Cluster
    /// (`redis+cluster://host:port,host:port`) or a Sentinel-managed primary
    /// (`redis+sentinel://host:port,host:port/master`); see [`NodeUrl`](crate::NodeUrl) for
    /// the full syntax.
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one node URL (of any kind, see [`nodes`](Self::nodes)).
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Adds a Redis Cluster as ONE node (one vote), given by seed addresses `host:port`:
    /// the same as `.node("redis+cluster://host:port,host:port")` (use that form for a
    /// password or TLS).
    ///
    /// ```
    /// # async fn demo() -> Result<(), tower_redlock::ConfigError> {
    /// let redlock = tower_redlock::Redlock::builder()
    ///     .node("redis://10.0.0.1:6379")
    ///     .node("redis://10.0.0.2:6379")
    ///     .cluster_node(["10.0.1.1:7000", "10.0.1.2:7000", "10.0.1.3:7000"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster_node<I, S>(self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.node(format!("redis+cluster://{}", seeds.join(",")))
    }

    /// Adds the primary of Sentinel master `master` as ONE node (one vote), found through
    /// the Sentinels at `sentinels` (`host:port`) and followed across failovers: the same
    /// as `.node("redis+sentinel://host:port,host:port/master")` (use that form for
    /// passwords, a database or TLS).
    pub fn sentinel_node<I, S>(self, master: &str, sentinels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sentinels: Vec<String> = sentinels
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        self.node(format!("redis+sentinel://{}/{master}", sentinels.join(",")))
    }

    /// Runs the engine on `nodes` simulated Redis nodes in this process instead of real
    /// ones: no Redis needed. Mutually exclusive with [`node`](Self::node) and
    /// [`nodes`](Self::nodes); 0 or more than 64 nodes is a
    /// [`ConfigError::InvalidInMemory`].
    ///
    /// **A single-process lock**: nothing is shared across processes (two processes built
    /// this way each have their own nodes, and both get every lock). It is for unit tests
    /// of handlers that take locks, examples, and dev setups without Redis; never for
    /// mutual exclusion between processes. The simulated nodes run the same operations as
    /// the engine's Lua scripts, on `tokio::time` (so tests may pause time). Waiters hear
    /// releases made through the same [`Redlock`] at once; others they notice by polling
    /// (no pub/sub between engines).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tower_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().in_memory(3).build().await.unwrap();
    /// let lock = redlock.try_acquire("orders:42").await.unwrap();
    /// assert!(redlock.try_acquire("orders:42").await.is_err());
    /// lock.release().await;
    /// # }
    /// ```
    pub fn in_memory(mut self, nodes: usize) -> Self {
        self.simulated = Some((0..nodes).map(|i| SimNode::with_seed(i as u64)).collect());
        self
    }

    /// Runs the engine on these simulated nodes (the test kit's own, so that a test can
    /// inject faults and look at them).
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub(crate) fn simulated_nodes(mut self, nodes: Vec<SimNode>) -> Self {
        self.simulated = Some(nodes);
        self
    }

    /// Default lease time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Default retry policy of [`Redlock::acquire`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Clock drift allowance as a fraction of the ttl (plus a fixed 2 ms).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// Bound on every call to one node, connection checkout included. Must be below the
    /// ttl; with fencing, three of them (the acquisition, the fencing write-back, and one
    /// extension) must fit in the ttl less the clock drift allowance.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How many replies of one node may be overdue before the node is passed by.
    ///
    /// Acquire, extend and release decide as soon as a quorum answered; the other nodes'
    /// replies are read in the background. A node that lags (a busy host, a slow disk)
    /// leaves more of them behind the faster requests come. Once it has `limit` more
    /// outstanding than the least-behind node, its calls fail at once, as "no" votes, until
    /// half of them have landed or timed out. Nodes passed by and nodes skipped (down or
    /// frozen) together are never more than the quorum can spare: while they would be, no
    /// node is passed by. The memory a lagging node can cost stays bounded, and no more work
    /// piles up on it. Releases and fencing write-backs still go to it (after what they
    /// undo, on the same connection), without their replies being awaited. At least 1.
    pub fn node_backlog(mut self, limit: usize) -> Self {
        self.node_backlog = limit;
        self
    }

    /// Prefix of every Redis key and channel the engine uses.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Issue fencing tokens (see [`HeldLock::fencing_token`](crate::HeldLock::fencing_token)).
    /// With fencing on, [`build`](Self::build) checks that three node timeouts fit in the
    /// ttl less the drift allowance (see [`node_timeout`](Self::node_timeout)).
    pub fn fencing(mut self, on: bool) -> Self {
        self.fencing = on;
        self
    }

    /// Default maximum hold time: the watchdog stops extending after this long.
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// Fail fast after repeated quorum failures (on by default, see [`CircuitBreaker`]).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Never fail fast: every acquisition goes to the nodes.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// Opt-in: derive the metrics `lock` label from the key(s) (joined with `,`). The result
    /// set must stay small (e.g. strip ids: `orders:42` → `orders`).
    pub fn metrics_key_label(
        mut self,
        labeler: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.labeler = Some(std::sync::Arc::new(labeler));
        self
    }

    /// Trust this root certificate (PEM) for `rediss://` nodes instead of the system's roots
    /// (e.g. a private CA). Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root = Some(pem.into());
        self
    }

    /// Connections per node (default 1; 0 or more than 64 is a
    /// [`ConfigError::InvalidPoolSize`]). Each is
    /// a multiplexed connection from the node's bb8 pool, which checks it (`PING`) when
    /// it is taken, replaces it once broken, and bounds its connect by the node timeout.
    /// Calls on the same keys always share one connection (they stay in order); calls on
    /// different keys spread over the pool. One multiplexed connection already pipelines
    /// every concurrent call: on the 2-core bench machine 4 connections cut the 16-task
    /// throughput ratio to raw redis-rs from 0.85 to 0.52 (`lock_cycle`, same session), so
    /// the default stays 1; more may help when one socket's bandwidth is the limit.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// Reads these variables over the current settings (an unset variable changes
    /// nothing):
    ///
    /// | variable | setting | value |
    /// |---|---|---|
    /// | `REDLOCK_NODES` | [`nodes`](Self::nodes) | comma-separated `redis://` / `rediss://` URLs (required unless nodes were given) |
    /// | `REDLOCK_TTL_MS` | [`ttl`](Self::ttl) | milliseconds |
    /// | `REDLOCK_NODE_TIMEOUT_MS` | [`node_timeout`](Self::node_timeout) | milliseconds |
    /// | `REDLOCK_KEY_PREFIX` | [`key_prefix`](Self::key_prefix) | text |
    /// | `REDLOCK_FENCING` | [`fencing`](Self::fencing) | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) |
    /// | `REDLOCK_TLS_CA` | `tls_root_certificate` | path of a PEM file (feature `tls`) |
    /// | `REDLOCK_DRIFT_FACTOR` | [`drift_factor`](Self::drift_factor) | a number in `[0, 0.5)` |
    /// | `REDLOCK_MAX_HOLD_MS` | [`max_hold`](Self::max_hold) | milliseconds, at least 1 |
    /// | `REDLOCK_NODE_BACKLOG` | [`node_backlog`](Self::node_backlog) | a whole number, at least 1 |
    /// | `REDLOCK_POOL_SIZE` | [`pool_size`](Self::pool_size) | a whole number, 1 to 64 |
    /// | `REDLOCK_RETRY_MS` | [`retry`](Self::retry)'s overall deadline | milliseconds; `0`: one attempt, no retry |
    ///
    /// A value that cannot be used is a [`ConfigError::InvalidEnv`] naming the variable.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// Like [`with_env`](Self::with_env), reading variables through `get` (e.g. from a map,
    /// in tests, or from a secrets store).
    pub fn with_vars(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        env::apply(&mut self, get)?;
        Ok(self)
    }

    /// Checks the configuration, creates the node pools and connects to every node
    /// (concurrently, bounded by the node timeout). Does not fail when nodes are down: their
    /// connections are made again on use, each bounded by the node timeout.
    ///
    /// Must run within a Tokio runtime (with its time driver), which then runs the engine's
    /// background work: outside one it fails with [`ConfigError::NoRuntime`].
    pub async fn build(self) -> Result<Redlock, ConfigError> {
        build::build(self).await
    }

    /// Whether waiters for the same keys in this process line up, and a released lease
    /// passes straight to the next of them (default on): only one of them competes on
    /// the nodes, and the hand-over costs one round trip (or none) instead of a release, a
    /// wake-up and an acquisition. Off, every waiter competes on the nodes on its own,
    /// woken by the holder's release. See the README's "Local hand-over" section.
    pub fn local_handover(mut self, on: bool) -> Self {
        self.local_handover = on;
        self
    }

    /// How long a fencing counter outlives the last fenced lock on its key (default 7 days,
    /// at least 10 times the ttl and `max_hold`): every fenced acquisition refreshes it.
    /// Tokens of a key strictly increase while the key is locked at least once per
    /// `fence_ttl`; after a longer quiet spell they start again from 1. See the README's
    /// fencing section for what that assumes of the protected resource.
    pub fn fence_ttl(mut self, ttl: Duration) -> Self {
        self.fence_ttl = Some(ttl);
        self
    }
}
