//! Skipping nodes that stopped answering, and taking them back once they answer.
//!
//! A node that times out, refuses or drops connections is checked with a `PING` (bounded by
//! the node timeout, sent behind whatever its connection still carries): a node that answers
//! was only slow (a busy machine can miss a deadline) and stays in use. One that does not is
//! skipped: its calls fail at once (a "no" vote), so a frozen node costs neither a pile of
//! requests on a socket nobody reads nor the work of tracking them, and a down node no
//! connection attempt per operation. The engine's background task then probes it once per
//! node timeout; the first answer puts it back in use. Health checks still query skipped
//! nodes, and releases and fencing write-backs are still sent to them, on the connection
//! they stopped answering on (see [`node`](super)). Skipped nodes spend the failure
//! budget that lagging nodes passed by share (see [`backlog`](super::backlog)).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::error::NodeError;
use super::set::NodeSet;

/// Notes that node `index` failed with `error`: when it did not answer at all, it is
/// checked, and skipped until it answers if the check gets no answer either.
pub(crate) fn node_failed(nodes: &Arc<NodeSet>, index: usize, error: &NodeError) {
    let node = &nodes[index];
    if !error.is_unresponsive() || node.is_skipped() || !node.begin_check() {
        return;
    }
    let pause = nodes.timeout().max(Duration::from_millis(10));
    // Detached: the probes last as long as the node is down, and shutdown need not wait.
    nodes.janitor.run_detached(check(
        Arc::downgrade(nodes),
        index,
        pause,
        error.to_string(),
    ));
}

/// Logs a node failure with the node's index and redacted URL (see [`node_failed`]).
pub(crate) fn warn_node(nodes: &Arc<NodeSet>, index: usize, op: &'static str, error: &NodeError) {
    if matches!(error, NodeError::Skipped | NodeError::Behind(_)) {
        return; // said once, when the node was first skipped or fell behind
    }
    tracing::warn!(
        node = index,
        url = %nodes[index].url,
        op,
        %error,
        "Redlock node did not answer"
    );
    node_failed(nodes, index, error);
}

/// Confirms that node `index` stopped answering (skipping it) and probes it until it
/// answers again, or until the engine is gone.
async fn check(shared: Weak<NodeSet>, index: usize, pause: Duration, error: String) {
    let mut skipped = false;
    loop {
        let Some(engine) = shared.upgrade() else {
            return;
        };
        let node = &engine[index];
        if node.probe().await {
            if skipped {
                tracing::info!(node = index, url = %node.url, "Redlock node answers again");
            }
            node.end_check();
            return;
        }
        if !skipped {
            skipped = true;
            node.skip();
            tracing::warn!(
                node = index,
                url = %node.url,
                %error,
                "Redlock node skipped until it answers a probe"
            );
        }
        drop(engine);
        tokio::time::sleep(pause).await;
    }
}
