//! [`Redlock::shutdown`]: give every lease back before the process exits.

use std::time::Duration;

use futures_util::future::join_all;

use super::client::Redlock;

/// How many node timeouts shutdown waits at most: one for the releases' quorum, one for a
/// carried-over lease's swap before it, one for the stragglers' replies, one for a
/// hand-off's fresh token released after its own stragglers.
const NODE_TIMEOUTS: u32 = 4;

impl Redlock {
    /// Releases every lease this engine holds and stops taking new ones: call it when the
    /// service stops, so that other instances get the keys at once instead of after a ttl.
    ///
    /// In order:
    /// 1. new acquisitions fail with [`LockError::ShutDown`](crate::LockError::ShutDown),
    ///    and so do the ones still waiting (in a retry loop or behind a local holder);
    /// 2. every lease not yet released is released on the nodes, for all its clones: they
    ///    see [`is_held`](crate::HeldLock::is_held) `== false`, and
    ///    [`ended`](crate::HeldLock::ended) resolves. Nothing is handed on to local waiters;
    /// 3. it waits for the releases still in flight, in the background included (a lease
    ///    dropped just before, the late replies of a quorum already decided).
    ///
    /// Bounded: it returns after at most four node timeouts, whatever the nodes do. What
    /// is left then (nodes that did not answer) expires with its ttl. Calling it again is
    /// harmless. Clones of the engine share its state: one shutdown shuts them all down.
    ///
    /// With axum, after the server stopped taking requests:
    ///
    /// ```no_run
    /// # async fn serve(
    /// #     redlock: tower_redlock::Redlock,
    /// #     app: axum::Router,
    /// #     listener: tokio::net::TcpListener,
    /// # ) -> std::io::Result<()> {
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// // In-flight requests are done (their leases released); give back what is left,
    /// // e.g. leases held by background jobs.
    /// redlock.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.lifecycle.close();
        let leases = shared.leases.live();
        let count = leases.len();
        let bound = shared.config.node_timeout.saturating_mul(NODE_TIMEOUTS);
        let work = async {
            join_all(leases.iter().map(|lease| lease.end())).await;
            shared.lifecycle.idle().await;
        };
        match tokio::time::timeout(bound, work).await {
            Ok(()) => tracing::info!(leases = count, "Redlock engine shut down"),
            Err(_) => tracing::warn!(
                leases = count,
                pending = shared.lifecycle.busy(),
                bound_ms = millis(bound),
                "Redlock engine shut down before every release was confirmed; \
                 what is left expires with its ttl"
            ),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
