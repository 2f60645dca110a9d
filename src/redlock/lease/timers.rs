//! Lease timers without a task per lease.
//!
//! One task per engine sleeps until the earliest lease deadline (the next automatic
//! extension, or the end of the validity) and then hands every lease due to the
//! [batched extension](super::lease::batch), which extends the due ones together and puts
//! each back here at its next deadline. Scheduling a lease is a map insert under a sharded
//! mutex, and the task is woken only when a lease is due earlier than everything it already
//! waits for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::LeaseCore;

/// What the timers do with the leases that came due (the batched extension's entry point).
pub(crate) type OnDue = fn(Vec<Arc<LeaseCore>>);

const SHARDS: usize = 8;

/// Tokio's timers fire on whole milliseconds, rounded up: a sleep until `at` may end up to
/// this much after `at`. Entries are taken this much early, so that a lease whose validity
/// ends at `at` is declared lost by `at`, never after it.
pub(crate) const RESOLUTION: Duration = Duration::from_millis(1);

/// Where a lease waits: its deadline and a unique id (to cancel it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    at: Instant,
    id: u64,
}

impl TimerKey {
    /// When the entry is due.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }
}

type Shard = Mutex<BTreeMap<TimerKey, Weak<LeaseCore>>>;

struct Inner {
    on_due: OnDue,
    shards: Box<[Shard]>,
    /// Deadlines are kept as nanoseconds after `base` (u64::MAX: nothing to wake for).
    base: Instant,
    /// When the task wakes next; lowered (and the task notified) by an earlier lease.
    next_wake: AtomicU64,
    wake: Notify,
    ids: AtomicU64,
    /// Whether the task runs; false once its runtime dropped it (a new one is started then).
    running: AtomicBool,
    restart: Mutex<()>,
    closed: AtomicBool,
}

impl Inner {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn shard(&self, key: TimerKey) -> &Shard {
        &self.shards[(key.id as usize) % SHARDS]
    }
}

/// The engine's lease timers.
pub(crate) struct Timers {
    inner: Arc<Inner>,
    /// Taken by each extension batch while it is on the wire (see
    /// [`batch`](super::lease::batch)): one at a time per engine.
    pub(crate) sending: tokio::sync::Mutex<()>,
}

impl Timers {
    /// Creates the timers and starts their task on the current runtime; due leases go to
    /// `on_due`.
    pub(crate) fn start(on_due: OnDue) -> Timers {
        let inner = Arc::new(Inner {
            on_due,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            base: Instant::now(),
            next_wake: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            ids: AtomicU64::new(0),
            running: AtomicBool::new(true),
            restart: Mutex::new(()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(run(Running(inner.clone())));
        Timers {
            inner,
            sending: tokio::sync::Mutex::new(()),
        }
    }

    /// A key for a lease due at `at`.
    pub(crate) fn key(&self, at: Instant) -> TimerKey {
        TimerKey {
            at,
            id: self.inner.ids.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `at`, rounded down to a multiple of `step` counted from the timers' start: deadlines
    /// rounded to one grid come due together.
    pub(crate) fn grid_down(&self, at: Instant, step: Duration) -> Instant {
        let step = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
        let since = self.inner.nanos(at);
        if step == 0 || since >= u64::MAX - 1 {
            return at;
        }
        self.inner.base + Duration::from_nanos(since - since % step)
    }

    /// Hands `lease` to the batched extension at `key`'s deadline, unless cancelled before.
    pub(crate) fn schedule(&self, key: TimerKey, lease: &Arc<LeaseCore>) {
        let inner = &self.inner;
        if !inner.running.load(Ordering::Acquire) {
            self.restart();
        }
        inner
            .shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::downgrade(lease));
        let at = inner.nanos(key.at);
        if inner.next_wake.fetch_min(at, Ordering::SeqCst) > at {
            inner.wake.notify_one();
        }
    }

    /// Forgets the lease at `key` (it ended, or moved to another deadline).
    pub(crate) fn cancel(&self, key: TimerKey) {
        self.inner
            .shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The task's runtime is gone (a test's runtime ended, say): start it again here.
    fn restart(&self) {
        let _one = self.inner.restart.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.running.load(Ordering::Acquire) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.inner.running.store(true, Ordering::Release);
            // Whatever was scheduled is looked at again.
            self.inner.next_wake.store(0, Ordering::SeqCst);
            handle.spawn(run(Running(self.inner.clone())));
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

/// Marks the task gone when its future is dropped: finished, or its runtime shut down —
/// possibly before ever polling it, so the guard is made before the task is spawned.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

async fn run(running: Running) {
    let inner = running.0.clone();
    let mut due = Vec::new();
    while !inner.closed.load(Ordering::Acquire) {
        // Anything scheduled from here on lowers this again and notifies.
        inner.next_wake.store(u64::MAX, Ordering::SeqCst);
        let horizon = Instant::now() + RESOLUTION;
        let mut earliest = u64::MAX;
        for shard in inner.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(entry) = map.first_entry() {
                if entry.key().at <= horizon {
                    due.push(entry.remove());
                } else {
                    earliest = earliest.min(inner.nanos(entry.key().at));
                    break;
                }
            }
        }
        if !due.is_empty() {
            (inner.on_due)(due.drain(..).filter_map(|lease| lease.upgrade()).collect());
        }
        inner.next_wake.fetch_min(earliest, Ordering::SeqCst);
        let target = inner.next_wake.load(Ordering::SeqCst);
        let notified = inner.wake.notified();
        let at = (target != u64::MAX)
            .then(|| inner.base.checked_add(Duration::from_nanos(target)))
            .flatten()
            .map(|at| at.checked_sub(RESOLUTION).unwrap_or(at));
        match at {
            Some(at) => tokio::select! {
                biased;
                () = tokio::time::sleep_until(at) => {}
                () = notified => {}
            },
            None => notified.await,
        }
    }
}
