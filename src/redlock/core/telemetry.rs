//! Metrics (feature `metrics`, through the `metrics` facade) and tracing helpers.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `redlock_acquire_total` | counter | `outcome` (`acquired`, `contended`, `unavailable`, `expired`, `invalid`), `lock` |
//! | `redlock_acquire_attempt_seconds` | histogram | `outcome`, `lock` — one attempt, all nodes |
//! | `redlock_acquire_wait_seconds` | histogram | `outcome`, `lock` — the whole call, retries included |
//! | `redlock_hold_seconds` | histogram | `lock` — from acquisition to release or loss |
//! | `redlock_lost_total` | counter | `lock` |
//! | `redlock_extend_failures_total` | counter | `lock` |
//! | `redlock_release_total` | counter | `outcome` (`released`, `expired`, `owned_by_other`, `unavailable`), `lock` |
//! | `redlock_circuit_opened_total` | counter | — |
//! | `redlock_circuit_open` | gauge | — (1 from opening until a probe closes it, 0 while closed) |
//! | `redlock_leases_held` | gauge | `lock` — leases held now (acquired, not yet lost or released) |
//! | `redlock_waiters` | gauge | `lock` — acquire calls not yet returned: attempting, sleeping between attempts, or queued behind a holder of this process |
//! | `redlock_node_up` | gauge | `node` (index) — 1 while calls go to the node, 0 while it is skipped (down or frozen) |
//! | `redlock_node_behind` | gauge | `node` — 1 while the node is flagged behind (passed by while the failure budget allows) |
//!
//! The gauges are set when the engine is built and whenever they change: install the
//! recorder before building the engine. The node gauges and `redlock_circuit_open` are
//! per engine: with several engines in one process, they overwrite each other.
//!
//! `lock` is empty unless a label is given per call ([`LockOptions::label`](crate::LockOptions::label))
//! or a key mapper is set on the builder: raw keys are never used as labels by default, so
//! cardinality stays bounded.
//!
//! The engine's own locks (the health check's test lock) carry [`internal_label`] and
//! record nothing: probes do not show up in the users' lock metrics.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::error::LockError;

/// Maps a lock key to a metrics label (opt-in; keep the set of results small).
pub(crate) type KeyLabeler = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The label of the engine's own locks: nothing is recorded for it.
static INTERNAL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("internal"));

/// The `lock` label for the engine's own locks (see the module docs).
pub(crate) fn internal_label() -> Arc<str> {
    INTERNAL.clone()
}

/// Whether `label` is [`internal_label`]'s (the very allocation, not the same text: a user
/// label `"internal"` is recorded as usual).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn is_internal(label: &Arc<str>) -> bool {
    Arc::ptr_eq(label, &INTERNAL)
}

/// The `outcome` label of an acquisition.
pub(crate) fn acquire_outcome(result: &Result<(), &LockError>) -> &'static str {
    match result {
        Ok(()) => "acquired",
        Err(LockError::Contended { .. }) => "contended",
        Err(LockError::Unavailable { .. }) => "unavailable",
        Err(LockError::Expired) => "expired",
        Err(LockError::ShutDown) => "shut_down",
        Err(_) => "invalid",
    }
}

/// An acquire call in progress, counted in `redlock_waiters` until it drops.
#[must_use = "counts the waiter until dropped"]
pub(crate) struct Waiting {
    #[cfg(feature = "metrics")]
    label: Option<String>,
}

impl Waiting {
    pub(crate) fn new(label: &Arc<str>) -> Waiting {
        #[cfg(feature = "metrics")]
        {
            let label = (!is_internal(label)).then(|| label.to_string());
            if let Some(lock) = &label {
                metrics::gauge!("redlock_waiters", "lock" => lock.clone()).increment(1.0);
            }
            Waiting { label }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = label;
            Waiting {}
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(lock) = self.label.take() {
            metrics::gauge!("redlock_waiters", "lock" => lock).decrement(1.0);
        }
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use super::*;

    pub(crate) fn acquire(label: &Arc<str>, outcome: &'static str, wait: Duration) {
        if is_internal(label) {
            return;
        }
        let lock = label.to_string();
        metrics::counter!("redlock_acquire_total", "outcome" => outcome, "lock" => lock.clone())
            .increment(1);
        metrics::histogram!("redlock_acquire_wait_seconds", "outcome" => outcome, "lock" => lock)
            .record(wait.as_secs_f64());
    }

    pub(crate) fn attempt(label: &Arc<str>, outcome: &'static str, took: Duration) {
        if is_internal(label) {
            return;
        }
        metrics::histogram!("redlock_acquire_attempt_seconds", "outcome" => outcome, "lock" => label.to_string())
            .record(took.as_secs_f64());
    }

    pub(crate) fn hold(label: &Arc<str>, held: Duration) {
        if is_internal(label) {
            return;
        }
        metrics::histogram!("redlock_hold_seconds", "lock" => label.to_string())
            .record(held.as_secs_f64());
    }

    pub(crate) fn lost(label: &Arc<str>) {
        if is_internal(label) {
            return;
        }
        metrics::counter!("redlock_lost_total", "lock" => label.to_string()).increment(1);
    }

    pub(crate) fn extend_failed(label: &Arc<str>) {
        if is_internal(label) {
            return;
        }
        metrics::counter!("redlock_extend_failures_total", "lock" => label.to_string())
            .increment(1);
    }

    pub(crate) fn release(label: &Arc<str>, outcome: &'static str) {
        if is_internal(label) {
            return;
        }
        metrics::counter!("redlock_release_total", "outcome" => outcome, "lock" => label.to_string())
            .increment(1);
    }

    pub(crate) fn circuit(open: bool, opened_now: bool) {
        if opened_now {
            metrics::counter!("redlock_circuit_opened_total").increment(1);
        }
        metrics::gauge!("redlock_circuit_open").set(if open { 1.0 } else { 0.0 });
    }

    pub(crate) fn lease_started(label: &Arc<str>) {
        if !is_internal(label) {
            metrics::gauge!("redlock_leases_held", "lock" => label.to_string()).increment(1.0);
        }
    }

    pub(crate) fn lease_ended(label: &Arc<str>) {
        if !is_internal(label) {
            metrics::gauge!("redlock_leases_held", "lock" => label.to_string()).decrement(1.0);
        }
    }

    pub(crate) fn node_up(index: usize, up: bool) {
        metrics::gauge!("redlock_node_up", "node" => index.to_string()).set(flag(up));
    }

    pub(crate) fn node_behind(index: usize, behind: bool) {
        metrics::gauge!("redlock_node_behind", "node" => index.to_string()).set(flag(behind));
    }

    /// The gauges' values for a new engine of `nodes` nodes: every node up, not behind,
    /// the breaker closed.
    pub(crate) fn engine_started(nodes: usize) {
        for index in 0..nodes {
            node_up(index, true);
            node_behind(index, false);
        }
        circuit(false, false);
    }

    fn flag(on: bool) -> f64 {
        if on { 1.0 } else { 0.0 }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use super::*;

    #[inline]
    pub(crate) fn acquire(_: &Arc<str>, _: &'static str, _: Duration) {}
    #[inline]
    pub(crate) fn attempt(_: &Arc<str>, _: &'static str, _: Duration) {}
    #[inline]
    pub(crate) fn hold(_: &Arc<str>, _: Duration) {}
    #[inline]
    pub(crate) fn lost(_: &Arc<str>) {}
    #[inline]
    pub(crate) fn extend_failed(_: &Arc<str>) {}
    #[inline]
    pub(crate) fn release(_: &Arc<str>, _: &'static str) {}
    #[inline]
    pub(crate) fn circuit(_: bool, _: bool) {}
    #[inline]
    pub(crate) fn lease_started(_: &Arc<str>) {}
    #[inline]
    pub(crate) fn lease_ended(_: &Arc<str>) {}
    #[inline]
    pub(crate) fn node_up(_: usize, _: bool) {}
    #[inline]
    pub(crate) fn node_behind(_: usize, _: bool) {}
    #[inline]
    pub(crate) fn engine_started(_: usize) {}
}

pub(crate) use imp::*;

/// A short, stable hash of a key for logs: correlates events without printing the key.
#[derive(Clone, Copy)]
pub(crate) struct KeyHash(pub(crate) u64);

impl KeyHash {
    pub(crate) fn of(keys: &[String]) -> KeyHash {
        // FNV-1a: stable across processes and runs, unlike std's RandomState.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for key in keys {
            for byte in key.bytes().chain([0xff]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        KeyHash(hash)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_and_separates_key_lists() {
        let a = KeyHash::of(&["ab".into(), "c".into()]).to_string();
        let b = KeyHash::of(&["a".into(), "bc".into()]).to_string();
        assert_ne!(a, b);
        assert_eq!(a, KeyHash::of(&["ab".into(), "c".into()]).to_string());
        assert_eq!(a.len(), 16);
    }
}
