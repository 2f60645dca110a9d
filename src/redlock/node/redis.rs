//! The Redis transport: a bb8 pool per node over our own connection manager, lanes of
//! multiplexed connections, and script calls by SHA.
//!
//! The pool ([`pool`]) is bb8's, over our own connection manager
//! ([`NodeManager`](pool::NodeManager): the node timeout, the scripts loaded, `is_valid`,
//! `has_broken`); a pool wedged by a connect cut off with its runtime is replaced by a
//! fresh one (see there).
//!
//! The pool holds `pool_size` connections; each is a *lane*: a connection checked out of
//! the pool and kept as long as it is healthy, shared by every call sent on that lane (a
//! multiplexed connection pipelines concurrent calls and keeps them in order). A call's
//! lane follows from its first key, so that every call on one key set — acquire, extend,
//! mark, hand-off, release — goes down the same socket, in the order it was made; with one
//! lane (the default) every call does. A broken lane gives its connection back to bb8 and
//! checks out the next one; a connection that fails is reported at once (bb8 would wait out
//! its checkout timeout on a refused connection).
//!
//! A call keeps a clone of the handle it went out on ([`SentOn`](super::SentOn)), so that its
//! cleanup follows it down that socket even after the lane moved on (the socket stays open
//! while a handle is alive).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Cmd, ConnectionInfo, ErrorKind, RedisError, ServerErrorKind, Value};

use self::pool::{Checkout, NodePool};

use super::call::{Call, ScriptCall};
use super::error::NodeError;
use super::transport::{Connection, Transport};
use crate::redlock::config::node_url::{NodeUrl, Target};

mod pool;

/// A handle on one multiplexed connection, its broken flag, and the lane it serves.
#[derive(Clone)]
pub(crate) struct RedisConn {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    lane: usize,
}

impl Connection for RedisConn {
    async fn send(mut self, call: &Call) -> Result<Value, NodeError> {
        let reply = match call {
            Call::Command(cmd) => send_on(&mut self.conn, cmd).await,
            Call::Script(call) => run_script(&mut self.conn, call).await,
        };
        reply.map_err(|e| mark_if_broken(e, &self.broken))
    }

    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// One lane: its current connection, the pool's checkout behind it, and the lock under
/// which the next one is made.
#[derive(Default)]
struct Lane {
    /// The handle calls clone. A broken one stays current until the next one is made:
    /// calls that must reach a skipped node are sent on it (see [`super`]).
    current: RwLock<Option<RedisConn>>,
    /// The current connection checked out of the pool, as long as it is healthy; given
    /// back to bb8 (which drops a broken one) when the lane replaces it. The socket stays
    /// open while a handle (`current`, a call's) is alive.
    checkout: Mutex<Option<Checkout>>,
    setup: tokio::sync::Mutex<()>,
}

/// One Redis node's connections.
pub(crate) struct RedisLink {
    pool: NodePool,
    lanes: Box<[Lane]>,
    /// Picks lanes from keys; fixed for the link's life.
    hasher: std::hash::RandomState,
}

impl RedisLink {
    /// Creates the node's pool of `pool_size` connections (at least 1) without connecting
    /// (connections are made on first use, so a node that is down at start-up does not stop
    /// the service from starting).
    pub(crate) fn new(
        url: &NodeUrl,
        timeout: Duration,
        pool_size: usize,
        tls_root: Option<&[u8]>,
    ) -> Result<RedisLink, RedisError> {
        Ok(RedisLink::with_client(
            client_for(url, tls_root)?,
            timeout,
            pool_size,
        ))
    }

    /// The link to the one server at `info` (e.g. the primary a Sentinel reported), made
    /// as [`new`](Self::new) makes it.
    pub(crate) fn at(
        info: &ConnectionInfo,
        timeout: Duration,
        pool_size: usize,
        tls_root: Option<&[u8]>,
    ) -> Result<RedisLink, RedisError> {
        Ok(RedisLink::with_client(
            client_at(info, tls_root)?,
            timeout,
            pool_size,
        ))
    }

    fn with_client(client: Client, timeout: Duration, pool_size: usize) -> RedisLink {
        let pool_size = pool_size.max(1);
        RedisLink {
            pool: NodePool::new(client, pool_size, timeout),
            lanes: (0..pool_size).map(|_| Lane::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The lane of `call`: from its first key (so calls on one key set share a socket).
    fn lane_of(&self, call: &Call) -> usize {
        if self.lanes.len() == 1 {
            return 0;
        }
        let key = match call {
            Call::Command(cmd) => cmd.args_iter().nth(1),
            Call::Script(call) => call.evalsha().args_iter().nth(3),
        };
        let mut hasher = self.hasher.build_hasher();
        if let Some(redis::Arg::Simple(key)) = key {
            hasher.write(key);
        }
        (hasher.finish() % self.lanes.len() as u64) as usize
    }

    /// The lane of a call whose first key is `key` (as [`lane_of`](Self::lane_of) picks it):
    /// for grouping several leases into one call that stays on each one's lane.
    pub(crate) fn lane_of_key(&self, key: &[u8]) -> usize {
        if self.lanes.len() == 1 {
            return 0;
        }
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        (hasher.finish() % self.lanes.len() as u64) as usize
    }

    /// Lane `lane`'s current connection, unless there is none or it is marked broken.
    fn healthy_current(&self, lane: usize) -> Option<RedisConn> {
        let current = self.lanes[lane]
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| !c.is_broken()).cloned()
    }

    /// Sets up lane `lane`'s next connection: checked out of the pool (bb8 checks it with a
    /// `PING`, or makes a new one), bounded by the node timeout.
    async fn replace_connection(&self, lane: usize) -> Result<RedisConn, NodeError> {
        // One caller at a time (FIFO) sets up the lane's next connection and everyone uses
        // it, so commands on a lane keep the order they were issued in (a cleanup never
        // overtakes the SET it undoes on another socket).
        let _setup = self.lanes[lane].setup.lock().await;
        if let Some(current) = self.healthy_current(lane) {
            return Ok(current);
        }
        // The broken one goes back to bb8 first (which drops it): its pool slot is free for
        // the next one. It stays current (its socket open) until the next one is made.
        let old = self.lanes[lane]
            .checkout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(old);
        let pooled = self.pool.check_out().await?;
        let fresh = RedisConn {
            conn: pooled.conn.clone(),
            broken: pooled.broken.clone(),
            lane,
        };
        *self.lanes[lane]
            .checkout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(pooled);
        *self.lanes[lane]
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Lane `lane`'s connection to send on now.
    async fn connection_on(&self, lane: usize) -> Result<RedisConn, NodeError> {
        match self.healthy_current(lane) {
            Some(current) => Ok(current),
            // Boxed: the set-up future is large (checkout, connect, script loading) and
            // rarely needed, so it stays out of every call's future.
            None => Box::pin(self.replace_connection(lane)).await,
        }
    }

    /// Lane `lane`'s current connection, broken or not.
    fn current_on(&self, lane: usize) -> Option<RedisConn> {
        self.lanes[lane]
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Transport for RedisLink {
    type Conn = RedisConn;

    /// The current connection of `call`'s lane, shared by every call on it (concurrent
    /// calls pipeline over one socket and cost no checkout); when it breaks, the next one is
    /// checked out of the pool.
    async fn connection(&self, call: &Call) -> Result<RedisConn, NodeError> {
        self.connection_on(self.lane_of(call)).await
    }

    fn current(&self, call: &Call) -> Option<RedisConn> {
        self.current_on(self.lane_of(call))
    }

    /// Connects every lane at once.
    async fn warm_up(&self) {
        let lanes = (0..self.lanes.len()).map(|lane| self.connection_on(lane));
        let _ = futures_util::future::join_all(lanes).await;
    }

    fn is_current(&self, conn: &RedisConn) -> bool {
        let current = self.lanes[conn.lane]
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(&current.broken, &conn.broken))
    }
}

/// Sends one command and reads its reply (a server error reply becomes an error).
///
/// redis-rs's future is over 1 KiB: boxed once here, every layer above (and the fan-outs
/// holding one call per node) moves a pointer instead of copying it at each step.
async fn send_on(conn: &mut MultiplexedConnection, cmd: &Cmd) -> Result<Value, RedisError> {
    Box::pin(conn.send_packed_command(cmd))
        .await?
        .extract_error()
}

/// Runs the script on `conn` by SHA, loading it with `EVAL` when the node does not know it.
async fn run_script(
    conn: &mut MultiplexedConnection,
    call: &ScriptCall,
) -> Result<Value, RedisError> {
    match send_on(conn, call.evalsha()).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            send_on(conn, &call.eval()).await
        }
        other => other,
    }
}

/// A client for a standalone node `url` (an error for other kinds): with TLS
/// (`rediss://`, feature `tls`) it trusts `tls_root` (PEM) when given, the system's roots
/// otherwise.
pub(crate) fn client_for(url: &NodeUrl, tls_root: Option<&[u8]>) -> Result<Client, RedisError> {
    match url.target() {
        Target::Standalone(info) => client_at(info, tls_root),
        Target::Cluster { .. } | Target::Sentinel { .. } => Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "not a standalone node",
        ))),
    }
}

/// A client for one server at `info` (see [`client_for`]).
pub(crate) fn client_at(
    info: &ConnectionInfo,
    tls_root: Option<&[u8]>,
) -> Result<Client, RedisError> {
    #[cfg(feature = "tls")]
    if let Some(root) = tls_root {
        return Client::build_with_tls(
            info.clone(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            },
        );
    }
    let _ = tls_root;
    Client::open(info.clone())
}

fn mark_if_broken(err: RedisError, broken: &AtomicBool) -> NodeError {
    if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
        broken.store(true, Ordering::Relaxed);
    }
    NodeError::Redis(err)
}

#[cfg(test)]
impl RedisConn {
    /// A connection of its own, outside any pool: for tests that drive one node directly.
    pub(crate) fn standalone(conn: MultiplexedConnection) -> Self {
        RedisConn {
            conn,
            broken: Arc::default(),
            lane: 0,
        }
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::testkit::LocalCluster;

    /// Long enough that the first connect is still waiting for its node when its runtime is
    /// dropped (nothing below waits for it to run out).
    const NODE_TIMEOUT: Duration = Duration::from_secs(3);

    fn ping() -> Call {
        Call::Command(redis::cmd("PING"))
    }

    /// Relays every connection `listener` accepts from now on to `upstream`.
    async fn relay(listener: tokio::net::TcpListener, upstream: std::net::SocketAddr) {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    /// An engine's runtime can be dropped while a node connection is being made (the
    /// connect task dies with it); the engine used on another runtime must still connect.
    #[test]
    fn a_connect_cut_off_by_its_runtime_does_not_wedge_the_node() {
        // The node's address: it accepts TCP (the kernel does) but nobody answers, yet.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let url = NodeUrl::parse(&format!("redis://{addr}")).unwrap();

        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (link, _unanswered) = first.block_on(async {
            let link = Arc::new(RedisLink::new(&url, NODE_TIMEOUT, 1, None).unwrap());
            let connecting = Arc::clone(&link);
            tokio::spawn(async move { connecting.connection(&ping()).await });
            // The connect is under way once the node accepted it; it then waits for replies.
            let accepting = tokio::net::TcpListener::from_std(listener.try_clone().unwrap());
            let (socket, _) = accepting.unwrap().accept().await.unwrap();
            (link, socket.into_std().unwrap())
        });
        // Mid-connect: every task of the first runtime is dropped.
        drop(first);

        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        second.block_on(async {
            let cluster = LocalCluster::start(1).await.expect("a redis-server");
            // From now on the node answers: its address leads to a real redis-server.
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(relay(listener, cluster.addr(0)));
            // The first checkouts find the pool wedged by the connect that died with the
            // first runtime: each fails closed within the node timeout, and the second
            // replaces the pool for the next one (see `pool`). Without that, every one would
            // fail. (One more try: on a loaded machine the next connect may be slow too.)
            let mut conn = None;
            for attempt in 0..4 {
                let made = tokio::time::timeout(2 * NODE_TIMEOUT, link.connection(&ping()))
                    .await
                    .expect("the link's own timeout bounds it");
                match made {
                    Ok(made) => {
                        conn = Some(made);
                        break;
                    }
                    Err(e) => assert!(
                        attempt < 3 && matches!(e, NodeError::Timeout(_)),
                        "attempt {attempt}: {e:?}"
                    ),
                }
            }
            let conn = conn.expect("a new connection on the second runtime");
            let pong = tokio::time::timeout(NODE_TIMEOUT, conn.send(&ping()))
                .await
                .expect("answered in time")
                .expect("PONG");
            assert_eq!(pong, Value::SimpleString("PONG".into()));
        });
    }
}
