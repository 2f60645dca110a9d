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
//! - [`Transport`]: the node's connections: the one to send a call on now (made or replaced
//!   as needed; calls on the same keys always share one), the current one without making
//!   any (for a send that must never open a connection), whether a handle is still the
//!   current one, and a warm-up that makes the first connections.
//! - [`Connection`]: a cloneable handle: send one [`Call`] and read the reply (the same
//!   `redis::Value` real Redis gives), mark the handle broken (a probe went unanswered), and
//!   tell whether it is.
//!
//! Dispatch is static: [`Link`] and [`Conn`] (in [`link`](super::link)) are enums over the
//! implementations, so a call costs a `match`, not a boxed future. They are
//! [`RedisLink`](super::redis::RedisLink) (one server, see [`redis`](super::redis)),
//! [`ClusterLink`](super::cluster::ClusterLink) (a whole Redis Cluster as one node, one
//! handle for the cluster; see [`cluster`](super::cluster) for what its order of calls
//! is), the Sentinel link, and [`SimLink`](super::sim_link::SimLink), a simulated node in
//! this process (see [`sim_link`](super::sim_link); `Node::simulated` makes one).
//!
//! # Adding an implementation
//!
//! A simulated node (e.g. `sim::SimNode` / `sim::SimConnection`) plugs in by implementing
//! [`Transport`] and [`Connection`] for a pair of types, adding one variant to [`Link`] and
//! one to [`Conn`], and one arm to each `match` in [`link`](super::link) (the compiler
//! lists them), plus a constructor [`Node::new`](super::Node::new) uses instead of the
//! Redis one. Nothing above the seam changes.
//!
//! # Pub/sub
//!
//! Wake-on-release ([`wake`](crate::redlock::wake)) still opens its own Redis pub/sub
//! connection per node from the client [`client_for`](super::redis::client_for) makes (on
//! simulated nodes it has none: waiters hear their own engine's releases directly and
//! others' on the fallback timer; `SimConnection::subscribe` is ready for it). It belongs
//! behind this seam too, as a third operation of [`Transport`]: `subscriber()`, returning
//! a handle that subscribes and unsubscribes channels (in the order they were asked) and a
//! stream of the channel names messages arrived on, ending when the connection dies
//! (wake's `NodeSubscriber` keeps its repair logic above the seam).
//!
//! [`Link`]: super::link::Link
//! [`Conn`]: super::link::Conn

use std::future::Future;

use redis::Value;

use super::call::Call;
use super::error::NodeError;

/// A node's connections (see the module docs).
pub(crate) trait Transport: Send + Sync + 'static {
    /// A handle on one connection.
    type Conn: Connection;

    /// The connection to send `call` on now: the current one (of the calls on its keys)
    /// unless it broke, else a new one (one caller at a time makes it, and everyone uses
    /// it: calls keep their order).
    fn connection(&self, call: &Call)
    -> impl Future<Output = Result<Self::Conn, NodeError>> + Send;

    /// The connection `call` would go out on, broken or not, without making one; `None`
    /// before the first.
    fn current(&self, call: &Call) -> Option<Self::Conn>;

    /// Makes the first connections (unbounded here: the caller bounds it); failures are
    /// left for the first real call to report.
    fn warm_up(&self) -> impl Future<Output = ()> + Send;

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
