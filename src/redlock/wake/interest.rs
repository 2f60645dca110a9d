//! [`Interest`]: a waiter's registration for wake-ups.

use std::sync::Arc;

use tokio::sync::watch;

use super::WakeHub;

/// A waiter's registration: wakes when any of its channels hears a release.
pub(crate) struct Interest {
    pub(super) hub: Arc<WakeHub>,
    pub(super) channels: Vec<String>,
    pub(super) receivers: Vec<watch::Receiver<u64>>,
}

impl Interest {
    /// Marks every generation seen so far: [`released`](Self::released) waits for news.
    pub(crate) fn mark_seen(&mut self) {
        for rx in &mut self.receivers {
            rx.mark_unchanged();
        }
    }

    /// Resolves when a release was heard since the last [`mark_seen`](Self::mark_seen).
    /// Subscriptions that failed before are made again meanwhile.
    pub(crate) async fn released(&mut self) {
        self.hub.repair();
        let waits = self.receivers.iter_mut().map(|rx| Box::pin(rx.changed()));
        let _ = futures_util::future::select_all(waits).await;
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.hub.release_interest(&self.channels);
    }
}
