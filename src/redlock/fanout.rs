//! Concurrent calls to every node, read as they land, so the caller can decide at quorum.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::node::NodeError;

/// One node's reply: its index and what it said.
pub(crate) type Reply<T> = (usize, Result<T, NodeError>);

/// Replies from one call per node, in the order they arrive.
///
/// The calls make progress only while the `Fanout` is polled; a caller that decides early
/// hands the rest to [`Fanout::drain`] so that late replies are still seen (and cleaned up).
pub(crate) struct Fanout<F> {
    calls: FuturesUnordered<F>,
}

impl<F, T> Fanout<F>
where
    F: Future<Output = Reply<T>> + Send + 'static,
    T: Send + 'static,
{
    /// Starts `call(i)` for every node index `i < nodes`.
    pub(crate) fn new(nodes: usize, call: impl Fn(usize) -> F) -> Self {
        Fanout {
            calls: (0..nodes).map(call).collect(),
        }
    }

    /// The next reply, or `None` once every node has answered.
    pub(crate) async fn next(&mut self) -> Option<Reply<T>> {
        self.calls.next().await
    }

    /// Replies still outstanding.
    pub(crate) fn pending(&self) -> usize {
        self.calls.len()
    }

    /// Keeps reading the outstanding replies in the background, handing each to `on_reply`.
    /// Every call is bounded by the node timeout, so the task ends by itself.
    pub(crate) fn drain(self, on_reply: impl FnMut(Reply<T>) + Send + 'static) {
        drain_on(self, on_reply, None);
    }
}

/// [`Fanout::drain`] with an explicit runtime handle (for use in `Drop`).
pub(crate) fn drain_on<F, T>(
    mut fanout: Fanout<F>,
    mut on_reply: impl FnMut(Reply<T>) + Send + 'static,
    handle: Option<&tokio::runtime::Handle>,
) where
    F: Future<Output = Reply<T>> + Send + 'static,
    T: Send + 'static,
{
    if fanout.calls.is_empty() {
        return;
    }
    let task = async move {
        while let Some(reply) = fanout.calls.next().await {
            on_reply(reply);
        }
    };
    match handle {
        Some(handle) => {
            handle.spawn(task);
        }
        None => {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(task);
            }
        }
    }
}
