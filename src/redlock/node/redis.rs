//! The Redis transport: lanes of multiplexed connections per node, and script calls by SHA.
//!
//! A node has `pool_size` *lanes* (at least 1); each holds one multiplexed connection as
//! long as it is healthy, shared by every call sent on that lane (a multiplexed connection
//! pipelines concurrent calls and keeps them in order). A call's lane follows from its
//! first key, so that every call on one key set — acquire, extend, mark, hand-off, release
//! — goes down the same socket, in the order it was made; with one lane (the default)
//! every call does.
//!
//! A connection is marked broken after an I/O error, or a `PING` probe that went unanswered
//! after a timeout; the next call on its lane then makes a new one ([`Connector`]: connect
//! and script loading bounded together by the node timeout), one caller at a time, and
//! every caller waiting uses it. A connection that fails is reported at once.
//!
//! Connections are made in the task of the caller that needs one, not by a pool in tasks of
//! its own: a connect cut off by anything — a cancelled caller, the runtime it ran on
//! dropped — leaves nothing behind, and the next caller starts afresh. (bb8 0.9.1 spawns
//! its connects on the runtime current at checkout; when that runtime is dropped mid-connect
//! the task goes without giving back its slot, so a pool whose size that fills waits for it
//! on every checkout from then on: the node stays unreachable for good.)
//!
//! A call keeps a clone of the handle it went out on ([`SentOn`](super::SentOn)), so that its
//! cleanup follows it down that socket even after the lane moved on (the socket stays open
//! while a handle is alive).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::call::{Call, ScriptCall};
use super::error::NodeError;
use super::transport::{Connection, Transport};
use crate::redlock::node_url::NodeUrl;
use crate::redlock::scripts;

/// Makes a node's connections: bounded by the node timeout, with every script loaded.
struct Connector {
    client: Client,
    timeout: Duration,
}

impl Connector {
    /// A new connection, made in the caller's task; connecting and loading the scripts are
    /// bounded together by the node timeout (a frozen node accepts connections, the kernel
    /// does, but never answers).
    async fn connect(&self) -> Result<MultiplexedConnection, NodeError> {
        tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
            .map_err(NodeError::Redis)
    }

    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        // Responses are bounded by the caller's own timeout: redis-rs reports its response
        // timeout as an I/O error, which would needlessly throw the connection away and
        // send the next command (e.g. a cleanup) down another socket, out of order.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Load every script once per connection (a new connection after a node restart
        // reloads them), so that EVALSHA does not need a NOSCRIPT round trip — which a
        // cleanup sent to a frozen node would not get before its timeout.
        let mut load = redis::pipe();
        for script in scripts::ALL.iter() {
            load.cmd("SCRIPT").arg("LOAD").arg(script.body);
        }
        load.query_async::<()>(&mut conn).await?;
        Ok(conn)
    }
}

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

/// One lane: its current connection, and the lock under which the next one is made.
#[derive(Default)]
struct Lane {
    /// The handle calls clone. A broken one stays current until the next one is made:
    /// calls that must reach a skipped node are sent on it (see [`super`]). The socket
    /// stays open while a handle (this one, a call's) is alive.
    current: RwLock<Option<RedisConn>>,
    setup: tokio::sync::Mutex<()>,
}

/// One Redis node's connections.
pub(crate) struct RedisLink {
    /// Boxed: a `Client` is large, and the link sits beside the simulated one in an enum.
    connector: Box<Connector>,
    lanes: Box<[Lane]>,
    /// Picks lanes from keys; fixed for the link's life.
    hasher: std::hash::RandomState,
}

impl RedisLink {
    /// Creates the node's `pool_size` lanes (at least 1) without connecting (connections
    /// are made on first use, so a node that is down at start-up does not stop the service
    /// from starting).
    pub(crate) fn new(
        url: &NodeUrl,
        timeout: Duration,
        pool_size: usize,
        tls_root: Option<&[u8]>,
    ) -> Result<RedisLink, RedisError> {
        let client = client_for(url, tls_root)?;
        Ok(RedisLink {
            connector: Box::new(Connector { client, timeout }),
            lanes: (0..pool_size.max(1)).map(|_| Lane::default()).collect(),
            hasher: std::hash::RandomState::new(),
        })
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

    /// Lane `lane`'s current connection, unless there is none or it is marked broken.
    fn healthy_current(&self, lane: usize) -> Option<RedisConn> {
        let current = self.lanes[lane]
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| !c.is_broken()).cloned()
    }

    /// Sets up lane `lane`'s next connection, made in this task, bounded by the node
    /// timeout.
    async fn replace_connection(&self, lane: usize) -> Result<RedisConn, NodeError> {
        // One caller at a time (FIFO) sets up the lane's next connection and everyone uses
        // it, so commands on a lane keep the order they were issued in (a cleanup never
        // overtakes the SET it undoes on another socket). A caller that goes away
        // mid-connect (its task dropped, its runtime too) just releases the lock.
        let _setup = self.lanes[lane].setup.lock().await;
        if let Some(current) = self.healthy_current(lane) {
            return Ok(current);
        }
        // The broken one stays current (its socket open) until the next one is made.
        let fresh = RedisConn {
            conn: self.connector.connect().await?,
            broken: Arc::default(),
            lane,
        };
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
            // Boxed: the set-up future is large (connect, script loading) and rarely
            // needed, so it stays out of every call's future.
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
    /// calls pipeline over one socket); when it breaks, the next one is made.
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

/// A client for `url`: with TLS (`rediss://`, feature `tls`) it trusts `tls_root` (PEM)
/// when given, the system's roots otherwise.
pub(crate) fn client_for(url: &NodeUrl, tls_root: Option<&[u8]>) -> Result<Client, RedisError> {
    #[cfg(feature = "tls")]
    if let Some(root) = tls_root {
        return Client::build_with_tls(
            url.connection_info().clone(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            },
        );
    }
    let _ = tls_root;
    Client::open(url.connection_info().clone())
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
    const NODE_TIMEOUT: Duration = Duration::from_secs(5);

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
            let conn = tokio::time::timeout(2 * NODE_TIMEOUT, link.connection(&ping()))
                .await
                .expect("the link's own timeout bounds it")
                .expect("a new connection on the second runtime");
            let pong = tokio::time::timeout(NODE_TIMEOUT, conn.send(&ping()))
                .await
                .expect("answered in time")
                .expect("PONG");
            assert_eq!(pong, Value::SimpleString("PONG".into()));
        });
    }
}
