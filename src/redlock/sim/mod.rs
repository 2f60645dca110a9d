//! Simulated Redis nodes: an in-process model of one node, answering the engine's
//! wire-level [`Call`](super::node::Call)s with the `redis::Value`s real Redis gives.
//!
//! - [`store`]: string keys with `PX` expiries on [`tokio::time::Instant`] (so it runs
//!   under `tokio::time::pause()`), and pub/sub channels.
//! - [`scripts`]: the engine's Lua scripts in Rust, step by step; [`commands`]: the plain
//!   commands, and telling the scripts apart by SHA or body.
//! - [`SimConnection`]: one socket. Requests are applied in the order they were sent, each
//!   after its delay, even when the caller stopped waiting (a request on the wire is not
//!   taken back), and a restart breaks it.
//! - [`faults`]: per node, faults a test sets and clears at any time: delay (fixed and
//!   jittered from a seeded generator), lost replies, partition, pause, restart (empty or
//!   with its data).
//!
//! Differential tests (`differential/`, feature `testkit`) run one scenario suite against
//! a real `redis-server` and against this model and require the same replies, so the
//! model cannot drift from the Lua; and the faults against the test kit's own (`SIGSTOP`,
//! the fault proxy's partition, a restart).
//!
//! Not modeled: commands the engine does not send; RESP3; error messages (only their
//! codes match Redis's), and where a script fails on a malformed argument list (the engine
//! never sends one); `SCRIPT FLUSH` (the model always knows the engine's scripts, so the
//! engine's `EVAL` fallback is not exercised on it); memory limits and eviction; a
//! restart's down time (it is instantaneous: partition the node for a while instead) and
//! persistence's own timing (a restart with data keeps every write, as `appendfsync
//! always`); clock jumps. Pub/sub is per node, not a connection of its own: a `PUBLISH`
//! reaches subscribers at once, and a subscription ends only with a restart.

mod commands;
mod connection;
mod faults;
mod scripts;
mod store;

#[cfg(all(test, feature = "testkit"))]
mod differential;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use connection::SimConnection;
use faults::Faults;
use store::Store;

/// One simulated Redis node. Clones are the same node.
#[derive(Clone)]
pub(crate) struct SimNode {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of faults or restart, so that connections waiting on the
    /// node look at it again.
    changes: watch::Sender<u64>,
}

struct State {
    store: Store,
    faults: Faults,
    /// The node's process: a restart starts a new one, breaking the older connections.
    epoch: u64,
}

impl Default for SimNode {
    fn default() -> Self {
        SimNode::new()
    }
}

impl SimNode {
    /// An empty node, without faults; its jitter generator is seeded with 0.
    pub(crate) fn new() -> Self {
        SimNode::with_seed(0)
    }

    /// An empty node, without faults, whose jitter generator is seeded with `seed`.
    pub(crate) fn with_seed(seed: u64) -> Self {
        let state = State {
            store: Store::default(),
            faults: Faults::new(seed),
            epoch: 0,
        };
        SimNode {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changes: watch::Sender::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes the connections waiting on the node.
    fn change(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state());
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A new connection (one socket). Made during a partition, it is broken from the start
    /// (its calls fail at once, as a connection attempt that failed). It needs a Tokio
    /// runtime (it runs one task); without one it is broken too.
    pub(crate) fn connect(&self) -> SimConnection {
        let (epoch, partitioned) = {
            let state = self.state();
            (state.epoch, state.faults.partitioned)
        };
        SimConnection::open(self.clone(), epoch, !partitioned)
    }

    /// Every request's round trip takes `fixed` plus a uniform share of `jitter` (drawn
    /// from the node's seeded generator), half each way.
    pub(crate) fn set_delay(&self, fixed: Duration, jitter: Duration) {
        self.change(|s| {
            s.faults.delay = fixed;
            s.faults.jitter = jitter;
        });
    }

    /// While on, requests are applied but their replies never come (the caller's node
    /// timeout fires).
    pub(crate) fn drop_replies(&self, on: bool) {
        self.change(|s| s.faults.drop_replies = on);
    }

    /// While on, requests (and replies on their way back) are lost: neither applied nor
    /// answered; a connection made meanwhile fails, and one that lost something stays
    /// silent after the partition heals (see [`SimConnection`]).
    pub(crate) fn partition(&self, on: bool) {
        self.change(|s| s.faults.partitioned = on);
    }

    /// Stops the node, as `SIGSTOP` does: requests wait, unapplied, until
    /// [`resume`](Self::resume) (keys keep expiring meanwhile, as Redis's follow the clock).
    pub(crate) fn pause(&self) {
        self.change(|s| s.faults.paused = true);
    }

    /// Resumes a paused node: what waited is applied, in order.
    pub(crate) fn resume(&self) {
        self.change(|s| s.faults.paused = false);
    }

    /// Clears every fault (delay, lost replies, partition, pause).
    pub(crate) fn heal(&self) {
        self.change(|s| s.faults.heal());
    }

    /// Restarts the node without its data (no persistence): every key and subscription is
    /// lost, every connection broken (requests not applied yet fail), a pause ends.
    pub(crate) fn restart_empty(&self) {
        self.change(|s| {
            s.store.clear();
            s.restart();
        });
    }

    /// Restarts the node with its data (persistence): keys and their expiries are kept,
    /// subscriptions lost, every connection broken, a pause ends.
    pub(crate) fn restart_with_data(&self) {
        self.change(|s| {
            s.store.drop_subscriptions();
            s.restart();
        });
    }

    /// The value of `key` now, as `GET` would see it (for checks in tests).
    pub(crate) fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.state().store.get(key.as_bytes(), Instant::now())
    }

    /// `PTTL` of `key` now (for checks in tests).
    pub(crate) fn pttl(&self, key: &str) -> i64 {
        self.state().store.pttl(key.as_bytes(), Instant::now())
    }

    /// Every key alive now, sorted (for checks in tests: what a run left behind).
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        self.state().store.live_keys(Instant::now())
    }

    /// The node's process (bumped by each restart).
    fn epoch(&self) -> u64 {
        self.state().epoch
    }
}

impl State {
    fn restart(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.faults.paused = false;
    }
}
