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
//! Standalone nodes only: a Redis Cluster or Sentinel node has no pub/sub connection here
//! (its client is not a single server's), so waiters in other processes hear a release on
//! such a node by their fallback timer; this process's own releases still wake its
//! waiters at once ([`WakeHub::notify_local`]). The other nodes' messages still arrive.
//!
//! When its last waiter leaves, a channel is unsubscribed in the background. Subscriptions
//! and unsubscriptions are decided and queued on the nodes' connections under one lock
//! ([`Channels::serial`], not held while their confirmations are awaited), and a channel is
//! only unsubscribed if, under that lock, nobody waits for it: so an `UNSUBSCRIBE` can never
//! land after the `SUBSCRIBE` of a waiter that came meanwhile (which would leave a hot key
//! without wake-ups, its waiters polling on the fallback timer).

mod channels;
mod interest;
mod subscriber;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::sync::watch;

use self::channels::{Channel, Channels};
pub(crate) use self::interest::Interest;
use self::subscriber::{NodeSubscriber, subscribers};
use crate::redlock::config::node_url::NodeUrl;

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
