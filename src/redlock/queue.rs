//! Local queueing: waiters for the same key in one process line up (FIFO) so that only one
//! of them competes on the nodes, and the lease passes to the next local waiter the moment
//! it is released — as a [`Handoff`] when the nodes could be switched to its token
//! directly (see [`super::handoff`]).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::handoff::Handoff;

const SHARDS: usize = 32;

type Shard = Mutex<HashMap<Box<str>, Arc<Entry>>>;

/// One key's line: one turn at a time, and the lease left for the next turn, if any.
struct Entry {
    semaphore: Arc<Semaphore>,
    /// Filled by a turn that ends with a hand-off, just before it lets the next one go; a
    /// hand-off nobody takes is released when the entry goes.
    mailbox: Mutex<Option<Handoff>>,
}

/// Per-key FIFO turns, sharded so that unrelated keys never share a mutex. An entry lives
/// only while someone holds or waits for a turn on its key.
pub(crate) struct LocalQueues {
    shards: Box<[Shard]>,
}

impl Default for LocalQueues {
    fn default() -> Self {
        LocalQueues {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl LocalQueues {
    fn shard(&self, id: &str) -> &Shard {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    /// Whether someone in this process holds or waits for a turn on `id`.
    pub(crate) fn is_busy(&self, id: &str) -> bool {
        self.shard(id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Waits for this process's turn on `id`, until `deadline`. `None`: the deadline passed.
    /// The flag tells whether the turn had to be waited for (someone local had it).
    pub(crate) async fn turn(
        self: &Arc<Self>,
        id: &str,
        deadline: Option<Instant>,
    ) -> Option<(LocalTurn, bool)> {
        let entry = {
            let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
            shard
                .entry(id.into())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        semaphore: Arc::new(Semaphore::new(1)),
                        mailbox: Mutex::default(),
                    })
                })
                .clone()
        };
        let slot = Slot {
            queues: self.clone(),
            id: id.into(),
            entry,
        };
        if let Ok(permit) = slot.entry.semaphore.clone().try_acquire_owned() {
            let turn = LocalTurn {
                _permit: permit,
                slot,
            };
            return Some((turn, false));
        }
        let acquire = slot.entry.semaphore.clone().acquire_owned();
        let permit = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, acquire).await.ok()?,
            None => acquire.await,
        }
        .ok()?;
        let turn = LocalTurn {
            _permit: permit,
            slot,
        };
        Some((turn, true))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// Keeps the key's entry alive; removes it when the last user goes.
struct Slot {
    queues: Arc<LocalQueues>,
    id: Box<str>,
    entry: Arc<Entry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shard = self
            .queues
            .shard(&self.id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only the map and this slot refer to it: nobody else holds or waits for a turn.
        if Arc::strong_count(&self.entry) == 2 {
            shard.remove(&self.id);
        }
    }
}

/// This process's turn on a key: held by the lease, passed on when dropped.
pub(crate) struct LocalTurn {
    // Field order matters: the permit (which holds the semaphore) drops before the slot
    // checks whether it was the last user.
    _permit: OwnedSemaphorePermit,
    slot: Slot,
}

impl LocalTurn {
    /// Whether someone else in this process holds a place in this key's line (waits for
    /// the turn, or is about to).
    pub(crate) fn has_followers(&self) -> bool {
        Arc::strong_count(&self.slot.entry) > 2
    }

    /// Ends the turn, leaving `handoff` to whoever takes the next one.
    pub(crate) fn pass(self, handoff: Handoff) {
        let previous = self
            .slot
            .entry
            .mailbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(handoff);
        // A turn is taken by one holder at a time, who empties the mailbox first.
        drop(previous);
    }

    /// The lease the previous turn left, if any.
    pub(crate) fn take_handoff(&self) -> Option<Handoff> {
        self.slot
            .entry
            .mailbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_are_exclusive_fifo_and_leave_no_state() {
        let queues = Arc::new(LocalQueues::default());
        let (first, waited) = queues.turn("k", None).await.unwrap();
        assert!(!waited);
        // Someone else waits; a deadline gives up without leaking.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(queues.turn("k", Some(soon)).await.is_none());
        let (other, _) = queues.turn("other", None).await.unwrap();
        assert_eq!(queues.len(), 2);
        let q = queues.clone();
        let waiter = tokio::spawn(async move { q.turn("k", None).await.is_some_and(|(_, w)| w) });
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap());
        drop(other);
        assert_eq!(queues.len(), 0, "no entry outlives its users");
    }
}
