//! Background completion without a task per operation: one long-lived task per engine
//! polls the stragglers of decided fan-outs (late releases, cleanups) to their end.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// A piece of background work; each is bounded by the node timeout.
pub(crate) type Chore = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Hands chores to the engine's background task (or, if that task is gone — its runtime
/// shut down — to a task of the current runtime).
pub(crate) struct Janitor {
    chores: mpsc::UnboundedSender<Chore>,
}

impl Janitor {
    /// Starts the background task on the current runtime.
    pub(crate) fn start() -> Janitor {
        let (chores, mut incoming) = mpsc::unbounded_channel::<Chore>();
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
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
        Janitor { chores }
    }

    /// Runs `chore` in the background.
    pub(crate) fn run(&self, chore: impl Future<Output = ()> + Send + 'static) {
        if let Err(mpsc::error::SendError(chore)) = self.chores.send(Box::pin(chore))
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(chore);
        }
    }
}
