//! [`Redlock`]: the engine's handle, cheap to clone, and every method of it; its builder
//! in [`builder`].

pub(crate) mod builder;
mod shared;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use self::builder::RedlockBuilder;
use crate::redlock::acquire;
use crate::redlock::config::node_url::NodeKind;
use crate::redlock::config::options::LockOptions;
use crate::redlock::core::error::{ConfigError, LockError};
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::telemetry::Waiting;
use crate::redlock::engine::Engine;
use crate::redlock::lease::HeldLock;
use crate::redlock::ops::health::settings::{self, SettingsReport};
use crate::redlock::ops::health::{self, HealthReport};
use crate::redlock::ops::shutdown;
use crate::redlock::shared::check_shape;

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
    pub(crate) engine: Arc<Engine>,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<_> = self.engine.nodes().iter().map(|n| &n.url).collect();
        f.debug_struct("Redlock")
            .field("nodes", &urls)
            .field("quorum", &self.engine.nodes().quorum())
            .field("config", &self.engine.settings)
            .field("breaker", &self.engine.breaker.state())
            .finish()
    }
}

impl Redlock {
    /// Starts configuring an engine.
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }

    /// Builds an engine from the environment: `REDLOCK_NODES` (comma-separated node URLs of
    /// any kind, see [`NodeUrl`](crate::NodeUrl)) and the optional variables listed at
    /// [`RedlockBuilder::with_env`].
    pub async fn from_env() -> Result<Redlock, ConfigError> {
        RedlockBuilder::default().with_env()?.build().await
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.engine.nodes().total()
    }

    /// Nodes needed for a quorum: `N / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.engine.nodes().quorum()
    }

    /// The default lease ttl.
    pub fn ttl(&self) -> Duration {
        self.engine.settings.ttl
    }

    /// The per-node timeout.
    pub fn node_timeout(&self) -> Duration {
        self.engine.settings.node_timeout
    }

    /// Acquires `key`, retrying per the default [`RetryPolicy`](crate::RetryPolicy) until its deadline.
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
        let keys = LockKeys::new(&self.engine.settings.key_prefix, keys);
        self.acquire_keys(keys, options)
    }

    /// Acquires the key set `keys` (of any shape) with `options`.
    fn acquire_keys(
        &self,
        keys: Result<LockKeys, LockError>,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        let engine = self.engine.clone();
        async move {
            let keys = Arc::new(keys?);
            engine.nodes().check_keys(&keys)?;
            let resolved = engine.resolve(&options, &keys.user)?;
            let in_memory = engine
                .nodes()
                .iter()
                .any(|n| n.kind() == NodeKind::InMemory);
            check_shape(&keys, resolved.fencing, in_memory)?;
            let lifecycle = engine.lifecycle();
            // Counted before the closing flag is read (see `lifecycle`), and until the
            // attempt, or its cancellation, handed any cleanup to the janitor.
            let _busy = lifecycle.enter();
            if lifecycle.is_closing() {
                return Err(LockError::ShutDown);
            }
            let _waiting = Waiting::new(&resolved.label);
            let closing = lifecycle.closing();
            let lock = tokio::select! {
                biased;
                // Shutting down: a waiter gives up at once (a cancelled attempt cleans up).
                () = closing => return Err(LockError::ShutDown),
                acquired = acquire::acquire(&engine, keys, resolved) => acquired?,
            };
            if lifecycle.is_closing() {
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

    /// Liveness: whether the engine itself is usable, without any Redis round trip. A Redis
    /// outage leaves it `true` (that is for readiness, [`health`](Redlock::health), to
    /// report): a process restarted because Redis is down comes back to the same outage.
    pub fn is_live(&self) -> bool {
        // The one state that makes an engine unusable is its shutdown; until then it is live.
        !self.engine.lifecycle().is_closing()
    }

    /// Checks every node (`PING`, `INFO`) and takes a real test lock.
    ///
    /// The test lock is on a fresh random key in the engine's internal namespace (never a
    /// user key): concurrent checks do not contend, and no lock a client takes can fail the
    /// check. It is one attempt that leaves the circuit breaker and the lock metrics alone
    /// (the report shows the breaker's state).
    ///
    /// Every call is bounded by the node timeout, so this returns within a few of them
    /// even when nodes are down.
    pub async fn health(&self) -> HealthReport {
        health::check(&self.engine).await
    }

    /// Reads every node's `maxmemory-policy`, `appendonly` and `save` and reports the
    /// settings that break locks ([`SettingWarning`](crate::health::SettingWarning)). A node that
    /// refuses `CONFIG GET` (ACL) or does not answer is reported as unknown (`unknown`), not
    /// as an error.
    ///
    /// [`build`](crate::RedlockBuilder::build) runs it once in the background and logs what
    /// it finds. Bounded by three node timeouts.
    pub async fn check_config(&self) -> SettingsReport {
        settings::check_config(&self.engine).await
    }
    /// Releases every lease this engine holds and stops taking new ones: call it when the
    /// service stops, so that other instances get the keys at once instead of after a ttl.
    ///
    /// In order:
    /// 1. new acquisitions fail with [`LockError::ShutDown`](crate::LockError::ShutDown),
    ///    and so do the ones still waiting (in a retry loop or behind a local holder);
    /// 2. every lease not yet released is released on the nodes, for all its clones: they
    ///    see [`is_held`](crate::HeldLock::is_held) `== false`, and
    ///    [`ended`](crate::HeldLock::ended) resolves. Nothing is handed on to local waiters;
    /// 3. it waits for the releases still in flight, in the background included (a lease
    ///    dropped just before, the late replies of a quorum already decided).
    ///
    /// Bounded: it returns after at most four node timeouts, whatever the nodes do. What
    /// is left then (nodes that did not answer) expires with its ttl. Calling it again is
    /// harmless. Clones of the engine share its state: one shutdown shuts them all down.
    ///
    /// With axum, after the server stopped taking requests:
    ///
    /// ```no_run
    /// # async fn serve(
    /// #     redlock: tower_redlock::Redlock,
    /// #     app: axum::Router,
    /// #     listener: tokio::net::TcpListener,
    /// # ) -> std::io::Result<()> {
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// // In-flight requests are done (their leases released); give back what is left,
    /// // e.g. leases held by background jobs.
    /// redlock.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) {
        shutdown::shutdown(&self.engine).await;
    }
}
