//! [`Node`]: one member of the quorum, its availability, and its calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::{RedisError, Value};

use super::backlog::Availability;
use super::call::Call;
use super::error::NodeError;
use super::link::{Conn, Link};
use super::transport::{Connection, Transport};
use super::{cluster, redis, sentinel, sim_link};
use crate::redlock::config::node_url::{NodeKind, NodeUrl, Target};

/// Where a call records the connection it sent its request on, so that a cleanup can follow
/// it on the same socket (and so run after it on the node, whatever happens to the node's
/// current connection meanwhile).
pub(crate) type SentOn = std::sync::Mutex<Option<Conn>>;

fn record(sent_on: Option<&SentOn>, conn: &Conn) {
    if let Some(slot) = sent_on {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    }
}

/// One node of the quorum.
pub(crate) struct Node {
    pub(crate) url: NodeUrl,
    link: Link,
    /// This node's position among the engine's nodes.
    index: usize,
    /// Whether this node (and each other one) is skipped or behind: calls fail at once
    /// while this node is skipped (cleared when a probe gets an answer), or behind within
    /// the budget (see [`backlog`](super::backlog)).
    availability: Arc<Availability>,
    /// A check (and, once skipped, the probes) of this node is running.
    checking: AtomicBool,
    /// Replies of decided fan-outs still awaited in the background.
    overdue: AtomicUsize,
    backlog: usize,
    timeout: Duration,
}

impl Node {
    /// Creates the node's transport without connecting (connections are made on first
    /// use, so a node that is down at start-up does not stop the service from starting).
    /// `index` is its position among the engine's nodes, whose `availability` it shares.
    pub(crate) fn new(
        url: NodeUrl,
        index: usize,
        availability: Arc<Availability>,
        timeout: Duration,
        backlog: usize,
        pool_size: usize,
        tls_root: Option<&[u8]>,
    ) -> Result<Node, RedisError> {
        let link = match url.target() {
            Target::Standalone(_) => {
                Link::Redis(redis::RedisLink::new(&url, timeout, pool_size, tls_root)?)
            }
            Target::Cluster { seeds } => {
                Link::Cluster(cluster::ClusterLink::new(seeds, timeout, tls_root)?)
            }
            Target::Sentinel {
                sentinels,
                master,
                primary,
            } => Link::Sentinel(sentinel::SentinelLink::new(
                sentinels, master, primary, timeout, tls_root,
            )?),
        };
        Ok(Node::with_link(
            url,
            index,
            availability,
            timeout,
            backlog,
            link,
        ))
    }

    /// A node simulated in this process (see [`sim`](super::sim)): `url` only names it.
    pub(crate) fn simulated(
        url: NodeUrl,
        index: usize,
        availability: Arc<Availability>,
        timeout: Duration,
        backlog: usize,
        node: crate::redlock::sim::SimNode,
    ) -> Node {
        let link = Link::Sim(sim_link::SimLink::new(node));
        Node::with_link(url, index, availability, timeout, backlog, link)
    }

    fn with_link(
        url: NodeUrl,
        index: usize,
        availability: Arc<Availability>,
        timeout: Duration,
        backlog: usize,
        link: Link,
    ) -> Node {
        Node {
            url,
            link,
            index,
            availability,
            checking: AtomicBool::new(false),
            overdue: AtomicUsize::new(0),
            backlog: backlog.max(1),
            timeout,
        }
    }

    /// Whether `conn` is still the node's current connection (marked broken or not): a
    /// call made from now on goes out on it, or on a newer one, never on an older one.
    pub(crate) fn is_current(&self, conn: &Conn) -> bool {
        self.link.is_current(conn)
    }

    /// What kind of Redis this node is.
    pub(crate) fn kind(&self) -> NodeKind {
        self.url.kind()
    }

    /// The current primary (or primaries) of a Cluster or Sentinel node, as `host:port`,
    /// when known.
    pub(crate) fn primary(&self) -> Option<String> {
        self.link.primary()
    }

    /// The connection (lane) a call whose first key is `key` goes down: calls that agree
    /// on it share one connection, in order (see [`redis`](super::redis)).
    pub(crate) fn lane_of_key(&self, key: &[u8]) -> usize {
        self.link.lane_of_key(key)
    }

    /// Whether calls to the node are skipped (see the module docs).
    pub(crate) fn is_skipped(&self) -> bool {
        self.availability.is_skipped(self.index)
    }

    /// Starts skipping the node. (Nodes behind are passed by again only while the budget,
    /// which this spends, allows: see [`super::backlog`].)
    pub(crate) fn skip(&self) {
        self.availability.set_skipped(self.index, true);
    }

    /// The engine's record of which nodes are skipped or behind.
    pub(crate) fn availability(&self) -> &Availability {
        &self.availability
    }

    /// Claims the node's check; `false` when one is already running.
    pub(crate) fn begin_check(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// Ends the node's check.
    pub(crate) fn end_check(&self) {
        self.checking.store(false, Ordering::Release);
    }

    /// One more reply of this node's left to the background (its fan-out was decided
    /// without it); returns how many are overdue now. See [`super::backlog`].
    pub(crate) fn add_overdue(&self) -> usize {
        self.overdue.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A reply left to the background landed or timed out; returns how many are still
    /// overdue.
    pub(crate) fn remove_overdue(&self) -> usize {
        self.overdue
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Replies of this node's overdue now.
    pub(crate) fn overdue(&self) -> usize {
        self.overdue.load(Ordering::Relaxed)
    }

    /// The overdue count at which the node may be passed by.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog
    }

    /// Flags the node behind; `false` when it already was.
    pub(crate) fn set_behind(&self) -> bool {
        self.availability.set_behind(self.index)
    }

    /// Clears the node's behind flag; `false` when it was not set.
    pub(crate) fn clear_behind(&self) -> bool {
        self.availability.clear_behind(self.index)
    }

    /// Whether the node is flagged behind, whether or not the budget lets it be passed by.
    pub(crate) fn is_flagged_behind(&self) -> bool {
        self.availability.is_flagged_behind(self.index)
    }

    /// Whether calls pass the node by (see [`backlog`](super::backlog)): it is flagged behind, its
    /// count still says so (a flag left set by a race cannot outlive the backlog: every
    /// overdue reply lands or times out within the node timeout), and the nodes skipped or
    /// behind now are no more than the quorum can spare.
    pub(crate) fn is_behind(&self) -> bool {
        self.is_flagged_behind()
            && self.overdue() > self.backlog / 2
            && self.availability.passes_by()
    }

    /// The node answered a request sent on its current connection: use it again.
    pub(crate) fn answered(&self) {
        self.availability.set_skipped(self.index, false);
    }

    /// One recovery probe: a `PING`, bounded by the node timeout, on the current connection
    /// (queued behind whatever it still carries, so an answer means those ran too) or on a
    /// new one. When it answers, the node is used again; when it does not, the connection
    /// is marked broken (a partition or a half-open socket would otherwise keep a dead
    /// connection in use until the OS gives up on it) and the next probe makes a new one.
    pub(crate) async fn probe(&self) -> bool {
        let sent = SentOn::default();
        let ping = Call::Command(::redis::cmd("PING"));
        let answered = match tokio::time::timeout(self.timeout, self.send(&ping, Some(&sent))).await
        {
            Ok(Ok(_)) => true,
            // An error reply (e.g. an ACL without `ping`) is an answer too.
            Ok(Err(error)) => !error.is_unresponsive(),
            Err(_) => false,
        };
        if answered {
            self.answered();
            return true;
        }
        if let Some(conn) = sent.lock().unwrap_or_else(|e| e.into_inner()).take() {
            conn.mark_broken();
        }
        false
    }

    /// Makes the first connection (bounded by the node timeout); failures are left for the
    /// first real call to report.
    pub(crate) async fn warm_up(&self) {
        let _ = tokio::time::timeout(self.timeout, self.link.warm_up()).await;
    }

    /// Runs `call`, bounded by the node timeout (checkout included), even while the node is
    /// skipped: health checks look at the node itself.
    pub(crate) async fn query(&self, call: &Call) -> Result<Value, NodeError> {
        tokio::time::timeout(self.timeout, self.send(call, None))
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
    }

    /// Sends `call` (built once, sent as is to every node) on the node's current
    /// connection, recording that connection in `sent_on`; fails at once while the node is
    /// skipped or behind, after sending a call that [must reach](Call::must_reach) it
    /// anyway (see the module docs). Not bounded here: callers run it inside a
    /// [`Fanout`](super::fanout::Fanout) or a timeout.
    pub(crate) async fn call(
        &self,
        call: &Call,
        sent_on: Option<&SentOn>,
    ) -> Result<Value, NodeError> {
        if self.is_skipped() {
            self.reach_skipped(call);
            return Err(NodeError::Skipped);
        }
        if self.is_behind() {
            // Boxed: rare, and it would otherwise make every call's future larger.
            return Box::pin(self.pass_by(call, sent_on)).await;
        }
        self.send(call, sent_on).await
    }

    /// The call while the node is behind: a "no" vote, without sending anything, except
    /// that a call that must reach it still goes out (on the one connection, after what it
    /// undoes), its reply not awaited: nothing is kept for it on our side.
    async fn pass_by(&self, call: &Call, sent_on: Option<&SentOn>) -> Result<Value, NodeError> {
        let overdue = self.overdue();
        if let Some(unanswered) = call.unanswered() {
            self.send(&unanswered, sent_on).await?;
        }
        Err(NodeError::Behind(overdue))
    }

    /// The call while the node is skipped: a call that must reach it is sent, in the
    /// background and bounded by the node timeout, on its current connection even if that
    /// was given up on (never a new one); nobody waits for it. Whatever happens to it
    /// leaves the node's skipped state alone. See the module docs.
    fn reach_skipped(&self, call: &Call) {
        if !call.must_reach() {
            return;
        }
        let (Some(conn), Ok(runtime)) = (
            self.link.current(call),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let (timeout, call) = (self.timeout, call.clone());
        // It awaits the reply (bounded), so that this handle keeps the connection open
        // meanwhile even if the node's current connection is replaced (dropping the last
        // handle of a connection closes it, and a request not yet written would be lost).
        let mut send = Box::pin(async move {
            let _ = tokio::time::timeout(timeout, conn.send(&call)).await;
        });
        // Polled once here, which queues the request on the connection now: requests to
        // the node keep the order of the calls (e.g. a hand-off's move, then the release
        // of the token it moved to). The rest runs in a task of its own, since a request
        // whose caller went away would never be sent.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if send.as_mut().poll(&mut cx).is_pending() {
            drop(runtime.spawn(send));
        }
    }

    /// [`call`](Self::call), skipped or not. A connection found dead is replaced and the
    /// call tried once more.
    async fn send(&self, call: &Call, sent_on: Option<&SentOn>) -> Result<Value, NodeError> {
        let mut tries = 0;
        loop {
            let conn = self.link.connection(call).await?;
            record(sent_on, &conn);
            match conn.send(call).await {
                Err(e) if retry_on_fresh_connection(&e, &mut tries) => {}
                other => return other,
            }
        }
    }
}

/// Runs `call` on exactly `conn` (one try; the caller bounds it).
pub(crate) async fn call_on(conn: Conn, call: &Call) -> Result<Value, NodeError> {
    conn.send(call).await
}

/// A connection found dead when used (e.g. the node restarted) is replaced and the call
/// retried once on the new one, so the first call after a restart does not fail needlessly.
/// Safe for every script here: a request that never reached the node is simply sent; one
/// that ran on a node that then died ran on state that died with it.
fn retry_on_fresh_connection(err: &NodeError, tries: &mut u32) -> bool {
    *tries += 1;
    *tries == 1 && matches!(err, NodeError::Redis(e) if e.is_connection_dropped())
}
