//! Wake-on-release: waiters hear about a release instead of polling for it.
//!
//! The release script publishes on a per-key channel. A process keeps one pub/sub
//! connection per node (made on first need), subscribes to a channel while someone in the
//! process waits for that key, and bumps a per-channel generation when a message arrives.
//! A waiter notes the generation before each attempt and, after a contended attempt, waits
//! for it to move — or for the fallback timer (the holder's remaining time, capped by the
//! retry policy), so a lost message costs latency, never correctness.
//!
//! A subscription that fails (a node that did not answer in time, or a pub/sub connection
//! that died with the node's restart) is noted and made again, in the background, the next
//! time a waiter starts waiting, for as long as the channel is wanted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use redis::aio::PubSubSink;
use tokio::sync::watch;

use super::node_url::NodeUrl;

/// Local registry of the channels someone in this process waits on.
#[derive(Default)]
struct Channels {
    map: Mutex<HashMap<String, Channel>>,
    /// `map.len()`, readable without the lock: a release with nobody waiting in the
    /// process (the common case) does not touch the mutex.
    entries: AtomicUsize,
    /// Subscriptions that failed: (node index, channel).
    missing: Mutex<Vec<(usize, String)>>,
    /// `missing.len()`, readable without the lock.
    missing_count: AtomicUsize,
    /// A repair of the missing subscriptions is running.
    repairing: AtomicBool,
}

struct Channel {
    generation: watch::Sender<u64>,
    interested: usize,
}

impl Channels {
    /// Notes that node `index` is not subscribed to `channels`.
    fn note_missing(&self, index: usize, channels: impl IntoIterator<Item = String>) {
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        for channel in channels {
            if !missing.iter().any(|(i, c)| *i == index && *c == channel) {
                missing.push((index, channel));
            }
        }
        self.missing_count.store(missing.len(), Ordering::Release);
    }

    /// Takes the missing subscriptions of channels still wanted (others are forgotten).
    fn take_missing(&self) -> Vec<(usize, String)> {
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *missing);
        self.missing_count.store(0, Ordering::Release);
        drop(missing);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        taken
            .into_iter()
            .filter(|(_, channel)| map.contains_key(channel))
            .collect()
    }

    fn bump(&self, channel: &str) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get(channel) {
            entry.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// One node's subscriber connection, made lazily and remade after it dies.
struct NodeSubscriber {
    index: usize,
    client: Client,
    timeout: Duration,
    sink: tokio::sync::Mutex<Option<(PubSubSink, Arc<AtomicBool>)>>,
}

impl NodeSubscriber {
    /// A live sink, connecting (bounded by the node timeout) when there is none or the last
    /// one's connection died.
    async fn sink(&self, channels: &Weak<Channels>) -> Option<PubSubSink> {
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

    async fn forget(&self) {
        *self.sink.lock().await = None;
    }
}

/// Wake-on-release for one [`Redlock`](crate::Redlock).
pub(crate) struct WakeHub {
    channels: Arc<Channels>,
    nodes: Box<[NodeSubscriber]>,
}

impl WakeHub {
    pub(crate) fn new(urls: &[NodeUrl], timeout: Duration, tls_root: Option<&[u8]>) -> WakeHub {
        WakeHub {
            channels: Arc::default(),
            nodes: urls
                .iter()
                .filter_map(|url| super::node::client_for(url, tls_root).ok())
                .enumerate()
                .map(|(index, client)| NodeSubscriber {
                    index,
                    client,
                    timeout,
                    sink: tokio::sync::Mutex::new(None),
                })
                .collect(),
        }
    }

    /// Wakes this process's waiters on `channels` directly (after a local release), without
    /// waiting for the nodes' message.
    pub(crate) fn notify_local(&self, channels: &[String]) {
        if self.channels.entries.load(Ordering::Acquire) == 0 {
            return;
        }
        for channel in channels {
            self.channels.bump(channel);
        }
    }

    /// Registers interest in `channels` and subscribes on every node (waiting, each node
    /// bounded by its timeout, so that no release published after this returns is missed
    /// by a reachable node).
    pub(crate) async fn interest(self: &Arc<Self>, channels: &[String]) -> Interest {
        let mut receivers = Vec::with_capacity(channels.len());
        let mut new = Vec::new();
        {
            let mut map = self.channels.map.lock().unwrap_or_else(|e| e.into_inner());
            for name in channels {
                let entry = map.entry(name.clone()).or_insert_with(|| {
                    new.push(name.clone());
                    Channel {
                        generation: watch::Sender::new(0),
                        interested: 0,
                    }
                });
                entry.interested += 1;
                receivers.push(entry.generation.subscribe());
            }
            self.channels.entries.store(map.len(), Ordering::Release);
        }
        if !new.is_empty() {
            self.subscribe(self.nodes.iter(), &new).await;
        }
        Interest {
            hub: self.clone(),
            channels: channels.to_vec(),
            receivers,
        }
    }

    /// Subscribes to `channels` on `nodes` (each bounded by the node timeout), noting the
    /// nodes where that failed.
    async fn subscribe<'a>(
        &self,
        nodes: impl Iterator<Item = &'a NodeSubscriber>,
        channels: &[String],
    ) {
        let failed = self
            .for_each_node(
                |mut sink, timeout, channels| async move {
                    tokio::time::timeout(timeout, sink.subscribe(channels)).await
                },
                nodes,
                channels,
            )
            .await;
        for index in failed {
            self.channels.note_missing(index, channels.iter().cloned());
        }
    }

    /// Makes the subscriptions that failed again, in the background (one repair at a time).
    fn repair(self: &Arc<Self>) {
        if self.channels.missing_count.load(Ordering::Acquire) == 0
            || self.channels.repairing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let hub = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.channels.repairing.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            let missing = hub.channels.take_missing();
            let repairs = hub.nodes.iter().map(|node| {
                let channels: Vec<String> = missing
                    .iter()
                    .filter(|(index, _)| *index == node.index)
                    .map(|(_, channel)| channel.clone())
                    .collect();
                let hub = &hub;
                async move {
                    if !channels.is_empty() {
                        hub.subscribe(std::iter::once(node), &channels).await;
                    }
                }
            });
            futures_util::future::join_all(repairs).await;
            hub.channels.repairing.store(false, Ordering::Release);
        });
    }

    /// Runs `call` on `nodes` at once; returns the indexes of the nodes where it failed.
    async fn for_each_node<'a, F, Fut, T>(
        &self,
        call: F,
        nodes: impl Iterator<Item = &'a NodeSubscriber>,
        channels: &[String],
    ) -> Vec<usize>
    where
        F: Fn(PubSubSink, Duration, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<redis::RedisResult<T>, tokio::time::error::Elapsed>>,
    {
        let weak = Arc::downgrade(&self.channels);
        let calls = nodes.map(|node| {
            let weak = weak.clone();
            let call = &call;
            async move {
                let Some(sink) = node.sink(&weak).await else {
                    return Some(node.index);
                };
                match call(sink, node.timeout, channels.to_vec()).await {
                    Ok(Ok(_)) => None,
                    // Dead connection: make a new one next time. A timeout leaves it be.
                    Ok(Err(_)) => {
                        node.forget().await;
                        Some(node.index)
                    }
                    Err(_) => Some(node.index),
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn release_interest(self: &Arc<Self>, channels: &[String]) {
        let mut gone = Vec::new();
        {
            let mut map = self.channels.map.lock().unwrap_or_else(|e| e.into_inner());
            for name in channels {
                if let Some(entry) = map.get_mut(name) {
                    entry.interested -= 1;
                    if entry.interested == 0 {
                        map.remove(name);
                        gone.push(name.clone());
                    }
                }
            }
            self.channels.entries.store(map.len(), Ordering::Release);
        }
        if gone.is_empty() {
            return;
        }
        // Unsubscribe in the background; a channel re-registered meanwhile is re-subscribed
        // by its new first waiter, and a stray unsubscribe only costs that waiter a timer.
        let hub = self.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                hub.for_each_node(
                    |mut sink, timeout, channels| async move {
                        tokio::time::timeout(timeout, sink.unsubscribe(channels)).await
                    },
                    hub.nodes.iter(),
                    &gone,
                )
                .await;
            });
        }
    }
}

/// A waiter's registration: wakes when any of its channels hears a release.
pub(crate) struct Interest {
    hub: Arc<WakeHub>,
    channels: Vec<String>,
    receivers: Vec<watch::Receiver<u64>>,
}

impl Interest {
    /// Marks every generation seen so far: [`released`](Self::released) waits for news.
    pub(crate) fn mark_seen(&mut self) {
        for rx in &mut self.receivers {
            rx.mark_unchanged();
        }
    }

    /// Resolves when a release was heard since the last [`mark_seen`](Self::mark_seen).
    /// Subscriptions that failed before are made again meanwhile.
    pub(crate) async fn released(&mut self) {
        self.hub.repair();
        let waits = self.receivers.iter_mut().map(|rx| Box::pin(rx.changed()));
        let _ = futures_util::future::select_all(waits).await;
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.hub.release_interest(&self.channels);
    }
}
