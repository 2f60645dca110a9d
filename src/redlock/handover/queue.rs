//! Local queueing: waiters for the same key in one process line up (FIFO) so that only one
//! of them competes on the nodes, and the lease passes to the next local waiter the moment
//! it is released — as a [`Handoff`] when the nodes could be switched to its token
//! directly (see [`handoff`](super::handoff)).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::handoff::Handoff;
use crate::redlock::core::keys::QueueId;

const SHARDS: usize = 32;

/// A line's identity, owned: the key set's lock keys, compared key by key (see
/// [`LockKeys::queue_id`](crate::redlock::core::keys::LockKeys::queue_id)).
type LineId = Arc<[String]>;

type Shard = Mutex<HashMap<LineId, Arc<Entry>>>;

/// One key's line: one turn at a time, and the lease left for the next turn, if any.
struct Entry {
    semaphore: Arc<Semaphore>,
    /// Filled by a turn that ends with a hand-off, just before it lets the next one go; a
    /// hand-off nobody takes is released when the entry goes.
    mailbox: Mutex<Option<Handoff>>,
    /// How many [`Place`]s hold a place in this line (holding or waiting for the turn).
    /// Changed only under the shard's lock, so the last one to leave knows it is the last
    /// and removes the entry (a reference count read there would not do: the `Arc`s drop
    /// after the lock is let go, so two leaving at once could each see the other).
    users: AtomicUsize,
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
    fn shard(&self, id: &[String]) -> &Shard {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    /// Whether someone in this process holds or waits for a turn on `id`.
    pub(crate) fn is_busy(&self, id: &QueueId<'_>) -> bool {
        let id = id.lock_keys();
        self.shard(id)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Waits for this process's turn on `id`, until `deadline`. `None`: the deadline passed.
    /// The flag tells whether the turn had to be waited for (someone local had it).
    pub(crate) async fn turn(
        self: &Arc<Self>,
        id: &QueueId<'_>,
        deadline: Option<Instant>,
    ) -> Option<(LocalTurn, bool)> {
        let slot = self.join(id.lock_keys());
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

    /// Takes a place in `id`'s line, making the line if there is none.
    fn join(self: &Arc<Self>, id: &[String]) -> Place {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        let (id, entry) = match shard.get_key_value(id) {
            Some((id, entry)) => (id.clone(), entry.clone()),
            None => {
                let id: LineId = id.into();
                let entry = Arc::new(Entry {
                    semaphore: Arc::new(Semaphore::new(1)),
                    mailbox: Mutex::default(),
                    users: AtomicUsize::new(0),
                });
                shard.insert(id.clone(), entry.clone());
                (id, entry)
            }
        };
        entry.users.fetch_add(1, Ordering::Relaxed);
        Place {
            queues: self.clone(),
            id,
            entry,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// A place in a key's line; the last one to go removes the line.
struct Place {
    queues: Arc<LocalQueues>,
    id: LineId,
    entry: Arc<Entry>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut shard = self
            .queues
            .shard(&self.id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Under the shard's lock, like every change of the count: exactly one slot sees 1.
        if self.entry.users.fetch_sub(1, Ordering::Relaxed) == 1 {
            shard.remove(&*self.id);
        }
    }
}

/// This process's turn on a key: held by the lease, passed on when dropped.
pub(crate) struct LocalTurn {
    // Field order matters: the permit (which holds the semaphore) drops before the slot
    // leaves the line, so the next in line is let go while the line still exists.
    _permit: OwnedSemaphorePermit,
    slot: Place,
}

impl LocalTurn {
    /// Whether someone else in this process holds a place in this key's line (waits for
    /// the turn, or is about to).
    pub(crate) fn has_followers(&self) -> bool {
        self.slot.entry.users.load(Ordering::Relaxed) > 1
    }

    /// The key set this turn was taken for: the waiter's own (see
    /// [`LockKeys::queue_id`](crate::redlock::core::keys::LockKeys::queue_id)).
    pub(crate) fn id(&self) -> QueueId<'_> {
        QueueId::new(&self.slot.id)
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

    fn id(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[tokio::test]
    async fn turns_are_exclusive_fifo_and_leave_no_state() {
        let queues = Arc::new(LocalQueues::default());
        let k = id(&["k"]);
        let (first, waited) = queues.turn(&QueueId::new(&k), None).await.unwrap();
        assert!(!waited);
        assert!(!first.has_followers());
        // Someone else waits; a deadline gives up without leaking.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(queues.turn(&QueueId::new(&k), Some(soon)).await.is_none());
        let (other, _) = queues
            .turn(&QueueId::new(&id(&["other"])), None)
            .await
            .unwrap();
        assert_eq!(queues.len(), 2);
        let q = queues.clone();
        let waiter = tokio::spawn(async move {
            let k = id(&["k"]);
            q.turn(&QueueId::new(&k), None)
                .await
                .is_some_and(|(_, w)| w)
        });
        // One thread: the waiter runs up to its wait now.
        tokio::task::yield_now().await;
        assert!(first.has_followers());
        drop(first);
        assert!(waiter.await.unwrap());
        drop(other);
        assert_eq!(queues.len(), 0, "no entry outlives its users");
    }

    #[tokio::test]
    async fn key_sets_that_differ_never_share_a_line() {
        let queues = Arc::new(LocalQueues::default());
        // Ids a joined string would confuse: the same text, cut differently.
        let pair = id(&["p:lock:a", "p:lock:b"]);
        let one = id(&["p:lock:a\u{0}p:lock:b"]);
        let (_pair, _) = queues.turn(&QueueId::new(&pair), None).await.unwrap();
        assert!(!queues.is_busy(&QueueId::new(&one)));
        let (turn, waited) = queues.turn(&QueueId::new(&one), None).await.unwrap();
        assert!(!waited, "another key set's turn was waited for");
        assert_eq!(turn.id().lock_keys(), one);
        assert_eq!(queues.len(), 2);
    }

    /// Many users join and leave lines at once on several threads: every line is gone
    /// once all have left. (A count read from the `Arc`s under the lock, with the `Arc`s
    /// dropped after it, let two leaving at once both believe the other stays.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lines_left_by_many_users_at_once_are_removed() {
        const ROUNDS: usize = 300;
        const USERS: usize = 8;
        let queues = Arc::new(LocalQueues::default());
        for round in 0..ROUNDS {
            let k = id(&[&format!("k{round}")]);
            let start = Arc::new(tokio::sync::Barrier::new(USERS));
            let users: Vec<_> = (0..USERS)
                .map(|user| {
                    let (queues, k, start) = (queues.clone(), k.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        // Half wait for the turn, half give up at once (as a deadline would).
                        let deadline = (user % 2 == 1).then(Instant::now);
                        drop(queues.turn(&QueueId::new(&k), deadline).await);
                    })
                })
                .collect();
            for user in users {
                user.await.unwrap();
            }
        }
        assert_eq!(queues.len(), 0, "lines outlived their users");
    }

    /// The last users of lines leave at the same moment on different threads, line after
    /// line: no line outlives them. With the old reference-count check this left a few
    /// lines behind in most runs (1 to 5 of 100 000 on two cores).
    #[test]
    fn lines_left_by_their_last_users_at_once_are_removed() {
        const LINES: usize = 100_000;
        const USERS: usize = 3;
        let queues = Arc::new(LocalQueues::default());
        let mut per_user: Vec<Vec<Place>> = (0..USERS).map(|_| Vec::new()).collect();
        for line in 0..LINES {
            let k = id(&[&format!("k{line}")]);
            for slots in &mut per_user {
                slots.push(queues.join(&k));
            }
        }
        let start = Arc::new(std::sync::Barrier::new(USERS));
        let users: Vec<_> = per_user
            .into_iter()
            .map(|slots| {
                let start = start.clone();
                std::thread::spawn(move || {
                    for slot in slots {
                        start.wait();
                        drop(slot);
                    }
                })
            })
            .collect();
        for user in users {
            user.join().unwrap();
        }
        assert_eq!(queues.len(), 0, "lines outlived their users");
    }
}
