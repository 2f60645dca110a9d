//! [`RequestLease`]: the layer's own clone of a request's lease, which ends the lease for
//! every clone when the request ends.
//!
//! The rule: the lease a [`RedlockLayer`](super::RedlockLayer) takes lasts as long as the
//! request — until the response is produced, or with
//! [`hold_until_body_end`](super::RedlockLayer::hold_until_body_end) until the body's last
//! frame, or until the response future or body is dropped (client gone, panic, error). It
//! does not last as long as the last [`HeldLock`] clone: a clone the handler moved into a
//! spawned task, an `on_upgrade` closure or shared state sees its lease end with the request
//! (`is_held() == false`, `lost()` resolved).
//!
//! So every way out ends the lease explicitly with [`HeldLock::release`], which ends it for
//! all clones. The release runs on a spawned task on the lease's own runtime, even when the
//! response waits for it: a release future dropped half-way (the client went away while it
//! ran) could leave its commands unsent, and nothing blocks in `Drop`.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::body::BoxFuture;
use super::estimate::HoldEstimate;
use super::layer::Release;
use crate::redlock::HeldLock;

/// The layer's clone of a request's lease; releases it (for all clones) when dropped.
pub(crate) struct RequestLease {
    lock: Option<HeldLock>,
    /// Where the hold's duration goes when the request ends (not when the lease was lost).
    holds: Arc<HoldEstimate>,
}

impl RequestLease {
    pub(crate) fn new(lock: HeldLock, holds: Arc<HoldEstimate>) -> Self {
        RequestLease {
            lock: Some(lock),
            holds,
        }
    }

    /// Takes the lease to end it, recording how long it was held.
    fn take(&mut self) -> Option<HeldLock> {
        if !self.is_lost() {
            let lock = self.lock.as_ref()?;
            self.holds.record(lock.core().acquired_at.elapsed());
        }
        self.lock.take()
    }

    /// `true` when the lease was lost (not released) or its validity ran out: the request
    /// no longer ran under its lock.
    pub(crate) fn is_lost(&self) -> bool {
        self.lock
            .as_ref()
            .is_some_and(|lock| !lock.is_held() && !lock.is_released())
    }

    /// Ends the lease for every clone. With [`Release::BeforeResponse`] returns the release
    /// to wait for; with [`Release::InBackground`] (or when already ended) `None`.
    pub(crate) fn end(&mut self, mode: Release) -> Option<BoxFuture<()>> {
        let task = spawn_release(self.take()?);
        match mode {
            Release::BeforeResponse => Some(Box::pin(async move {
                // A panic or a runtime shutting down only means the lease will expire.
                let _ = task.await;
            })),
            Release::InBackground => None,
        }
    }
}

impl Drop for RequestLease {
    fn drop(&mut self) {
        if let Some(lock) = self.take() {
            spawn_release(lock);
        }
    }
}

/// Releases `lock` (for all clones) on a task of the runtime it was acquired on.
fn spawn_release(lock: HeldLock) -> JoinHandle<()> {
    let runtime = lock.core().runtime.clone();
    runtime.spawn(async move {
        if let Err(error) = lock.release().await {
            tracing::debug!(%error, "Redlock release failed; the lease will expire on its own");
        }
    })
}
