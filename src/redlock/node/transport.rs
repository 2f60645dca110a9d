//! The seam for node I/O: how a [`Node`](super::Node) reaches its server.
//!
//! Everything above it — availability (skipped, behind), pass-by, the background sends of
//! calls that must reach a node, the fan-outs and quorums — is transport-neutral; below it
//! sit connections. A transport hands out *connection handles*: requests sent on one
//! handle reach the node in the order they were sent (one socket, FIFO), which is what lets
//! a cleanup follow the request it undoes ([`SentOn`](super::SentOn) keeps the handle a
//! request went out on).
//!
//! Two traits say what an implementation provides:
//! - [`Transport`]: the node's connections: the one to send on now (made or replaced as
//!   needed, bounded by the node timeout), the current one without making any (for a send
//!   that must never open a connection), and whether a handle is still the current one.
//! - [`Connection`]: a cloneable handle: send one [`Call`] and read the reply (the same
//!   `redis::Value` real Redis gives), mark the handle broken (a probe went unanswered), and
//!   tell whether it is.
//!
//! Dispatch is static: [`Link`] and [`Conn`] are enums over the implementations, so a call
//! costs a `match`, not a boxed future. Today there is one, [`RedisLink`] (see
//! [`redis`](super::redis)).
//!
//! # Adding an implementation
//!
//! A simulated node (e.g. `sim::SimNode` / `sim::SimConnection`) plugs in by implementing
//! [`Transport`] and [`Connection`] for a pair of types, adding one variant to [`Link`] and
//! one to [`Conn`], and one arm to each `match` below (the compiler lists them), plus a
//! constructor the builder calls instead of [`Link::redis`]. Nothing above the seam changes.
//!
//! # Pub/sub
//!
//! Wake-on-release ([`wake`](crate::redlock::wake)) still opens its own Redis pub/sub
//! connection per node from the client [`client_for`](super::redis::client_for) makes. It
//! belongs behind this seam too, as a third operation of [`Transport`]: `subscriber()`,
//! returning a handle that subscribes and unsubscribes channels (in the order they were
//! asked) and a stream of the channel names messages arrived on, ending when the connection
//! dies (wake's `NodeSubscriber` keeps its repair logic above the seam).

use std::future::Future;

use redis::Value;

use super::NodeError;
use super::call::Call;
use super::redis::{RedisConn, RedisLink};

/// A node's connections (see the module docs).
pub(crate) trait Transport: Send + Sync + 'static {
    /// A handle on one connection.
    type Conn: Connection;

    /// The connection to send on now: the current one unless it broke, else a new one
    /// (one caller at a time makes it, and everyone uses it: calls keep their order).
    fn connection(&self) -> impl Future<Output = Result<Self::Conn, NodeError>> + Send;

    /// The current connection, broken or not, without making one; `None` before the first.
    fn current(&self) -> Option<Self::Conn>;

    /// Whether `conn` is still the current connection (marked broken or not): a call made
    /// from now on goes out on it, or on a newer one, never on an older one.
    fn is_current(&self, conn: &Self::Conn) -> bool;
}

/// A handle on one connection to a node: requests sent on it arrive in order.
pub(crate) trait Connection: Clone + Send + Sync + 'static {
    /// Sends `call` and reads its reply (one try; the caller bounds it). An I/O failure
    /// marks the handle broken.
    fn send(self, call: &Call) -> impl Future<Output = Result<Value, NodeError>> + Send;

    /// Marks the connection broken: the next [`Transport::connection`] replaces it.
    fn mark_broken(&self);

    /// Whether the connection was marked broken.
    fn is_broken(&self) -> bool;
}

/// A node's transport, one variant per implementation (static dispatch).
pub(crate) enum Link {
    /// A real Redis server.
    Redis(RedisLink),
}

/// A connection handle of a [`Link`].
#[derive(Clone)]
pub(crate) enum Conn {
    Redis(RedisConn),
}

impl Transport for Link {
    type Conn = Conn;

    async fn connection(&self) -> Result<Conn, NodeError> {
        match self {
            Link::Redis(link) => link.connection().await.map(Conn::Redis),
        }
    }

    fn current(&self) -> Option<Conn> {
        match self {
            Link::Redis(link) => link.current().map(Conn::Redis),
        }
    }

    fn is_current(&self, conn: &Conn) -> bool {
        match (self, conn) {
            (Link::Redis(link), Conn::Redis(conn)) => link.is_current(conn),
        }
    }
}

impl Connection for Conn {
    async fn send(self, call: &Call) -> Result<Value, NodeError> {
        match self {
            Conn::Redis(conn) => conn.send(call).await,
        }
    }

    fn mark_broken(&self) {
        match self {
            Conn::Redis(conn) => conn.mark_broken(),
        }
    }

    fn is_broken(&self) -> bool {
        match self {
            Conn::Redis(conn) => conn.is_broken(),
        }
    }
}
