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
//! all clones, and nothing blocks in `Drop`:
//!
//! - When the response waits for the release ([`Release::BeforeResponse`], the default), the
//!   release runs inline, in the response future or body: no task per request. Dropped
//!   half-way (the client went away while it ran), it still completes: from its first poll
//!   the lease is marked released for all clones and the engine finishes an interrupted
//!   release in the background (`HeldLock::release`'s guarantee). Dropped before its first
//!   poll, it was never started: [`StartOnDrop`] then starts it on a task.
//! - Otherwise ([`Release::InBackground`], or the lease dropped with its request), the
//!   release runs on a task spawned on the lease's own runtime.

use std::sync::Arc;

use super::estimate::HoldEstimate;
use super::policy::Release;
use crate::redlock::HeldLock;

/// A boxed future the layer runs (a lease's release, a response body's end).
pub(crate) type BoxFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

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
        let lock = self.take()?;
        match mode {
            Release::BeforeResponse => {
                let unstarted = StartOnDrop(Some(lock));
                Some(Box::pin(async move {
                    if let Some(lock) = unstarted.start() {
                        release(lock).await;
                    }
                }))
            }
            Release::InBackground => {
                spawn_release(lock);
                None
            }
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

/// A release not started yet: dropped so (its future dropped before the first poll), it
/// starts the release on a task instead.
struct StartOnDrop(Option<HeldLock>);

impl StartOnDrop {
    /// The lease, to release now (the guard is disarmed).
    fn start(mut self) -> Option<HeldLock> {
        self.0.take()
    }
}

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take() {
            spawn_release(lock);
        }
    }
}

/// Releases `lock` (for all clones) on a task of the runtime it was acquired on.
fn spawn_release(lock: HeldLock) {
    let runtime = lock.core().runtime.clone();
    runtime.spawn(release(lock));
}

/// Releases `lock` for all clones; a failure only means the lease will expire on its own.
async fn release(lock: HeldLock) {
    if let Err(error) = lock.release().await {
        tracing::debug!(%error, "Redlock release failed; the lease will expire on its own");
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Redlock;
    use crate::testkit::LocalCluster;

    async fn engine(cluster: &LocalCluster) -> Redlock {
        Redlock::builder()
            .nodes(cluster.urls())
            .node_timeout(Duration::from_secs(3))
            .build()
            .await
            .unwrap()
    }

    /// The response's release, dropped at each stage (never polled, polled once, done),
    /// still ends the lease for every clone, and the key is free for another engine.
    #[tokio::test]
    async fn a_release_future_dropped_at_any_point_still_ends_the_lease() {
        let cluster = LocalCluster::start(1).await.unwrap();
        let (ours, theirs) = (engine(&cluster).await, engine(&cluster).await);
        for polls in [0, 1, usize::MAX] {
            let lock = ours.acquire("inline-release").await.unwrap();
            let handler_clone = lock.clone();
            let mut lease = RequestLease::new(lock, Arc::default());
            let mut release = lease
                .end(Release::BeforeResponse)
                .expect("a release to wait for");
            if polls == usize::MAX {
                release.await;
            } else {
                for _ in 0..polls {
                    assert!(futures_poll_once(&mut release).await.is_pending());
                }
                drop(release);
            }
            // Ends for all clones: the handler's clone learns it (no timing window).
            tokio::time::timeout(Duration::from_secs(10), handler_clone.ended())
                .await
                .unwrap_or_else(|_| panic!("the lease did not end after {polls} polls"));
            assert!(handler_clone.is_released(), "after {polls} polls");
            drop(handler_clone);
            // And the nodes know it: another engine gets the key (bounded retry).
            let other = tokio::time::timeout(Duration::from_secs(10), async {
                for _ in 0..10_000 {
                    if let Ok(lock) = theirs.try_acquire("inline-release").await {
                        return Some(lock);
                    }
                    tokio::task::yield_now().await;
                }
                None
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the key stayed locked after {polls} polls"));
            other.release().await.unwrap();
        }
    }

    /// Polls `future` once.
    async fn futures_poll_once(future: &mut BoxFuture<()>) -> std::task::Poll<()> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await
    }
}
