//! The channels someone in this process waits on, and their release generations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::watch;

/// Local registry of the channels someone in this process waits on.
#[derive(Default)]
pub(super) struct Channels {
    pub(super) map: Mutex<HashMap<String, Channel>>,
    /// `map.len()`, readable without the lock: a release with nobody waiting in the
    /// process (the common case) does not touch the mutex.
    pub(super) entries: AtomicUsize,
    /// Subscriptions that failed: (node index, channel).
    pub(super) missing: Mutex<Vec<(usize, String)>>,
    /// `missing.len()`, readable without the lock.
    pub(super) missing_count: AtomicUsize,
    /// A repair of the missing subscriptions is running.
    pub(super) repairing: AtomicBool,
    /// Held while deciding and sending `SUBSCRIBE`s and `UNSUBSCRIBE`s, so that they reach
    /// each node's pub/sub connection in the order they were decided in.
    pub(super) serial: tokio::sync::Mutex<()>,
    /// Background unsubscriptions not finished yet.
    pub(super) unsubscribing: AtomicUsize,
}

pub(super) struct Channel {
    pub(super) generation: watch::Sender<u64>,
    /// Waiters registered on it; at 0 the channel is unsubscribed (in the background) and
    /// forgotten, unless a waiter came back meanwhile.
    pub(super) interested: usize,
    /// Its `SUBSCRIBE` was sent (under `serial`), and no `UNSUBSCRIBE` since.
    pub(super) subscribed: bool,
}

impl Channels {
    /// Notes that node `index` is not subscribed to `channels`.
    pub(super) fn note_missing(&self, index: usize, channels: impl IntoIterator<Item = String>) {
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
    pub(super) fn take_missing(&self) -> Vec<(usize, String)> {
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
    pub(super) fn claim_unsubscribed(&self, channels: &[String]) -> Vec<String> {
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
    pub(super) fn forget_idle(&self, channels: &[String]) -> Vec<String> {
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

    pub(super) fn bump(&self, channel: &str) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get(channel) {
            entry.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}
