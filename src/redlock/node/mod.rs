//! Node I/O: the engine's nodes ([`NodeSet`]), each one's availability (skipped, behind),
//! calls sent through its [transport](transport) — the seam between the engine and a
//! server (see there for how a second implementation plugs in) —, the fan-out of one call
//! to every node and the one quorum tally that decides it. Uses only `config/`, `core/`,
//! `background/` and the simulated nodes (`sim/`); knows nothing of leases.
//!
//! - [`call`]: the requests ([`Call`]), the same for every transport;
//! - [`reply`]: their typed replies, parsed in one place;
//! - [`transport`]: the seam ([`Transport`](transport::Transport)); [`link`]: the enums
//!   that dispatch to each implementation;
//! - [`redis`]: the Redis transport (bb8 pool, multiplexed connections, scripts by SHA);
//! - [`cluster`]: a Redis Cluster as one node (redis-rs's cluster client: calls routed by
//!   their keys' slot, `MOVED`/`ASK` followed);
//! - [`sim_link`]: the simulated transport (a [`SimNode`](super::sim::SimNode) in this
//!   process);
//! - [`error`]: why a node did not answer usefully ([`NodeError`]);
//! - [`member`]: one node ([`Node`]); [`set`]: all of them ([`NodeSet`]);
//! - [`fanout`]: one call to every node, replies read as they land; [`quorum`]: the tally;
//! - [`backlog`], [`recovery`]: passing lagging nodes by, skipping and probing dead ones;
//!   [`breaker`]: the circuit breaker over whole attempts.
//!
//! "The node's connection" below is the one a call's keys go down: the node's only one by
//! default, or one of its pool's, the same for every call on those keys (see [`redis`]).
//!
//! A node that stops answering (a timeout, a refused or dropped connection) is *skipped*:
//! its calls fail at once, as a "no" vote, instead of piling requests onto a socket nobody
//! reads, until a probe in the background gets an answer (see [`recovery`]).
//!
//! A node that answers, but slower than the others, is *passed by* once too many of its
//! replies are overdue: the engine decides at quorum and reads a slow node's replies in the
//! background, so without a bound a lagging node would make that background work grow with
//! the request rate for as long as it lags. See [`backlog`].
//!
//! Calls that *must reach* every node ([`Call::must_reach`]: releases and fencing
//! write-backs) still go to a node passed by or skipped, counted as a "no" vote at once,
//! nobody waiting for their replies:
//! - behind: sent on the node's connection (after what it carries), its reply not awaited;
//! - skipped: sent, in the background and bounded by the node timeout, on the node's
//!   current connection *even if it was given up on*, and never on a new one. A node that
//!   stopped answering but still reads its socket (a frozen or overloaded process, a
//!   partition that TCP rides out) runs it once it answers again, after what that socket
//!   carried before (e.g. the acquisition it undoes). A node whose connection died (killed,
//!   restarted, a reset) does not get it: it lost its keys anyway, and for fencing it counts
//!   as a node that lost its data (see `acquire`'s fencing write-back). A skipped
//!   node's new connections are the probe's job: a call never piles a connection attempt
//!   onto a node that does not answer. Each such write is one bounded task per call; it
//!   never changes whether the node is skipped.

pub(crate) mod backlog;
pub(crate) mod breaker;
mod call;
mod cluster;
mod error;
pub(crate) mod fanout;
mod link;
mod member;
pub(crate) mod quorum;
mod recovery;
mod redis;
pub(crate) mod reply;
mod sentinel;
mod set;
mod sim_link;
mod transport;

pub(crate) use self::call::Call;
pub(crate) use self::error::NodeError;
pub(crate) use self::fanout::{Fanout, Reply, broadcast};
pub(crate) use self::link::Conn;
pub(crate) use self::member::{Node, SentOn, call_on};
pub(crate) use self::quorum::Tally;
pub(crate) use self::recovery::{node_failed, warn_node};
pub(crate) use self::redis::client_for;
pub(crate) use self::set::NodeSet;
