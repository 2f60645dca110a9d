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
//!
//! When its last waiter leaves, a channel is unsubscribed in the background. Subscriptions
//! and unsubscriptions are decided and queued on the nodes' connections under one lock
//! ([`Channels::serial`], not held while their confirmations are awaited), and a channel is
//! only unsubscribed if, under that lock, nobody waits for it: so an `UNSUBSCRIBE` can never
//! land after the `SUBSCRIBE` of a waiter that came meanwhile (which would leave a hot key
//! without wake-ups, its waiters polling on the fallback timer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use redis::aio::PubSubSink;
use tokio::sync::watch;

use crate::redlock::config::node_url::NodeUrl;

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
    /// Held while deciding and sending `SUBSCRIBE`s and `UNSUBSCRIBE`s, so that they reach
    /// each node's pub/sub connection in the order they were decided in.
    serial: tokio::sync::Mutex<()>,
    /// Background unsubscriptions not finished yet.
    unsubscribing: AtomicUsize,
}

struct Channel {
    generation: watch::Sender<u64>,
    /// Waiters registered on it; at 0 the channel is unsubscribed (in the background) and
    /// forgotten, unless a waiter came back meanwhile.
    interested: usize,
    /// Its `SUBSCRIBE` was sent (under `serial`), and no `UNSUBSCRIBE` since.
    subscribed: bool,
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

    /// Takes the missing subscriptions of channels still wanted and subscribed (others are
    /// forgotten). Called under `serial`.
    fn take_missing(&self) -> Vec<(usize, String)> {
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *missing);
        self.missing_count.store(0, Ordering::Release);
        drop(missing);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        taken
            .into_iter()
            .filter(|(_, channel)| {
                map.get(channel)
                    .is_some_and(|entry| entry.interested > 0 && entry.subscribed)
            })
            .collect()
    }

    /// Of `channels`, those not subscribed yet, now marked subscribed (their `SUBSCRIBE` is
    /// about to be sent). Called under `serial`.
    fn claim_unsubscribed(&self, channels: &[String]) -> Vec<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .iter()
            .filter(|name| {
                map.get_mut(*name)
                    .is_some_and(|entry| !std::mem::replace(&mut entry.subscribed, true))
            })
            .cloned()
            .collect()
    }

    /// Of `channels`, those nobody waits for any more, now forgotten; returns those of them
    /// that were subscribed. Called under `serial`.
    fn forget_idle(&self, channels: &[String]) -> Vec<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        for name in channels {
            if let Some(entry) = map.get(name)
                && entry.interested == 0
            {
                if entry.subscribed {
                    gone.push(name.clone());
                }
                map.remove(name);
            }
        }
        self.entries.store(map.len(), Ordering::Release);
        gone
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
        let clients = urls
            .iter()
            .map(|url| crate::redlock::node::client_for(url, tls_root).ok());
        WakeHub {
            channels: Arc::default(),
            nodes: subscribers(clients, timeout),
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

    /// Registers interest in `channels` and subscribes on every node where not subscribed
    /// yet (waiting, each node bounded by its timeout, so that no release published after
    /// this returns is missed by a reachable node).
    pub(crate) async fn interest(self: &Arc<Self>, channels: &[String]) -> Interest {
        let mut receivers = Vec::with_capacity(channels.len());
        let mut unsubscribed = false;
        {
            let mut map = self.channels.map.lock().unwrap_or_else(|e| e.into_inner());
            for name in channels {
                let entry = map.entry(name.clone()).or_insert_with(|| Channel {
                    generation: watch::Sender::new(0),
                    interested: 0,
                    subscribed: false,
                });
                entry.interested += 1;
                unsubscribed |= !entry.subscribed;
                receivers.push(entry.generation.subscribe());
            }
            self.channels.entries.store(map.len(), Ordering::Release);
        }
        // Made first: if this future is dropped below, its drop gives the interest back.
        let interest = Interest {
            hub: self.clone(),
            channels: channels.to_vec(),
            receivers,
        };
        if unsubscribed {
            let serial = self.channels.serial.lock().await;
            let new = self.channels.claim_unsubscribed(channels);
            if !new.is_empty() {
                // Dropped before the nodes confirmed: the repair makes them again.
                let unconfirmed = Unconfirmed {
                    hub: self,
                    channels: &new,
                };
                self.subscribe(self.nodes.iter(), &new, Some(serial)).await;
                std::mem::forget(unconfirmed);
            }
        }
        interest
    }

    /// Subscribes to `channels` on `nodes` (each bounded by the node timeout), noting the
    /// nodes where that failed. `serial`: see [`for_each_node`](Self::for_each_node).
    async fn subscribe<'a>(
        &self,
        nodes: impl Iterator<Item = &'a NodeSubscriber>,
        channels: &[String],
        serial: Option<tokio::sync::MutexGuard<'_, ()>>,
    ) {
        let failed = self
            .for_each_node(
                |mut sink, timeout, channels| async move {
                    tokio::time::timeout(timeout, sink.subscribe(channels)).await
                },
                nodes,
                channels,
                serial,
            )
            .await;
        for index in failed {
            self.channels.note_missing(index, channels.iter().cloned());
        }
    }

    /// Makes the subscriptions that failed again, in the background (one repair at a time,
    /// under `serial`).
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
            let serial = hub.channels.serial.lock().await;
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
                        // `serial` is held for the whole repair (rare: after failures).
                        hub.subscribe(std::iter::once(node), &channels, None).await;
                    }
                }
            });
            futures_util::future::join_all(repairs).await;
            drop(serial);
            hub.channels.repairing.store(false, Ordering::Release);
        });
    }

    /// Runs `call` on `nodes` at once; returns the indexes of the nodes where it failed.
    ///
    /// Each node's request is handed to its pub/sub connection while `serial` (a guard of
    /// [`Channels::serial`]) is held: the first poll of a redis-rs pub/sub request queues it
    /// on the connection at once, so requests reach every node in the order they took the
    /// lock. The guard is given back before the confirmations are awaited (`None`: the
    /// caller holds the lock itself throughout).
    async fn for_each_node<'a, F, Fut, T>(
        &self,
        call: F,
        nodes: impl Iterator<Item = &'a NodeSubscriber>,
        channels: &[String],
        serial: Option<tokio::sync::MutexGuard<'_, ()>>,
    ) -> Vec<usize>
    where
        F: Fn(PubSubSink, Duration, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<redis::RedisResult<T>, tokio::time::error::Elapsed>>,
    {
        let weak = Arc::downgrade(&self.channels);
        let sent = nodes.map(|node| {
            let weak = weak.clone();
            let call = &call;
            async move {
                let Some(sink) = node.sink(&weak).await else {
                    return Err(node.index);
                };
                let mut reply = Box::pin(call(sink, node.timeout, channels.to_vec()));
                let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
                Ok((node, first, reply))
            }
        });
        let sent: Vec<_> = futures_util::future::join_all(sent).await;
        drop(serial);
        let replies = sent.into_iter().map(|sent| async move {
            let (node, first, reply) = match sent {
                Ok(sent) => sent,
                Err(index) => return Some(index),
            };
            let result = match first {
                Poll::Ready(result) => result,
                Poll::Pending => reply.await,
            };
            match result {
                Ok(Ok(_)) => None,
                // Dead connection: make a new one next time. A timeout leaves it be.
                Ok(Err(_)) => {
                    node.forget().await;
                    Some(node.index)
                }
                Err(_) => Some(node.index),
            }
        });
        futures_util::future::join_all(replies)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn release_interest(self: &Arc<Self>, channels: &[String]) {
        let mut idle = Vec::new();
        {
            let mut map = self.channels.map.lock().unwrap_or_else(|e| e.into_inner());
            for name in channels {
                if let Some(entry) = map.get_mut(name) {
                    entry.interested -= 1;
                    if entry.interested == 0 {
                        idle.push(name.clone());
                    }
                }
            }
        }
        if idle.is_empty() {
            return;
        }
        // Unsubscribed in the background, under `serial`, unless a waiter came back by then
        // (it keeps the subscription), or after which a new waiter subscribes again.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.channels.forget_idle(&idle);
            return;
        };
        let hub = self.clone();
        self.channels.unsubscribing.fetch_add(1, Ordering::AcqRel);
        handle.spawn(async move {
            let serial = hub.channels.serial.lock().await;
            let gone = hub.channels.forget_idle(&idle);
            if !gone.is_empty() {
                hub.for_each_node(
                    |mut sink, timeout, channels| async move {
                        tokio::time::timeout(timeout, sink.unsubscribe(channels)).await
                    },
                    hub.nodes.iter(),
                    &gone,
                    Some(serial),
                )
                .await;
            }
            hub.channels.unsubscribing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// One subscriber per node, numbered by the node's index (`None`: no client could be made
/// for that node; its index is skipped, not given to the next node).
fn subscribers(
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

/// Subscriptions sent but not confirmed yet: if dropped (the waiter's future was), noted as
/// missing on every node, so that the next repair makes them.
struct Unconfirmed<'a> {
    hub: &'a WakeHub,
    channels: &'a [String],
}

impl Drop for Unconfirmed<'_> {
    fn drop(&mut self) {
        for node in &self.hub.nodes {
            self.hub
                .channels
                .note_missing(node.index, self.channels.iter().cloned());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_keep_their_node_index_when_a_client_fails() {
        let client = || Client::open("redis://127.0.0.1:1").ok();
        let nodes = subscribers([client(), None, client()], Duration::from_secs(1));
        let indexes: Vec<usize> = nodes.iter().map(|node| node.index).collect();
        assert_eq!(indexes, [0, 2]);
    }

    #[cfg(feature = "testkit")]
    mod interleaving {
        use super::*;
        use crate::testkit::{LocalCluster, eventually};

        const CHANNEL: &str = "t:wake:hot";
        const DEADLINE: Duration = Duration::from_secs(10);

        async fn hub(cluster: &LocalCluster) -> Arc<WakeHub> {
            let urls: Vec<NodeUrl> = cluster
                .urls()
                .iter()
                .map(|url| NodeUrl::parse(url).unwrap())
                .collect();
            Arc::new(WakeHub::new(&urls, Duration::from_secs(2), None))
        }

        /// Waits (bounded) until no background unsubscription is left.
        async fn settled(hub: &WakeHub) {
            let done = eventually(DEADLINE, || async {
                hub.channels.unsubscribing.load(Ordering::Acquire) == 0
            })
            .await;
            assert!(done, "a background unsubscription never finished");
        }

        /// Subscribers of `CHANNEL` on node `i`.
        async fn numsub(cluster: &LocalCluster, i: usize) -> i64 {
            let mut conn = Client::open(cluster.url(i))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let (_, count): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(CHANNEL)
                .query_async(&mut conn)
                .await
                .unwrap();
            count
        }

        /// Every node still has the channel subscribed, and a release published there wakes
        /// the waiter.
        async fn still_woken(cluster: &LocalCluster, waiter: &mut Interest) {
            for i in 0..cluster.len() {
                assert_eq!(
                    numsub(cluster, i).await,
                    1,
                    "node {i} lost the subscription"
                );
            }
            waiter.mark_seen();
            let mut conn = Client::open(cluster.url(1))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg("released")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(
                tokio::time::timeout(DEADLINE, waiter.released())
                    .await
                    .is_ok(),
                "the release did not wake the waiter"
            );
        }

        /// Single-threaded: the last waiter leaves (its unsubscription is spawned, not run)
        /// and a new waiter registers before that task runs.
        #[tokio::test]
        async fn a_waiter_back_before_the_unsubscription_keeps_the_subscription() {
            let cluster = LocalCluster::start(2).await.unwrap();
            let hub = hub(&cluster).await;
            let channels = [CHANNEL.to_owned()];
            let first = hub.interest(&channels).await;
            drop(first);
            let mut second = hub.interest(&channels).await;
            settled(&hub).await;
            still_woken(&cluster, &mut second).await;
        }

        /// Single-threaded: the unsubscription has decided and is under way when a new waiter
        /// registers.
        #[tokio::test]
        async fn a_waiter_back_during_the_unsubscription_subscribes_after_it() {
            let cluster = LocalCluster::start(2).await.unwrap();
            let hub = hub(&cluster).await;
            let channels = [CHANNEL.to_owned()];
            let first = hub.interest(&channels).await;
            drop(first);
            let mut forgotten = false;
            for _ in 0..1000 {
                tokio::task::yield_now().await;
                let map = hub.channels.map.lock().unwrap();
                if !map.contains_key(CHANNEL) {
                    forgotten = true;
                    break;
                }
            }
            assert!(forgotten, "the unsubscription never started");
            let mut second = hub.interest(&channels).await;
            settled(&hub).await;
            still_woken(&cluster, &mut second).await;
        }
    }
}
