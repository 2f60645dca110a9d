//! The Redis transport: a bb8 pool over our own connection manager, one shared multiplexed
//! connection, and script calls by SHA.
//!
//! `bb8-redis`'s manager has no timeouts and never reports a connection broken, so a node
//! restart would leave dead connections in the pool and a down node could cost bb8's 30 s
//! default. [`NodeManager`] bounds the connect, loads the scripts, and lets a connection be
//! marked broken (after an I/O error, or a `PING` probe that went unanswered after a
//! timeout). All calls share the node's current multiplexed connection — one socket keeps
//! commands in order and pipelines concurrent calls — and a broken one is replaced through
//! the pool's manager (`dedicated_connection`, which fails at once on a refused connection
//! instead of waiting out a checkout timeout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bb8_redis::bb8;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::NodeError;
use super::call::{Call, ScriptCall};
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

/// A handle on one multiplexed connection and its broken flag.
#[derive(Clone)]
pub(crate) struct RedisConn {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
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

/// One Redis node's connections.
pub(crate) struct RedisLink {
    pool: bb8::Pool<NodeManager>,
    current: RwLock<Option<RedisConn>>,
    setup: tokio::sync::Mutex<()>,
}

impl RedisLink {
    /// Creates the node's pool without connecting (connections are made on first use, so a
    /// node that is down at start-up does not stop the service from starting).
    pub(crate) fn new(
        url: &NodeUrl,
        timeout: Duration,
        tls_root: Option<&[u8]>,
    ) -> Result<RedisLink, RedisError> {
        let client = client_for(url, tls_root)?;
        let pool = bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(timeout)
            .retry_connection(false)
            .test_on_check_out(false)
            .build_unchecked(NodeManager { client, timeout });
        Ok(RedisLink {
            pool,
            current: RwLock::new(None),
            setup: tokio::sync::Mutex::new(()),
        })
    }

    /// The current connection, unless there is none or it is marked broken.
    fn healthy_current(&self) -> Option<RedisConn> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| !c.is_broken()).cloned()
    }

    /// Sets up the next connection.
    async fn replace_connection(&self) -> Result<RedisConn, NodeError> {
        // One caller at a time (FIFO) sets up the next connection and everyone uses it, so
        // commands to a node keep the order they were issued in (a cleanup never overtakes
        // the SET it undoes on another socket).
        let _setup = self.setup.lock().await;
        if let Some(current) = self.healthy_current() {
            return Ok(current);
        }
        // Made by the pool's manager (connect timeout, scripts loaded). `dedicated_connection`
        // reports a refused connection at once, where a pool checkout would wait out its
        // whole timeout before giving up on a down node.
        let fresh = self
            .pool
            .dedicated_connection()
            .await
            .map_err(NodeError::Redis)?;
        let fresh = RedisConn {
            conn: fresh.conn,
            broken: fresh.broken,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }
}

impl Transport for RedisLink {
    type Conn = RedisConn;

    /// The current connection is shared by every call (so concurrent calls pipeline over
    /// one socket and cost no checkout); when it breaks, a new one becomes current.
    async fn connection(&self) -> Result<RedisConn, NodeError> {
        match self.healthy_current() {
            Some(current) => Ok(current),
            // Boxed: the set-up future is large (connect, script loading) and rarely needed,
            // so it stays out of every call's future (which the fan-outs allocate per node).
            None => Box::pin(self.replace_connection()).await,
        }
    }

    fn current(&self) -> Option<RedisConn> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_current(&self, conn: &RedisConn) -> bool {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
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
