//! Shutdown: give every lease back before the process exits (see
//! [`Redlock::shutdown`](crate::Redlock::shutdown)).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::redlock::engine::Engine;

/// How many node timeouts shutdown waits at most: one for the releases' quorum, one for a
/// carried-over lease's swap before it, one for the stragglers' replies, one for a
/// hand-off's fresh token released after its own stragglers.
const NODE_TIMEOUTS: u32 = 4;

/// Releases every lease and stops taking new ones, bounded by [`NODE_TIMEOUTS`].
pub(crate) async fn shutdown(engine: &Arc<Engine>) {
    engine.lifecycle().close();
    let leases = engine.leases.live();
    let count = leases.len();
    let bound = engine.nodes().timeout().saturating_mul(NODE_TIMEOUTS);
    let work = async {
        join_all(leases.iter().map(|lease| lease.end())).await;
        engine.lifecycle().idle().await;
    };
    match tokio::time::timeout(bound, work).await {
        Ok(()) => tracing::info!(leases = count, "Redlock engine shut down"),
        Err(_) => tracing::warn!(
            leases = count,
            pending = engine.lifecycle().busy(),
            bound_ms = millis(bound),
            "Redlock engine shut down before every release was confirmed; \
                 what is left expires with its ttl"
        ),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
