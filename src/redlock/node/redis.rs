//! The Redis transport: a bb8 pool per node over our own connection manager, lanes of
//! multiplexed connections, and script calls by SHA.
//!
//! `bb8-redis`'s manager has no timeouts and never reports a connection broken, so a node
//! restart would leave dead connections in the pool and a down node could cost bb8's 30 s
//! default. [`NodeManager`] bounds the connect (the node timeout), loads the scripts, checks
//! a connection with `PING` when it is checked out (`is_valid`), and reports one marked
//! broken (after an I/O error, or a `PING` probe that went unanswered after a timeout) to
//! bb8 (`has_broken`), which then closes it and makes a new one on the next checkout.
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

use bb8_redis::bb8;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::call::{Call, ScriptCall};
use super::error::NodeError;
use super::transport::{Connection, Transport};
use crate::redlock::node_url::NodeUrl;
use crate::redlock::scripts;

/// A multiplexed connection plus a flag the pool reads in `has_broken`.
pub(crate) struct NodeConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8 connection manager over `redis::Client` with timeouts and broken-connection detection.
pub(crate) struct NodeManager {
    client: Client,
    timeout: Duration,
}

impl bb8::ManageConnection for NodeManager {
    type Connection = NodeConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<NodeConnection, RedisError> {
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
        // Bounded too: a frozen node accepts connections (the kernel does) but never answers.
        tokio::time::timeout(self.timeout, load.query_async::<()>(&mut conn))
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "loading scripts timed out",
                ))
            })??;
        Ok(NodeConnection {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, conn: &mut NodeConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut NodeConnection) -> bool {
        conn.broken.load(Ordering::Relaxed)
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
    checkout: Mutex<Option<bb8::PooledConnection<'static, NodeManager>>>,
    setup: tokio::sync::Mutex<()>,
}

/// One Redis node's connections.
pub(crate) struct RedisLink {
    pool: bb8::Pool<NodeManager>,
    lanes: Box<[Lane]>,
    failures: ConnectFailures,
    /// Picks lanes from keys; fixed for the link's life.
    hasher: std::hash::RandomState,
    timeout: Duration,
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
        let client = client_for(url, tls_root)?;
        let pool_size = pool_size.max(1);
        let failures = ConnectFailures::default();
        let pool = bb8::Pool::builder()
            .max_size(u32::try_from(pool_size).unwrap_or(u32::MAX))
            .min_idle(None)
            .connection_timeout(timeout)
            .retry_connection(false)
            .test_on_check_out(true)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(NodeManager { client, timeout });
        Ok(RedisLink {
            pool,
            lanes: (0..pool_size).map(|_| Lane::default()).collect(),
            failures,
            hasher: std::hash::RandomState::new(),
            timeout,
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
        let mut failed = self.failures.subscribe();
        let pooled = tokio::select! {
            pooled = self.pool.get_owned() => pooled.map_err(|e| match e {
                bb8::RunError::User(e) => NodeError::Redis(e),
                bb8::RunError::TimedOut => NodeError::Timeout(self.timeout),
            })?,
            error = failed.next() => return Err(NodeError::Redis(error)),
        };
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

/// The pool's connection failures, as they happen: bb8 reports them to its error sink and
/// keeps a checkout waiting until its timeout, while a refused connection is a "no" vote
/// at once.
#[derive(Clone, Default)]
struct ConnectFailures {
    last: Arc<Mutex<Option<RedisError>>>,
    happened: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for ConnectFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectFailures")
    }
}

impl ConnectFailures {
    fn subscribe(&self) -> FailureWatch<'_> {
        let mut notified = Box::pin(self.happened.notified());
        // Registered now: a failure from here on is seen, even before the first poll.
        notified.as_mut().enable();
        FailureWatch {
            failures: self,
            notified,
        }
    }
}

impl bb8::ErrorSink<RedisError> for ConnectFailures {
    fn sink(&self, error: RedisError) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.happened.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// Waits for the next connection failure after it was made.
struct FailureWatch<'a> {
    failures: &'a ConnectFailures,
    notified: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
}

impl FailureWatch<'_> {
    async fn next(&mut self) -> RedisError {
        self.notified.as_mut().await;
        let last = self
            .failures
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        last.unwrap_or_else(|| {
            RedisError::from(std::io::Error::other("connecting to the node failed"))
        })
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
