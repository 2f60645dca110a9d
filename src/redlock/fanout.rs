//! Concurrent calls to every node, read as they land, so the caller can decide at quorum.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, Sleep};

use super::client::Shared;
use super::node::NodeError;

/// One node's reply: its index and what it said.
pub(crate) type Reply<T> = (usize, Result<T, NodeError>);

/// Replies from one call per node, in the order they arrive, all bounded by one deadline
/// (the node timeout from the start): a node that has not answered by then counts as
/// [`NodeError::Timeout`]. One timer serves every node.
///
/// The calls make progress only while the `Fanout` is polled; a caller that decides early
/// hands the rest to [`Fanout::drain`] so that late replies are still seen (and cleaned up).
pub(crate) struct Fanout<F> {
    calls: FuturesUnordered<F>,
    answered: Vec<bool>,
    expired: Vec<usize>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<F, T> Fanout<F>
where
    F: Future<Output = Reply<T>> + Send + 'static,
    T: Send + 'static,
{
    /// Starts `call(i)` for every node index `i < nodes`, each allowed `timeout`.
    pub(crate) fn new(nodes: usize, timeout: Duration, call: impl Fn(usize) -> F) -> Self {
        Fanout {
            calls: (0..nodes).map(call).collect(),
            answered: vec![false; nodes],
            expired: Vec::new(),
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
        }
    }

    /// The next reply, or `None` once every node has answered or timed out.
    pub(crate) async fn next(&mut self) -> Option<Reply<T>> {
        if let Some(index) = self.expired.pop() {
            self.answered[index] = true;
            return Some((index, Err(NodeError::Timeout(self.timeout))));
        }
        if self.calls.is_empty() {
            return None;
        }
        tokio::select! {
            biased;
            reply = self.calls.next() => {
                let reply = reply?;
                self.answered[reply.0] = true;
                Some(reply)
            }
            () = self.deadline.as_mut() => {
                // Give up on the rest (requests already written still run on the nodes).
                self.calls.clear();
                self.expired = (0..self.answered.len()).rev().filter(|&i| !self.answered[i]).collect();
                let index = self.expired.pop()?;
                self.answered[index] = true;
                Some((index, Err(NodeError::Timeout(self.timeout))))
            }
        }
    }

    /// Replies still outstanding.
    pub(crate) fn pending(&self) -> usize {
        self.calls.len() + self.expired.len()
    }

    /// Reads the outstanding replies to their end (bounded by the deadline), handing each
    /// to `on_reply`: run it in the background with [`Janitor::run`](super::janitor::Janitor::run).
    /// From now on until it lands, each counts as overdue on its node: a node with too many
    /// overdue replies is passed by (see
    /// [`Node::straggler_started`](super::node::Node::straggler_started)).
    pub(crate) fn drain(
        self,
        shared: &Arc<Shared>,
        mut on_reply: impl FnMut(Reply<T>) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut overdue = Overdue::new(self, shared.clone());
        async move {
            while let Some(reply) = overdue.fanout.next().await {
                overdue.landed(reply.0);
                on_reply(reply);
            }
        }
    }
}

/// A fan-out drained in the background, whose outstanding replies count as overdue on
/// their nodes until they land (or until it is dropped, e.g. with its runtime).
struct Overdue<F> {
    fanout: Fanout<F>,
    shared: Arc<Shared>,
}

impl<F> Overdue<F> {
    fn new(fanout: Fanout<F>, shared: Arc<Shared>) -> Self {
        for (index, _) in fanout.answered.iter().enumerate().filter(|(_, a)| !**a) {
            let node = &shared.nodes[index];
            if node.straggler_started() {
                tracing::warn!(
                    node = index,
                    url = %node.url,
                    "Redlock node fell behind: too many of its replies are overdue; it counts \
                     as a \"no\" vote until it catches up"
                );
            }
        }
        Overdue { fanout, shared }
    }

    fn landed(&self, index: usize) {
        let node = &self.shared.nodes[index];
        if node.straggler_ended() {
            tracing::info!(node = index, url = %node.url, "Redlock node caught up");
        }
    }
}

impl<F> Drop for Overdue<F> {
    fn drop(&mut self) {
        for (index, _) in self
            .fanout
            .answered
            .iter()
            .enumerate()
            .filter(|(_, a)| !**a)
        {
            self.landed(index);
        }
    }
}
