//! Meeting points between a test and the handlers or tasks it drives.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::NO_HANG;

/// Awaits `future` or panics after [`NO_HANG`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A gate handlers wait at until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(watch::Sender::new(false)))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A signal a handler sends when it has started.
#[derive(Clone, Default)]
pub struct Signal(Arc<Notify>);

impl Signal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Waits for the signal (panics after [`NO_HANG`]).
    pub async fn wait(&self) {
        within("signal", self.0.notified()).await;
    }
}

/// Whether a handler's future was dropped (cancelled): the handler holds a [`DropFlag`]
/// from [`Dropped::flag`], the test checks or awaits the `Dropped`.
#[derive(Clone)]
pub struct Dropped(Arc<watch::Sender<bool>>);

impl Default for Dropped {
    fn default() -> Self {
        Dropped(Arc::new(watch::Sender::new(false)))
    }
}

impl Dropped {
    /// A flag that marks this as dropped when it is dropped itself.
    pub fn flag(&self) -> DropFlag {
        DropFlag(self.clone())
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until a flag was dropped (panics after [`NO_HANG`]).
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        within("the handler to be dropped", rx.wait_for(|dropped| *dropped))
            .await
            .expect("the sender lives in self");
    }
}

/// Marks its [`Dropped`] when dropped.
pub struct DropFlag(Dropped);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.0.send_replace(true);
    }
}
