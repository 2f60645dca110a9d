//! Shared leases: read/write leases and `N` permits per key, in quorum form, on the
//! ordinary lease machinery (watchdog, `lost()`, release on drop, wake-on-release).
//!
//! # Read/write leases
//!
//! Per node and resource (every name under the key's hash tag, see `core/keys.rs`):
//! - the **lock key** (`{prefix}{key}:lock`, the exclusive lease's own) holds a writer's
//!   token, or the readers' marker while any reader is admitted there, with an expiry never
//!   earlier than the latest reader's;
//! - the **readers ZSET** (`...:rw.readers`): one member per reader (its token), scored
//!   with its expiry in the node's clock (`TIME`); every script trims expired members;
//! - the **intent key** (`...:rw.intent`): a waiting writer's id, for one ttl.
//!
//! A node admits a reader iff the lock key holds no writer token and no intent is there;
//! it admits a writer iff the lock key does not exist (no writer, no exclusive lease, no
//! live reader). Acquisition, extension, release and the cleanup of partial or late
//! acquisitions are the exclusive lease's (quorum `N/2 + 1`, validity
//! `ttl − elapsed − drift`, a failed attempt undone on the connection its request used,
//! extensions compare-only: a reader's only if its own member is still live, never
//! re-created), with the scripts of `core/shared_scripts.rs`.
//!
//! **Exclusion.** Suppose a writer and a reader (or two writers) both hold within their
//! validity. Each was admitted by a majority, so some node admitted both. On that node the
//! first admitted keeps the lock key (writer token, or the marker whose expiry is at least
//! the reader's) until its node-side expiry, which is after the end of its validity (the
//! drift allowance); the second was admitted while the first's key existed — impossible, as
//! neither script admits then. Any number of readers share, since the marker admits
//! readers. Writers and exclusive leases ([`Redlock::acquire`](crate::Redlock::acquire))
//! on the same key exclude each other and readers: a writer *is* an exclusive lease plus
//! write preference.
//!
//! **Write preference.** A writer refused on a node, and about to try again, leaves its
//! intent there (unless another writer's is), refreshed on every attempt; new readers are
//! refused while an intent exists, so readers already in drain away and the writer gets in
//! within the longest remaining reader hold (plus one retry pause), however many new
//! readers arrive. The intent is withdrawn when the writer gets in or gives up; a writer
//! that vanishes while waiting leaves it for at most one ttl. The intent never takes part
//! in the exclusion argument: it only delays readers.
//!
//! Readers are extended one by one (each updates its own member; not by the batched
//! extension, whose script compares the lock key with the token); writers go with the
//! batch. Shared leases never take the local hand-over path: it moves a token from holder
//! to holder, which means nothing for readers; writers compete on the nodes as every
//! other process does. Fencing: writers get tokens from the exclusive lease's counter;
//! readers and permits refuse it ([`LockError::InvalidOptions`](crate::LockError)).
//!
//! # Permits
//!
//! A per-node counter with a majority quorum is **not** safe for `N ≥ 2` permits: with 5
//! nodes and 2 permits, holders A, B and C can each collect 3 yes votes (A on nodes 1, 2,
//! 3; B on 3, 4, 5; C on 1, 2, 4: 9 admissions fit in 5 × 2 = 10 slots) while no node
//! ever admits more than 2 — three holders of two permits. A counter is safe only
//! with a quorum `q > M·N/(N+1)` of `M` nodes, which for large `N` tolerates no failure.
//!
//! So `N` permits are `N` ordinary Redlock mutexes: permit `i` is its own key
//! (`{prefix}{key}:permit{i}:lock`), and a holder owns exactly one of them at majority
//! quorum, tried one after the other in a random rotation. Two holders of one permit
//! would be two holders of one mutex, so at most `N` hold at once, and the fault tolerance
//! is the exclusive lease's (`⌊(M−1)/2⌋` nodes). A freed permit publishes on the key's
//! permits channel when a waiter marked it, so waiters wake. Permit counts from 1 to
//! [`MAX_PERMITS`]; callers must agree on `N` (holders using different `N` for one key
//! share the first `min` permits).
//!
//! # Node restarts
//!
//! As for exclusive leases: a node restarted without persistence forgets what it admitted
//! (a writer's token, the readers' marker, a permit) and may admit a conflicting holder.
//! Run nodes with `appendfsync always`, or keep a restarted node out for one max ttl
//! before it takes part again (the README's *Node restarts*).

pub(crate) mod calls;
mod keys;
mod mode;

pub(crate) use self::mode::check_shape;
pub use self::mode::{LeaseMode, MAX_PERMITS};

#[cfg(test)]
mod tests;
