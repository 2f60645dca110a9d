//! [`Redlock`]: the engine's handle, cheap to clone.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::breaker::Breaker;
use super::builder::RedlockBuilder;
use super::error::{ConfigError, LockError};
use super::fanout::{Fanout, Reply};
use super::janitor::Janitor;
use super::lease::HeldLock;
use super::lifecycle::Lifecycle;
use super::node::{Call, Node};
use super::options::{LockOptions, Resolved};
use super::queue::LocalQueues;
use super::registry::Registry;
use super::retry::RetryPolicy;
use super::telemetry::{KeyLabeler, Waiting};
use super::timers::Timers;
use super::validity;
use super::wake::WakeHub;

/// Settings shared by every operation.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) ttl: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) retry: RetryPolicy,
    pub(crate) node_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) fencing: bool,
    pub(crate) max_hold: Option<Duration>,
    /// How long fencing counters outlive their last use (see `fence_ttl.rs`).
    pub(crate) fence_ttl: Duration,
}

/// What every clone of a [`Redlock`] shares.
pub(crate) struct Shared {
    pub(crate) nodes: Box<[Node]>,
    pub(crate) quorum: usize,
    pub(crate) config: Config,
    pub(crate) breaker: Breaker,
    pub(crate) labeler: Option<KeyLabeler>,
    /// The `lock` metrics label when none is given.
    pub(crate) no_label: Arc<str>,
    pub(crate) queues: Arc<LocalQueues>,
    pub(crate) wake: Arc<WakeHub>,
    pub(crate) janitor: Janitor,
    pub(crate) timers: Timers,
    /// Whether the engine still takes locks, and its work under way (see [`Lifecycle`]).
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// The leases not yet released, for [`Redlock::shutdown`].
    pub(crate) leases: Registry,
}

impl Shared {
    pub(crate) fn resolve(
        &self,
        options: &LockOptions,
        keys: &[String],
    ) -> Result<Resolved, LockError> {
        let c = &self.config;
        let ttl = options.ttl.unwrap_or(c.ttl);
        validity::check_ttl(ttl, c.drift_factor).map_err(|reason| LockError::InvalidOptions {
            reason: format!("ttl of {ttl:?} {reason}"),
        })?;
        if c.node_timeout >= ttl {
            return Err(LockError::InvalidOptions {
                reason: format!(
                    "ttl of {ttl:?} is not larger than the node timeout of {:?}",
                    c.node_timeout
                ),
            });
        }
        let fencing = options.fencing.unwrap_or(c.fencing);
        if fencing {
            validity::check_fenced_timeout(ttl, c.drift_factor, c.node_timeout).map_err(
                |reason| LockError::InvalidOptions {
                    reason: format!("node timeout of {:?}: {reason}", c.node_timeout),
                },
            )?;
        }
        Ok(Resolved {
            ttl,
            drift: validity::drift(ttl, c.drift_factor),
            retry: options.retry.unwrap_or(c.retry),
            auto_extend: options.auto_extend.unwrap_or(true),
            max_hold: options.max_hold.or(c.max_hold),
            fencing,
            label: match (&options.label, &self.labeler) {
                (Some(label), _) => label.clone(),
                (None, Some(labeler)) => labeler(&keys.join(",")).into(),
                (None, None) => self.no_label.clone(),
            },
            skip_holder_ttl: options.skip_holder_ttl,
        })
    }

    /// Number of nodes.
    pub(crate) fn total(&self) -> usize {
        self.nodes.len()
    }

    /// Sends `call` to every node at once; the replies are read as they land, each node
    /// bounded by the node timeout (see [`Fanout`]).
    pub(crate) fn broadcast(
        self: &Arc<Self>,
        call: Call,
    ) -> Fanout<impl Future<Output = Reply<Value>> + Send + 'static> {
        let call = Arc::new(call);
        Fanout::new(self.total(), self.config.node_timeout, |index| {
            let (shared, call) = (self.clone(), call.clone());
            async move { (index, shared.nodes[index].call(&call, None).await) }
        })
    }
}

/// The Redlock engine: a handle on N independent Redis masters.
///
/// Cheap to clone (everything is shared behind an `Arc`), `Send + Sync + 'static`. Build one
/// with [`Redlock::builder`] or [`Redlock::from_env`], then [`acquire`](Redlock::acquire),
/// [`try_acquire`](Redlock::try_acquire) or run code under [`with_lock`](Redlock::with_lock).
///
/// ```no_run
/// # async fn demo(redlock: tower_redlock::Redlock) -> Result<(), tower_redlock::LockError> {
/// let lock = redlock.acquire("report:7").await?;
/// // ... rebuild report 7; the watchdog keeps the lease alive meanwhile ...
/// lock.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redlock {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<_> = self.shared.nodes.iter().map(|n| &n.url).collect();
        f.debug_struct("Redlock")
            .field("nodes", &urls)
            .field("quorum", &self.shared.quorum)
            .field("config", &self.shared.config)
            .field("breaker", &self.shared.breaker.state())
            .finish()
    }
}

impl Redlock {
    /// Starts configuring an engine.
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }

    /// Builds an engine from the environment: `REDLOCK_NODES` (comma-separated `redis://` or
    /// `rediss://` URLs) and the optional variables listed at
    /// [`RedlockBuilder::with_env`].
    pub async fn from_env() -> Result<Redlock, ConfigError> {
        RedlockBuilder::default().with_env()?.build().await
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.shared.nodes.len()
    }

    /// Nodes needed for a quorum: `N / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.shared.quorum
    }

    /// The default lease ttl.
    pub fn ttl(&self) -> Duration {
        self.shared.config.ttl
    }

    /// The per-node timeout.
    pub fn node_timeout(&self) -> Duration {
        self.shared.config.node_timeout
    }

    /// Acquires `key`, retrying per the default [`RetryPolicy`] until its deadline.
    pub fn acquire(
        &self,
        key: impl AsRef<str>,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_with(key, LockOptions::default())
    }

    /// Acquires `key` with one attempt: fails fast with [`LockError::Contended`] when someone
    /// else holds it.
    pub fn try_acquire(
        &self,
        key: impl AsRef<str>,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_with(key, LockOptions::new().no_retry())
    }

    /// Acquires `key` with explicit options.
    pub fn acquire_with(
        &self,
        key: impl AsRef<str>,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_many_with([key], options)
    }

    /// Acquires several keys as one lease, all or nothing on each node (e.g. both accounts of
    /// a transfer). The order of `keys` does not matter: `[a, b]` and `[b, a]` take the same
    /// lock and cannot deadlock each other.
    pub fn acquire_many<I, K>(
        &self,
        keys: I,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        self.acquire_many_with(keys, LockOptions::default())
    }

    /// [`acquire_many`](Redlock::acquire_many) with explicit options.
    pub fn acquire_many_with<I, K>(
        &self,
        keys: I,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let shared = self.shared.clone();
        let keys = super::keys::LockKeys::new(&shared.config.key_prefix, keys);
        async move {
            let keys = Arc::new(keys?);
            let resolved = shared.resolve(&options, &keys.user)?;
            // Counted before the closing flag is read (see `lifecycle`), and until the
            // attempt, or its cancellation, handed any cleanup to the janitor.
            let _busy = shared.lifecycle.enter();
            if shared.lifecycle.is_closing() {
                return Err(LockError::ShutDown);
            }
            let _waiting = Waiting::new(&resolved.label);
            let closing = shared.lifecycle.closing();
            let lock = tokio::select! {
                biased;
                // Shutting down: a waiter gives up at once (a cancelled attempt cleans up).
                () = closing => return Err(LockError::ShutDown),
                acquired = super::acquire::acquire(&shared, keys, resolved) => acquired?,
            };
            if shared.lifecycle.is_closing() {
                // Won just as shutdown began: give it back before shutdown stops waiting.
                let _ = lock.release().await;
                return Err(LockError::ShutDown);
            }
            Ok(lock)
        }
    }

    /// Runs `work` while holding `key`, and always releases afterwards.
    ///
    /// The lease is auto-extended while `work` runs. If it is lost anyway (a quorum of nodes
    /// became unreachable), `work` is dropped at its next await point and the result is
    /// [`LockError::Lost`].
    ///
    /// ```no_run
    /// # async fn demo(redlock: tower_redlock::Redlock) -> Result<(), tower_redlock::LockError> {
    /// let paid = redlock
    ///     .with_lock("order:42", async |lock| {
    ///         // charge the card exactly once
    ///         lock.remaining()
    ///     })
    ///     .await?;
    /// # let _ = paid; Ok(()) }
    /// ```
    pub async fn with_lock<T, F, Fut>(&self, key: impl AsRef<str>, work: F) -> Result<T, LockError>
    where
        F: FnOnce(HeldLock) -> Fut,
        Fut: Future<Output = T>,
    {
        self.with_lock_options(key, LockOptions::default(), work)
            .await
    }

    /// [`with_lock`](Redlock::with_lock) with explicit options.
    pub async fn with_lock_options<T, F, Fut>(
        &self,
        key: impl AsRef<str>,
        options: LockOptions,
        work: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(HeldLock) -> Fut,
        Fut: Future<Output = T>,
    {
        let lock = self.acquire_with(key, options).await?;
        let lost = lock.lost_only();
        let result = tokio::select! {
            biased;
            value = work(lock.clone()) => Ok(value),
            () = lost => Err(LockError::Lost),
        };
        // The work is done (or dropped): release now rather than when the clones go.
        let _ = lock.release().await;
        result
    }
}
