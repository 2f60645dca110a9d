//! The barrier of a carried-over lease: the swap of the keys to its token, maybe still
//! under way when the lease starts (see `handover/carry.rs`).
//!
//! The lease starts on its predecessor's validity; whatever it sends (an extension, its
//! release) must follow the swap on every node, so it first waits for the swap to be
//! decided ([`SwapBarrier::settled`]). The decision gives the lease its fresh validity, or
//! loses it.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::time::Instant;

use super::LeaseCore;

/// What the swap behind a carried hand-off decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swap {
    /// Still under way.
    Pending,
    /// A quorum took the new token: the lease is valid until `valid_until`; `marked`: a
    /// waiter in another process marked the key.
    Moved { valid_until: Instant, marked: bool },
    /// No quorum took it: the lease is lost.
    Failed,
}

/// The swap behind a carried hand-off, and the lease that took it.
pub(crate) struct SwapBarrier {
    swap: watch::Sender<Swap>,
    taker: Mutex<Weak<LeaseCore>>,
}

impl SwapBarrier {
    pub(crate) fn new() -> Arc<SwapBarrier> {
        Arc::new(SwapBarrier {
            swap: watch::Sender::new(Swap::Pending),
            taker: Mutex::new(Weak::new()),
        })
    }

    /// Whether the swap is still under way.
    pub(crate) fn is_pending(&self) -> bool {
        *self.swap.borrow() == Swap::Pending
    }

    /// Waits until the swap is decided.
    pub(crate) async fn settled(&self) -> Swap {
        let mut swap = self.swap.subscribe();
        match swap.wait_for(|s| *s != Swap::Pending).await {
            Ok(swap) => *swap,
            Err(_) => Swap::Failed,
        }
    }

    /// Calls `take` with the swap's state as of now; the lease it returns is carried over:
    /// it takes the swap's outcome, now or when it comes.
    pub(crate) fn take_with<T>(
        self: &Arc<Self>,
        take: impl FnOnce(Swap) -> Option<(T, Arc<LeaseCore>)>,
    ) -> Option<T> {
        let mut taker = self.taker.lock().unwrap_or_else(|e| e.into_inner());
        let swap = *self.swap.borrow();
        let (lock, core) = take(swap)?;
        core.set_carried(self.clone());
        core.carried_settled(swap);
        if swap == Swap::Pending {
            *taker = Arc::downgrade(&core);
        }
        Some(lock)
    }

    /// Decides the swap: the lease that took it (if any) learns the outcome.
    pub(crate) fn settle(&self, swap: Swap) {
        self.swap.send_replace(swap);
        // Under the lock `take_with` holds: a lease taken before is found here, one taken
        // after sees the outcome itself.
        let taker = self
            .taker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        if let Some(core) = taker {
            core.carried_settled(swap);
        }
    }
}

/// A carried-over lease's barrier and what it learnt from it.
pub(super) struct Carried {
    barrier: Arc<SwapBarrier>,
    applied: Mutex<Applied>,
}

#[derive(Default)]
struct Applied {
    /// An extension took over from the swap: from then on the swap's settlement no longer
    /// sets the validity.
    by_extension: bool,
    /// A waiter in another process marked the keys.
    marked: bool,
}

impl Carried {
    pub(super) fn new(barrier: Arc<SwapBarrier>) -> Carried {
        Carried {
            barrier,
            applied: Mutex::default(),
        }
    }

    pub(super) async fn settled(&self) -> Swap {
        self.barrier.settled().await
    }

    pub(super) fn marked(&self) -> bool {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .marked
    }

    /// Applies the decided `swap` to `core`: its fresh validity, or the loss.
    ///
    /// Called by the swap's settlement and by the first extension, which waits for the swap
    /// and applies it itself before it sends anything (`by_extension`: so its own outcome
    /// is the latest on every node). Once an extension did, the swap's validity is stale: a
    /// settlement that comes later (it notifies waiters before it calls this) leaves the
    /// validity alone instead of raising it over what that extension found.
    pub(super) fn apply(&self, core: &LeaseCore, swap: Swap, by_extension: bool) {
        match swap {
            Swap::Moved {
                valid_until,
                marked,
            } => {
                let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
                if !applied.by_extension {
                    applied.marked = marked;
                    core.set_valid_until(valid_until);
                }
                applied.by_extension |= by_extension;
            }
            Swap::Failed => {
                core.mark_lost();
            }
            Swap::Pending => {}
        }
    }
}
