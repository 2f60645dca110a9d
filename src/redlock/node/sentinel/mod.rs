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
//! The lookup runs in the background ([`find`]): a call waits for it within its own node
//! timeout (a "no" vote when it does not end in time), and a lookup that takes longer still
//! serves the next call. Wake on release (pub/sub) is off for a Sentinel node: waiters poll
//! (see [`client_for`](super::redis::client_for)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionInfo, ErrorKind, RedisError, ServerErrorKind, Value};
use tokio::task::JoinHandle;

use self::discover::{Address, Sentinels};
use self::find::Shared;
use super::call::Call;
use super::error::NodeError;
use super::redis::{RedisConn, RedisLink};
use super::transport::{Connection, Transport};

mod discover;
mod find;
mod watch;

/// Connections to the primary: one (see the module docs).
const ONE_LANE: usize = 1;

/// The primary in use, and whether it is still to be trusted.
struct Primary {
    address: Address,
    link: Arc<RedisLink>,
    /// Set when a reply or a failure showed it may no longer be the primary.
    stale: AtomicBool,
    /// The Sentinels' switch count when it was found (see [`watch`]).
    switches: u64,
}

/// The node's connections: those of its current primary.
pub(crate) struct SentinelLink {
    shared: Arc<Shared>,
    /// The lookup under way, if any: one at a time (see [`find`]).
    finding: Mutex<Option<JoinHandle<()>>>,
    /// The `+switch-master` subscriptions (see [`watch`]).
    watch: Mutex<Vec<JoinHandle<()>>>,
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
        let sentinels = Sentinels::new(sentinels, master, timeout, tls_root);
        Ok(SentinelLink {
            shared: Arc::new(Shared::new(sentinels, primary, timeout)),
            finding: Mutex::default(),
            watch: Mutex::default(),
        })
    }

    /// The current primary, as `host:port`, once found.
    pub(crate) fn primary(&self) -> Option<String> {
        self.shared
            .known()
            .map(|primary| primary.address.to_string())
    }

    /// Waits for a lookup of the primary that ends after this call began (starting one
    /// unless one is under way), then gives `call`'s connection to what it found.
    async fn rediscover(&self, call: &Call) -> Result<SentinelConn, NodeError> {
        let mut ended = self.shared.watch_ended();
        ended.borrow_and_update();
        if self.shared.trusted().is_none() {
            self.start_finding();
            // The sender lives in `shared`, which outlives this call.
            let _ = ended.changed().await;
        }
        let Some(primary) = self.shared.trusted() else {
            let failure = ended.borrow().failure();
            return Err(failure.unwrap_or(NodeError::Reply(
                "the Sentinel primary moved during the lookup",
            )));
        };
        let conn = connection_to(&primary, call).await?;
        Ok(SentinelConn { conn, primary })
    }

    /// Starts a lookup unless one is under way (and the `+switch-master` watch unless it
    /// runs); outside a Tokio runtime, nothing.
    fn start_finding(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut finding = self.finding.lock().unwrap_or_else(|e| e.into_inner());
        if finding.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        self.ensure_watch();
        *finding = Some(runtime.spawn(find::find(Arc::clone(&self.shared))));
    }

    /// Starts the `+switch-master` watch, or starts it again if its runtime went away.
    fn ensure_watch(&self) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.iter().any(|task| !task.is_finished()) {
            return;
        }
        *watch = watch::spawn(&self.shared.sentinels, &self.shared.switches);
    }
}

impl Drop for SentinelLink {
    fn drop(&mut self) {
        let finding = self.finding.get_mut().unwrap_or_else(|e| e.into_inner());
        let watch = self.watch.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in finding.take().into_iter().chain(watch.drain(..)) {
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
        match self.shared.trusted() {
            Some(primary) => {
                let conn = connection_to(&primary, call).await?;
                Ok(SentinelConn { conn, primary })
            }
            // Boxed: rare, and large.
            None => Box::pin(self.rediscover(call)).await,
        }
    }

    fn current(&self, call: &Call) -> Option<SentinelConn> {
        let primary = self.shared.known()?;
        let conn = primary.link.current(call)?;
        Some(SentinelConn { conn, primary })
    }

    async fn warm_up(&self) {
        let _ = self.connection(&Call::Command(redis::cmd("PING"))).await;
    }

    fn is_current(&self, conn: &SentinelConn) -> bool {
        self.shared.known().is_some_and(|primary| {
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
