//! The transports a node can use, as enums (static dispatch: a call costs a `match`, not a
//! boxed future). See [`transport`](super::transport) for how to add one.

use redis::Value;

use super::call::Call;
use super::cluster::{ClusterConn, ClusterLink};
use super::error::NodeError;
use super::redis::{RedisConn, RedisLink};
use super::sentinel::{SentinelConn, SentinelLink};
use super::sim_link::{SimConn, SimLink};
use super::transport::{Connection, Transport};

/// A node's transport, one variant per implementation (static dispatch).
pub(crate) enum Link {
    /// A real Redis server: standalone, over TCP, TLS or a Unix socket.
    Redis(RedisLink),
    /// A Redis Cluster (one vote).
    Cluster(ClusterLink),
    /// A Sentinel-managed primary (one vote).
    Sentinel(SentinelLink),
    /// A simulated node in this process.
    Sim(SimLink),
}

impl Link {
    /// The lane a call whose first key is `key` goes down (0 for a single-lane link).
    pub(crate) fn lane_of_key(&self, key: &[u8]) -> usize {
        match self {
            Link::Redis(link) => link.lane_of_key(key),
            Link::Cluster(_) | Link::Sentinel(_) | Link::Sim(_) => 0,
        }
    }

    /// The current primary (or primaries) of a Cluster or Sentinel node, as `host:port`,
    /// when known; `None` for a standalone or simulated node.
    pub(crate) fn primary(&self) -> Option<String> {
        match self {
            Link::Cluster(link) => link.primary(),
            Link::Sentinel(link) => link.primary(),
            Link::Redis(_) | Link::Sim(_) => None,
        }
    }
}

/// A connection handle of a [`Link`].
#[derive(Clone)]
pub(crate) enum Conn {
    Redis(RedisConn),
    Cluster(ClusterConn),
    Sentinel(SentinelConn),
    Sim(SimConn),
}

impl Transport for Link {
    type Conn = Conn;

    async fn connection(&self, call: &Call) -> Result<Conn, NodeError> {
        match self {
            Link::Redis(link) => link.connection(call).await.map(Conn::Redis),
            Link::Cluster(link) => link.connection(call).await.map(Conn::Cluster),
            Link::Sentinel(link) => link.connection(call).await.map(Conn::Sentinel),
            Link::Sim(link) => link.connection(call).await.map(Conn::Sim),
        }
    }

    fn current(&self, call: &Call) -> Option<Conn> {
        match self {
            Link::Redis(link) => link.current(call).map(Conn::Redis),
            Link::Cluster(link) => link.current(call).map(Conn::Cluster),
            Link::Sentinel(link) => link.current(call).map(Conn::Sentinel),
            Link::Sim(link) => link.current(call).map(Conn::Sim),
        }
    }

    async fn warm_up(&self) {
        match self {
            Link::Redis(link) => link.warm_up().await,
            Link::Cluster(link) => link.warm_up().await,
            Link::Sentinel(link) => link.warm_up().await,
            Link::Sim(link) => link.warm_up().await,
        }
    }

    fn is_current(&self, conn: &Conn) -> bool {
        match (self, conn) {
            (Link::Redis(link), Conn::Redis(conn)) => link.is_current(conn),
            (Link::Cluster(link), Conn::Cluster(conn)) => link.is_current(conn),
            (Link::Sentinel(link), Conn::Sentinel(conn)) => link.is_current(conn),
            (Link::Sim(link), Conn::Sim(conn)) => link.is_current(conn),
            _ => false,
        }
    }
}

impl Connection for Conn {
    async fn send(self, call: &Call) -> Result<Value, NodeError> {
        match self {
            Conn::Redis(conn) => conn.send(call).await,
            Conn::Cluster(conn) => conn.send(call).await,
            Conn::Sentinel(conn) => conn.send(call).await,
            Conn::Sim(conn) => conn.send(call).await,
        }
    }

    fn mark_broken(&self) {
        match self {
            Conn::Redis(conn) => conn.mark_broken(),
            Conn::Cluster(conn) => conn.mark_broken(),
            Conn::Sentinel(conn) => conn.mark_broken(),
            Conn::Sim(conn) => conn.mark_broken(),
        }
    }

    fn is_broken(&self) -> bool {
        match self {
            Conn::Redis(conn) => conn.is_broken(),
            Conn::Cluster(conn) => conn.is_broken(),
            Conn::Sentinel(conn) => conn.is_broken(),
            Conn::Sim(conn) => conn.is_broken(),
        }
    }
}

#[cfg(test)]
impl Conn {
    /// `conn`, outside any pool: for tests that drive one Redis node directly.
    pub(crate) fn standalone_redis(conn: redis::aio::MultiplexedConnection) -> Self {
        Conn::Redis(RedisConn::standalone(conn))
    }
}
