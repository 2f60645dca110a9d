//! A Sentinel-managed primary as ONE node (one vote): found through the Sentinels, followed
//! across failovers.
//!
//! - **Finding it** ([`discover`]): every Sentinel is asked at once (`SENTINEL MASTER`,
//!   each bounded by the node timeout, with the Sentinels' own credentials); of the answers
//!   that come in shortly after the first, the newest (highest config epoch) is checked with
//!   `ROLE` on the very connection calls then use, and only a `master` is used: a lock call
//!   never goes to a replica (which would refuse every write anyway: `READONLY`).
//! - **Talking to it**: the standalone transport ([`RedisLink`]: pool, scripts by SHA) at
//!   the address found, with ONE connection (lane): every call keeps its order on one
//!   socket, and the lane of a key never depends on which primary is current
//!   ([`Link::lane_of_key`](super::link::Link::lane_of_key) is 0), so `pool_size` applies to
//!   standalone nodes only. A new primary gets a new pool; the old one closes with its last
//!   handle (a cleanup still follows its request down the old socket).
//! - **Following a failover**: a reply of `READONLY` or `MASTERDOWN`, a connection error,
//!   a connection marked broken, or a `+switch-master` notice ([`watch`]) makes the primary
//!   *stale*: the call that saw it fails (a "no" vote) and the next call finds the primary
//!   again (keeping the connections when it did not move).
//!
//! Everything happens inside a call, so the caller's node timeout bounds it all. Wake on
//! release (pub/sub) is off for a Sentinel node: waiters poll (see
//! [`client_for`](super::redis::client_for)).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::{ConnectionInfo, ErrorKind, RedisError, ServerErrorKind, Value};

use self::discover::{Address, Sentinels, is_master};
use super::call::Call;
use super::error::NodeError;
use super::redis::{RedisConn, RedisLink};
use super::transport::{Connection, Transport};

mod discover;
mod watch;

/// Connections to the primary: one (see the module docs).
const ONE_LANE: usize = 1;

/// The primary in use, and whether it is still to be trusted.
struct Primary {
    address: Address,
    link: Arc<RedisLink>,
    /// Set when a reply or a failure showed it may no longer be the primary.
    stale: AtomicBool,
    /// [`SentinelLink::switches`] when it was found.
    switches: u64,
}

/// The node's connections: those of its current primary.
pub(crate) struct SentinelLink {
    sentinels: Arc<Sentinels>,
    /// The primary's credentials, database and TLS (its address is the Sentinels').
    /// Boxed: large, and the link sits beside the others in an enum.
    template: Box<ConnectionInfo>,
    timeout: Duration,
    current: RwLock<Option<Arc<Primary>>>,
    /// One caller at a time finds the primary (and everyone uses what it found).
    setup: tokio::sync::Mutex<()>,
    /// Failovers announced by the Sentinels (see [`watch`]).
    switches: Arc<AtomicU64>,
    watch: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A handle on one connection to the primary, and the primary it goes to.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    conn: RedisConn,
    primary: Arc<Primary>,
}

impl SentinelLink {
    /// The node's link, without connecting.
    pub(crate) fn new(
        sentinels: &[ConnectionInfo],
        master: &str,
        primary: &ConnectionInfo,
        timeout: Duration,
        tls_root: Option<&[u8]>,
    ) -> Result<SentinelLink, RedisError> {
        if sentinels.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no Sentinel address",
            )));
        }
        Ok(SentinelLink {
            sentinels: Arc::new(Sentinels::new(sentinels, master, timeout, tls_root)),
            template: Box::new(primary.clone()),
            timeout,
            current: RwLock::default(),
            setup: tokio::sync::Mutex::new(()),
            switches: Arc::default(),
            watch: Mutex::default(),
        })
    }

    /// The current primary, as `host:port`, once found.
    pub(crate) fn primary(&self) -> Option<String> {
        self.known().map(|primary| primary.address.to_string())
    }

    /// The primary last found, stale or not.
    fn known(&self) -> Option<Arc<Primary>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The primary last found, unless it is stale.
    fn trusted(&self) -> Option<Arc<Primary>> {
        self.known().filter(|primary| !self.is_stale(primary))
    }

    fn is_stale(&self, primary: &Primary) -> bool {
        primary.stale.load(Ordering::Acquire)
            || primary.switches != self.switches.load(Ordering::Acquire)
    }

    /// Finds the primary again (see the module docs) and returns `call`'s connection to it,
    /// checked with `ROLE`.
    async fn rediscover(&self, call: &Call) -> Result<SentinelConn, NodeError> {
        let _setup = self.setup.lock().await;
        if let Some(primary) = self.trusted() {
            let conn = connection_to(&primary, call).await?;
            return Ok(SentinelConn { conn, primary });
        }
        self.ensure_watch();
        let switches = self.switches.load(Ordering::Acquire);
        let address = self.sentinels.primary().await?;
        let link = match self.known() {
            Some(known) if known.address == address => Arc::clone(&known.link),
            _ => Arc::new(RedisLink::at(
                &address.info(&self.template),
                self.timeout,
                ONE_LANE,
                self.sentinels_tls_root(),
            )?),
        };
        let primary = Arc::new(Primary {
            address,
            link,
            stale: AtomicBool::new(false),
            switches,
        });
        let conn = connection_to(&primary, call).await?;
        let role = Call::Command(redis::cmd("ROLE"));
        let checked = conn.clone().send(&role).await.inspect_err(|_| {
            primary.stale.store(true, Ordering::Release);
        })?;
        if !is_master(&checked) {
            return Err(NodeError::Reply(
                "the address the Sentinels gave is not a primary (a failover under way?)",
            ));
        }
        tracing::debug!(
            master = self.sentinels.master(),
            primary = %primary.address,
            "Sentinel primary found"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&primary));
        Ok(SentinelConn { conn, primary })
    }

    fn sentinels_tls_root(&self) -> Option<&[u8]> {
        self.sentinels.tls_root()
    }

    /// Starts the `+switch-master` watch, or starts it again if its runtime went away.
    fn ensure_watch(&self) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.iter().any(|task| !task.is_finished()) {
            return;
        }
        *watch = watch::spawn(&self.sentinels, &self.switches);
    }
}

impl Drop for SentinelLink {
    fn drop(&mut self) {
        let watch = self.watch.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in watch.drain(..) {
            task.abort();
        }
    }
}

/// `call`'s connection on `primary`'s link; a failure makes the primary stale.
async fn connection_to(primary: &Primary, call: &Call) -> Result<RedisConn, NodeError> {
    primary.link.connection(call).await.inspect_err(|_| {
        primary.stale.store(true, Ordering::Release);
    })
}

impl Transport for SentinelLink {
    type Conn = SentinelConn;

    async fn connection(&self, call: &Call) -> Result<SentinelConn, NodeError> {
        match self.trusted() {
            Some(primary) => {
                let conn = connection_to(&primary, call).await?;
                Ok(SentinelConn { conn, primary })
            }
            // Boxed: rare, and large.
            None => Box::pin(self.rediscover(call)).await,
        }
    }

    fn current(&self, call: &Call) -> Option<SentinelConn> {
        let primary = self.known()?;
        let conn = primary.link.current(call)?;
        Some(SentinelConn { conn, primary })
    }

    async fn warm_up(&self) {
        let _ = self.connection(&Call::Command(redis::cmd("PING"))).await;
    }

    fn is_current(&self, conn: &SentinelConn) -> bool {
        self.known().is_some_and(|primary| {
            Arc::ptr_eq(&primary.link, &conn.primary.link) && primary.link.is_current(&conn.conn)
        })
    }
}

impl Connection for SentinelConn {
    async fn send(self, call: &Call) -> Result<Value, NodeError> {
        let reply = self.conn.clone().send(call).await;
        if let Err(NodeError::Redis(e)) = &reply
            && (self.conn.is_broken() || demoted(e))
        {
            self.primary.stale.store(true, Ordering::Release);
        }
        reply
    }

    fn mark_broken(&self) {
        self.conn.mark_broken();
        self.primary.stale.store(true, Ordering::Release);
    }

    fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }
}

/// Whether `e` says the server is no longer (or not yet) a usable primary.
fn demoted(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    ) || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}
