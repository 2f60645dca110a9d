//! One node's pub/sub connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use redis::aio::PubSubSink;

use super::channels::Channels;

/// One node's subscriber connection, made lazily and remade after it dies.
pub(super) struct NodeSubscriber {
    pub(super) index: usize,
    pub(super) client: Client,
    pub(super) timeout: Duration,
    pub(super) sink: tokio::sync::Mutex<Option<(PubSubSink, Arc<AtomicBool>)>>,
}

impl NodeSubscriber {
    /// A live sink, connecting (bounded by the node timeout) when there is none or the last
    /// one's connection died.
    pub(super) async fn sink(&self, channels: &Weak<Channels>) -> Option<PubSubSink> {
        let mut slot = self.sink.lock().await;
        if let Some((sink, dead)) = slot.as_ref()
            && !dead.load(Ordering::Acquire)
        {
            return Some(sink.clone());
        }
        let pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .ok()?
            .ok()?;
        let (sink, mut stream) = pubsub.split();
        let channels = channels.clone();
        let dead = Arc::new(AtomicBool::new(false));
        let (reader_dead, index) = (dead.clone(), self.index);
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Some(channels) = channels.upgrade() else {
                    return;
                };
                channels.bump(msg.get_channel_name());
            }
            // The connection died (e.g. the node restarted): its subscriptions went with it.
            reader_dead.store(true, Ordering::Release);
            if let Some(channels) = channels.upgrade() {
                let wanted: Vec<String> = channels
                    .map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                channels.note_missing(index, wanted);
            }
        });
        *slot = Some((sink.clone(), dead));
        Some(sink)
    }

    pub(super) async fn forget(&self) {
        *self.sink.lock().await = None;
    }
}

/// One subscriber per node, numbered by the node's index (`None`: no client could be made
/// for that node; its index is skipped, not given to the next node).
pub(super) fn subscribers(
    clients: impl IntoIterator<Item = Option<Client>>,
    timeout: Duration,
) -> Box<[NodeSubscriber]> {
    clients
        .into_iter()
        .enumerate()
        .filter_map(|(index, client)| {
            Some(NodeSubscriber {
                index,
                client: client?,
                timeout,
                sink: tokio::sync::Mutex::new(None),
            })
        })
        .collect()
}
