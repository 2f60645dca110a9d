//! Skipping nodes that stopped answering, and taking them back once they answer.
//!
//! A node that times out, refuses or drops connections is skipped: its calls fail at once
//! (a "no" vote), so a frozen node costs neither a pile of requests on a socket nobody
//! reads nor the work of tracking them, and a down node no connection attempt per
//! operation. One probe loop per skipped node, run by the engine's background task, sends a
//! `PING` (bounded by the node timeout) right away and then once per node timeout; the
//! first answer puts the node back in use. Health checks still query skipped nodes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::client::Shared;
use super::node::NodeError;

impl Shared {
    /// Notes that node `index` failed with `error`: when it did not answer at all, it is
    /// skipped until a probe gets an answer.
    pub(crate) fn node_failed(self: &Arc<Self>, index: usize, error: &NodeError) {
        if !error.is_unresponsive() || !self.nodes[index].skip() {
            return;
        }
        tracing::warn!(
            node = index,
            url = %self.nodes[index].url,
            %error,
            "Redlock node skipped until it answers a probe"
        );
        let shared = Arc::downgrade(self);
        let pause = self.config.node_timeout.max(Duration::from_millis(10));
        self.janitor.run(recover(shared, index, pause));
    }
}

/// Probes node `index` until it answers (then it is used again) or the engine is gone.
async fn recover(shared: Weak<Shared>, index: usize, pause: Duration) {
    loop {
        let Some(engine) = shared.upgrade() else {
            return;
        };
        let node = &engine.nodes[index];
        if node.probe().await {
            tracing::info!(node = index, url = %node.url, "Redlock node answers again");
            return;
        }
        drop(engine);
        tokio::time::sleep(pause).await;
    }
}
