//! A node's bb8 pool over our own connection manager, and its recovery from a wedged pool.
//!
//! `bb8-redis`'s manager has no timeouts and never reports a connection broken, so a node
//! restart would leave dead connections in the pool and a down node could cost bb8's 30 s
//! default. [`NodeManager`] bounds the connect (the node timeout), loads the scripts, checks
//! a connection with `PING` when it is checked out (`is_valid`), and reports one marked
//! broken (after an I/O error, or a `PING` probe that went unanswered after a timeout) to
//! bb8 (`has_broken`), which then closes it and makes a new one on the next checkout.
//!
//! # A wedged pool is replaced
//!
//! bb8 (0.9.1) makes its connections in tasks it spawns on the runtime current at checkout,
//! each holding one of the pool's `max_size` slots (`pending_conns`). A task dropped
//! mid-connect — its runtime dropped, e.g. an engine built on a runtime that a test or an
//! application shuts down — never gives its slot back; once leaked slots fill the pool,
//! every checkout waits out its timeout and the node is unreachable for good (fail-closed,
//! but for good). bb8 does not show pending connects, so a leaked slot and a slow connect
//! look alike: checkouts time out while the pool has no connection.
//!
//! So when checkouts have been failing (timing out, or failing to connect) for twice the
//! node timeout, each while the pool's `state()` showed no connection at all and none
//! succeeding in between, [`NodePool`] replaces the pool with a freshly built one (same
//! manager, same settings) for the next checkout. Twice the node timeout bounds every
//! connect bb8 started before those failures (connect, then script loading): a connect that
//! is merely slow has ended by then, and left a connection or its slot. Only the first
//! caller to see that pool fail so replaces it (a generation number, under the pool lock),
//! and never while the pool has a connection; each failed call stays a "no" vote, bounded
//! by the node timeout as every checkout is (with the pool wedged, the second failed
//! checkout replaces it and the third connects). This loses nothing:
//! - no connection, no socket to keep order on: every lane's connection is a checkout,
//!   counted in `connections` (and holding its own pool: a lane keeps it, and its place in
//!   the order of calls, across a replacement); a call's handle for its cleanup
//!   ([`SentOn`](super::super::SentOn)) holds its socket itself, not through the pool;
//! - a leaked slot dies with the old pool: the new one starts with all of its slots;
//! - a connect still under way in the old pool (one started during those failures) is
//!   simply abandoned: a checkout still waiting on the old pool holds it and gets that
//!   connection; otherwise the connect's task ends within its own timeouts, puts its
//!   connection into the old pool and drops the last reference to it, which closes it (the
//!   node may briefly have more sockets than `max_size`); its failure fails no checkout of
//!   the new pool (each pool has its own error sink);
//! - the new pool's tasks (connects, reaper) are spawned on the runtime of the caller that
//!   built it or checks out from it, like the first pool's: no runtime of our own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8_redis::bb8;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::super::error::NodeError;
use crate::redlock::core::scripts;

/// A multiplexed connection plus a flag the pool reads in `has_broken`.
pub(crate) struct NodeConnection {
    pub(super) conn: MultiplexedConnection,
    pub(super) broken: Arc<AtomicBool>,
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

/// A connection checked out of a node's pool (it keeps that pool alive).
pub(super) type Checkout = bb8::PooledConnection<'static, NodeManager>;

/// One node's bb8 pool, replaced by a fresh one when it is wedged (see the module docs).
pub(super) struct NodePool {
    current: Mutex<Generation>,
    /// Boxed: a `Client` is large, and the link sits beside the simulated one in an enum.
    settings: Box<PoolSettings>,
}

/// The pool checkouts go to, its connection failures, and how many pools came before it.
struct Generation {
    number: u64,
    pool: bb8::Pool<NodeManager>,
    /// This pool's own: a late failure of a pool replaced does not fail a checkout.
    failures: ConnectFailures,
    /// When the first of the checkouts failing since the last success, each with no
    /// connection in the pool, started.
    failing_since: Option<Instant>,
}

/// What every pool of a node is built from.
struct PoolSettings {
    client: Client,
    size: u32,
    timeout: Duration,
}

impl PoolSettings {
    /// Pool `number`: nothing made yet, every slot free. Called in a Tokio runtime: bb8
    /// spawns its reaper there.
    fn build(&self, number: u64) -> Generation {
        let failures = ConnectFailures::default();
        let pool = bb8::Pool::builder()
            .max_size(self.size)
            .min_idle(None)
            .connection_timeout(self.timeout)
            .retry_connection(false)
            .test_on_check_out(true)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(NodeManager {
                client: self.client.clone(),
                timeout: self.timeout,
            });
        Generation {
            number,
            pool,
            failures,
            failing_since: None,
        }
    }
}

impl NodePool {
    /// A pool of `size` connections (at least 1) that connects on first use.
    pub(super) fn new(client: Client, size: usize, timeout: Duration) -> NodePool {
        let settings = Box::new(PoolSettings {
            client,
            size: u32::try_from(size.max(1)).unwrap_or(u32::MAX),
            timeout,
        });
        NodePool {
            current: Mutex::new(settings.build(0)),
            settings,
        }
    }

    /// A connection checked out of the pool (bb8 checks it with a `PING`, or makes a new
    /// one), bounded by the node timeout; a failed connect is reported at once (bb8 would
    /// wait out its checkout timeout on a refused connection).
    pub(super) async fn check_out(&self) -> Result<Checkout, NodeError> {
        let started = Instant::now();
        let (number, pool, failures) = {
            let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            (
                current.number,
                current.pool.clone(),
                current.failures.clone(),
            )
        };
        let mut failed = failures.subscribe();
        let checked_out = tokio::select! {
            pooled = pool.get_owned() => pooled.map_err(|e| match e {
                bb8::RunError::User(e) => NodeError::Redis(e),
                bb8::RunError::TimedOut => NodeError::Timeout(self.settings.timeout),
            }),
            error = failed.next() => Err(NodeError::Redis(error)),
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.number != number {
            return checked_out;
        }
        if checked_out.is_ok() || current.pool.state().connections != 0 {
            current.failing_since = None;
            return checked_out;
        }
        let failing_since = *current.failing_since.get_or_insert(started);
        // Every connect bb8 started before the first of them has ended by now (bounded by
        // the manager's connect and script-loading timeouts) without leaving a connection.
        if failing_since.elapsed() >= 2 * self.settings.timeout {
            let old = std::mem::replace(&mut *current, self.settings.build(number + 1));
            drop(current);
            // The old pool goes now, or with the last checkout or connect task holding it.
            drop(old);
        }
        checked_out
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

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::testkit::LocalCluster;

    const NODE_TIMEOUT: Duration = Duration::from_secs(2);

    fn client(addr: SocketAddr) -> Client {
        Client::open(format!("redis://{addr}")).unwrap()
    }

    fn generation(pool: &NodePool) -> u64 {
        pool.current.lock().unwrap().number
    }

    /// A checkout that fails while the pool has a connection leaves the pool as it is.
    #[tokio::test]
    async fn a_pool_with_a_connection_is_never_replaced() {
        let cluster = LocalCluster::start(1).await.expect("a redis-server");
        let pool = NodePool::new(client(cluster.addr(0)), 1, NODE_TIMEOUT);
        let held = pool.check_out().await.expect("a connection");
        let err = pool
            .check_out()
            .await
            .err()
            .expect("the only connection is held");
        assert!(matches!(err, NodeError::Timeout(_)), "{err:?}");
        assert_eq!(generation(&pool), 0);
        drop(held);
        pool.check_out()
            .await
            .expect("the connection back from the same pool");
        assert_eq!(generation(&pool), 0);
    }

    /// A loopback port nobody listens on: every connect is refused at once.
    fn refused() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Failures for less than twice the node timeout leave the pool as it is: a connect
    /// under way may still end in a connection.
    #[tokio::test]
    async fn a_pool_failing_briefly_is_kept() {
        let pool = NodePool::new(client(refused()), 1, Duration::from_secs(30));
        for _ in 0..3 {
            pool.check_out().await.err().expect("refused");
        }
        assert_eq!(generation(&pool), 0);
    }

    /// Callers that see one pool fail for twice the node timeout, with no connection,
    /// replace it once between them.
    #[tokio::test]
    async fn a_failing_pool_is_replaced_once() {
        let timeout = Duration::from_millis(50);
        let pool = NodePool::new(client(refused()), 2, timeout);
        pool.check_out().await.err().expect("refused");
        assert_eq!(generation(&pool), 0);
        tokio::time::sleep(2 * timeout).await;
        let (a, b) = tokio::join!(pool.check_out(), pool.check_out());
        assert!(
            a.is_err() && b.is_err(),
            "refused: {:?}, {:?}",
            a.err(),
            b.err()
        );
        assert_eq!(generation(&pool), 1);
    }
}
