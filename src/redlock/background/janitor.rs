//! Background completion without a task per operation: one long-lived task per engine
//! polls the stragglers of decided fan-outs (late releases, cleanups) to their end.
//!
//! Every chore counts as work under way (see [`lifecycle`](super::lifecycle)) until it
//! ends, so that [`Redlock::shutdown`](crate::Redlock::shutdown) can wait for the
//! releases still in flight; a chore that lasts as long as a node is down (a recovery
//! probe) runs [detached](Janitor::run_detached) instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::lifecycle::Lifecycle;

/// A piece of background work; each is bounded by the node timeout.
pub(crate) type Chore = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Hands chores to the engine's background task (or, if that task is gone — its runtime
/// shut down — to a task of the current runtime).
pub(crate) struct Janitor {
    chores: mpsc::UnboundedSender<Chore>,
    lifecycle: Arc<Lifecycle>,
}

impl Janitor {
    /// Starts the background task on the current runtime; its chores count as `lifecycle`'s
    /// work under way.
    pub(crate) fn start(lifecycle: Arc<Lifecycle>) -> Janitor {
        let (chores, mut incoming) = mpsc::unbounded_channel::<Chore>();
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    chore = incoming.recv() => match chore {
                        Some(chore) => running.push(chore),
                        // The engine is gone: finish what is left, then stop.
                        None => break,
                    },
                    Some(()) = running.next(), if !running.is_empty() => {}
                }
            }
            while running.next().await.is_some() {}
        });
        Janitor { chores, lifecycle }
    }

    /// Runs `chore` in the background; shutdown waits for it.
    pub(crate) fn run(&self, chore: impl Future<Output = ()> + Send + 'static) {
        // Counted from now (before the caller's own guard, if any, drops) until it ends or
        // is dropped.
        let busy = self.lifecycle.enter();
        self.run_detached(async move {
            chore.await;
            drop(busy);
        });
    }

    /// Runs `chore` in the background; shutdown does not wait for it (for chores that last
    /// as long as something outside the engine, e.g. a node being down).
    pub(crate) fn run_detached(&self, chore: impl Future<Output = ()> + Send + 'static) {
        if let Err(mpsc::error::SendError(chore)) = self.chores.send(Box::pin(chore))
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(chore);
        }
    }
}
