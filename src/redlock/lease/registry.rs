//! The engine's live leases, so that [`Redlock::shutdown`](crate::Redlock::shutdown) can
//! release every one of them.
//!
//! A lease is added when it starts and removed when it is released (by
//! [`HeldLock::release`](crate::HeldLock::release), by its last clone dropping, or by
//! shutdown). A lost lease stays until it is released: its token may still be on some
//! nodes. Entries are weak: the registry never keeps a lease's state alive.
//!
//! Cost on the hot path: one atomic increment for the id, one lock of one of 32 mutexes
//! and a hash-map insert when a lease starts, the same lock and a remove when it is
//! released. Ids are sequential, so consecutive leases land on different shards and
//! concurrent leases rarely share a mutex; each is held for a map operation only. Next to
//! the quorum round trip each of those moments already costs, this is noise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::LeaseCore;

const SHARDS: usize = 32;

/// One shard: lease id → the lease.
type Shard = Mutex<HashMap<u64, Weak<LeaseCore>>>;

/// A lease's place in the [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseId(u64);

/// The live (not yet released) leases of one engine.
pub(crate) struct Registry {
    next: AtomicU64,
    shards: Box<[Shard]>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Registry {
    /// An id for a lease about to start.
    pub(crate) fn next_id(&self) -> LeaseId {
        LeaseId(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn shard(&self, id: LeaseId) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<LeaseCore>>> {
        self.shards[(id.0 % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a started lease.
    pub(crate) fn add(&self, id: LeaseId, lease: &Arc<LeaseCore>) {
        self.shard(id).insert(id.0, Arc::downgrade(lease));
    }

    /// Removes a released lease.
    pub(crate) fn remove(&self, id: LeaseId) {
        self.shard(id).remove(&id.0);
    }

    /// Every lease not yet released (the registry itself is left as is: each is removed
    /// when it is released).
    pub(crate) fn live(&self) -> Vec<Arc<LeaseCore>> {
        let mut live = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            live.extend(shard.values().filter_map(Weak::upgrade));
        }
        live
    }
}
