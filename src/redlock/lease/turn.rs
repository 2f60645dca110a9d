//! [`Turn`]: how a lease hands itself over to the next holder in this process.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{LeaseCore, ReleaseOutcome};
use crate::redlock::core::error::LockError;

/// This process's turn on a lease's keys, held by the lease while it is held: installed by
/// the local line the lease's acquisition queued in (`handover/`), so that the lease never
/// names it. Dropping it passes the turn on with nothing handed over.
pub(crate) trait Turn: Send {
    /// Whether another task of this process waits for the turn.
    fn has_followers(&self) -> bool;

    /// Ends `lease` (held, just marked released) with someone local waiting: hands it over
    /// to the next holder — or releases it when it cannot be handed over — and passes the
    /// turn on. Returns how the lease was released.
    fn hand_over(
        self: Box<Self>,
        lease: Arc<LeaseCore>,
    ) -> BoxFuture<'static, Result<ReleaseOutcome, LockError>>;
}
