//! The transports a node can use, as enums (static dispatch: a call costs a `match`, not a
//! boxed future). See [`transport`](super::transport) for how to add one.

use redis::Value;

use super::call::Call;
use super::error::NodeError;
use super::redis::{RedisConn, RedisLink};
use super::sim_link::{SimConn, SimLink};
use super::transport::{Connection, Transport};

/// A node's transport, one variant per implementation (static dispatch).
pub(crate) enum Link {
    /// A real Redis server.
    Redis(RedisLink),
    /// A simulated node in this process.
    Sim(SimLink),
}

impl Link {
    /// The lane a call whose first key is `key` goes down (0 for a single-lane link).
    pub(crate) fn lane_of_key(&self, key: &[u8]) -> usize {
        match self {
            Link::Redis(link) => link.lane_of_key(key),
            Link::Sim(_) => 0,
        }
    }
}

/// A connection handle of a [`Link`].
#[derive(Clone)]
pub(crate) enum Conn {
    Redis(RedisConn),
    Sim(SimConn),
}

impl Transport for Link {
    type Conn = Conn;

    async fn connection(&self, call: &Call) -> Result<Conn, NodeError> {
        match self {
            Link::Redis(link) => link.connection(call).await.map(Conn::Redis),
            Link::Sim(link) => link.connection(call).await.map(Conn::Sim),
        }
    }

    fn current(&self, call: &Call) -> Option<Conn> {
        match self {
            Link::Redis(link) => link.current(call).map(Conn::Redis),
            Link::Sim(link) => link.current(call).map(Conn::Sim),
        }
    }

    async fn warm_up(&self) {
        match self {
            Link::Redis(link) => link.warm_up().await,
            Link::Sim(link) => link.warm_up().await,
        }
    }

    fn is_current(&self, conn: &Conn) -> bool {
        match (self, conn) {
            (Link::Redis(link), Conn::Redis(conn)) => link.is_current(conn),
            (Link::Sim(link), Conn::Sim(conn)) => link.is_current(conn),
            _ => false,
        }
    }
}

impl Connection for Conn {
    async fn send(self, call: &Call) -> Result<Value, NodeError> {
        match self {
            Conn::Redis(conn) => conn.send(call).await,
            Conn::Sim(conn) => conn.send(call).await,
        }
    }

    fn mark_broken(&self) {
        match self {
            Conn::Redis(conn) => conn.mark_broken(),
            Conn::Sim(conn) => conn.mark_broken(),
        }
    }

    fn is_broken(&self) -> bool {
        match self {
            Conn::Redis(conn) => conn.is_broken(),
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
