//! Whether an engine still takes new work, and how much of its work is still under way:
//! what [`Redlock::shutdown`](crate::Redlock::shutdown) stops and waits for.
//!
//! - *Closing* is a flag that is set once and never cleared; acquisitions check it before
//!   they start, wait on it while they run (so a waiter in a retry loop or in the local
//!   queue gives up at once), and check it again when they succeed.
//! - *Busy* counts the work shutdown must see to its end: acquisitions in progress (their
//!   cancellation hands any cleanup to the janitor), releases in progress, and janitor
//!   chores. Each piece holds a [`Busy`] guard; the count reaching zero wakes
//!   [`idle`](Lifecycle::idle).
//!
//! # Why no work is missed
//!
//! An acquisition enters (counts itself) *before* it reads the flag, and shutdown sets the
//! flag *before* it reads the count, both sequentially consistent: either the acquisition
//! sees the flag and gives up, or shutdown sees it counted and waits for it. A release
//! enters before it marks its lease released, so a lease shutdown no longer finds among
//! the live ones is always counted while its release runs. A piece of work hands what is
//! left to the janitor (which counts it) before its own guard drops, so the count does not
//! touch zero in between.
//!
//! # Cost
//!
//! One atomic increment and one decrement per acquisition, release and janitor chore (the
//! count reaching zero takes the notifier's lock only once shutdown waits for it), and one
//! flag read (a shared read lock) per acquisition; waiting on the flag registers with one
//! of the watch channel's sharded notifiers. All are in-memory and uncontended next to
//! the network round trip every one of those operations makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// An engine's closing flag and its count of work under way.
pub(crate) struct Lifecycle {
    closing: watch::Sender<bool>,
    busy: AtomicUsize,
    /// Set (for good) by the first [`idle`](Lifecycle::idle) call: until then the count
    /// reaching zero wakes nobody, so the hot path takes no lock.
    idle_wanted: AtomicBool,
    idle: Notify,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            closing: watch::Sender::new(false),
            busy: AtomicUsize::new(0),
            idle_wanted: AtomicBool::new(false),
            idle: Notify::new(),
        }
    }
}

impl Lifecycle {
    /// Whether shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Begins shutdown: from now on [`is_closing`](Self::is_closing) is `true` and every
    /// [`closing`](Self::closing) future resolves.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
        // Pairs with the fence in `enter`: see the module docs.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // The sender lives as long as the engine, which outlives this future's users;
            // should it go, nothing is left to shut down.
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Counts a piece of work until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `close`: see the module docs.
        std::sync::atomic::fence(Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How many pieces of work are under way.
    pub(crate) fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Resolves once no work is under way.
    pub(crate) async fn idle(&self) {
        // Set before the count is read, as a guard decrements before it reads this: one of
        // the two sees the other (both sequentially consistent).
        self.idle_wanted.store(true, Ordering::SeqCst);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a guard dropping in between wakes it.
            notified.as_mut().enable();
            if self.busy() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One piece of work under way (see [`Lifecycle::enter`]).
pub(crate) struct Busy(Arc<Lifecycle>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.idle_wanted.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_guard_and_closing_wakes_waiters() {
        let life = Arc::new(Lifecycle::default());
        life.idle().await;
        let (a, b) = (life.enter(), life.enter());
        let idle = tokio::spawn({
            let life = life.clone();
            async move { life.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "idle with one guard left");
        drop(b);
        idle.await.unwrap();

        let closing = tokio::spawn(life.closing());
        assert!(!life.is_closing());
        life.close();
        assert!(life.is_closing());
        closing.await.unwrap();
        // A future made after the close resolves at once.
        life.closing().await;
    }
}
