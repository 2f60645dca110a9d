//! Concurrent calls to every node, read as they land, so the caller can decide at quorum.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use redis::Value;

use super::call::Call;
use super::error::NodeError;
use super::recovery::node_failed;
use super::set::NodeSet;

/// One node's reply: its index and what it said.
pub(crate) type Reply<T> = (usize, Result<T, NodeError>);

/// Replies from one call per node, in the order they arrive, all bounded by one deadline
/// (the node timeout from the start): a node that has not answered by then counts as
/// [`NodeError::Timeout`]. One timer serves every node.
///
/// The calls make progress only while the `Fanout` is polled; a caller that decides early
/// hands the rest to [`Fanout::drain`] so that late replies are still seen (and cleaned up).
pub(crate) struct Fanout<F> {
    /// One call per node, by node index.
    calls: Vec<CallState<F>>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<F> Fanout<F> {
    /// The nodes whose replies are still outstanding.
    fn outstanding(&self) -> impl Iterator<Item = usize> + '_ {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, slot)| !matches!(slot, CallState::Done))
            .map(|(index, _)| index)
    }
}

/// Where one node's call stands.
enum CallState<F> {
    /// Waiting for the node's reply. Boxed: the `Fanout` stays small to move, and a reply
    /// left to the background keeps only its own call alive.
    Waiting(Pin<Box<F>>),
    /// The deadline passed first; not reported yet.
    Expired,
    /// Reported.
    Done,
}

impl<F, T> Fanout<F>
where
    F: Future<Output = Reply<T>> + Send + 'static,
    T: Send + 'static,
{
    /// Starts `call(i)` for every node index `i < nodes`, each allowed `timeout`.
    pub(crate) fn new(nodes: usize, timeout: Duration, call: impl Fn(usize) -> F) -> Self {
        Fanout {
            calls: (0..nodes)
                .map(|index| CallState::Waiting(Box::pin(call(index))))
                .collect(),
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
        }
    }

    /// The next reply, or `None` once every node has answered or timed out.
    ///
    /// Polls every waiting call on each wake-up (as `join_all` does for a handful of
    /// futures): cheaper for five calls than a task and a waker per call.
    pub(crate) async fn next(&mut self) -> Option<Reply<T>> {
        std::future::poll_fn(|cx| {
            loop {
                let mut waiting = false;
                for (index, slot) in self.calls.iter_mut().enumerate() {
                    match slot {
                        CallState::Waiting(call) => match call.as_mut().poll(cx) {
                            Poll::Ready(reply) => {
                                *slot = CallState::Done;
                                return Poll::Ready(Some(reply));
                            }
                            Poll::Pending => waiting = true,
                        },
                        CallState::Expired => {
                            *slot = CallState::Done;
                            let timeout = Err(NodeError::Timeout(self.timeout));
                            return Poll::Ready(Some((index, timeout)));
                        }
                        CallState::Done => {}
                    }
                }
                if !waiting {
                    return Poll::Ready(None);
                }
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Give up on the rest (requests already written still run on the nodes);
                // the next round reports them one by one.
                for slot in &mut self.calls {
                    if let CallState::Waiting(_) = slot {
                        *slot = CallState::Expired;
                    }
                }
            }
        })
        .await
    }

    /// Replies still outstanding.
    pub(crate) fn pending(&self) -> usize {
        self.outstanding().count()
    }

    /// Reads the outstanding replies to their end (bounded by the deadline), handing each
    /// to `on_reply`. The replies already in are read now (often all of them: then `None`
    /// is returned and nothing is left to do); the rest is the returned future, to run in
    /// the background with [`Janitor::run`](crate::redlock::background::janitor::Janitor::run). From now on until
    /// it lands, each reply still out counts as overdue on its node: a node with too many
    /// overdue replies is passed by (see [`backlog`](super::backlog)).
    pub(crate) fn drain(
        mut self,
        nodes: &Arc<NodeSet>,
        mut on_reply: impl FnMut(Reply<T>) + Send + 'static,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match std::pin::pin!(self.next()).poll(&mut cx) {
                Poll::Ready(Some(reply)) => on_reply(reply),
                Poll::Ready(None) => return None,
                Poll::Pending => break,
            }
        }
        let mut overdue = Overdue::new(self, nodes.clone());
        Some(async move {
            while let Some(reply) = overdue.fanout.next().await {
                overdue.landed(reply.0);
                on_reply(reply);
            }
        })
    }

    /// Reads the late replies of a decided fan-out in the background, to their end (bounded
    /// by the node timeout): a request nobody waits for any more would not even be sent.
    pub(crate) fn finish_in_background(self, nodes: &Arc<NodeSet>) {
        let engine = nodes.clone();
        let rest = self.drain(nodes, move |(index, reply)| {
            if let Err(error) = reply {
                node_failed(&engine, index, &error);
            }
        });
        if let Some(rest) = rest {
            nodes.janitor.run(rest);
        }
    }
}

/// Sends `call` to every node at once; the replies are read as they land, each node bounded
/// by the node timeout (see [`Fanout`]).
pub(crate) fn broadcast(
    nodes: &Arc<NodeSet>,
    call: Call,
) -> Fanout<impl Future<Output = Reply<Value>> + Send + 'static> {
    let call = Arc::new(call);
    Fanout::new(nodes.total(), nodes.timeout(), |index| {
        let (nodes, call) = (nodes.clone(), call.clone());
        async move { (index, nodes[index].call(&call, None).await) }
    })
}

/// A fan-out drained in the background, whose outstanding replies count as overdue on
/// their nodes until they land (or until it is dropped, e.g. with its runtime).
struct Overdue<F> {
    fanout: Fanout<F>,
    nodes: Arc<NodeSet>,
}

impl<F> Overdue<F> {
    fn new(fanout: Fanout<F>, nodes: Arc<NodeSet>) -> Self {
        for index in fanout.outstanding() {
            let node = &nodes[index];
            if nodes.straggler_started(index) {
                tracing::warn!(
                    node = index,
                    url = %node.url,
                    "Redlock node fell behind: too many of its replies are overdue; it counts \
                     as a \"no\" vote until it catches up"
                );
            }
        }
        Overdue { fanout, nodes }
    }

    fn landed(&self, index: usize) {
        let node = &self.nodes[index];
        if self.nodes.straggler_ended(index) {
            tracing::info!(node = index, url = %node.url, "Redlock node caught up");
        }
    }
}

impl<F> Drop for Overdue<F> {
    fn drop(&mut self) {
        for index in self.fanout.outstanding() {
            self.landed(index);
        }
    }
}
