//! The layer's policies: what to do when a lease is lost ([`OnLost`]) and when it is
//! released ([`Release`]).

/// What to do when the lease is lost while the inner service runs (a quorum of nodes
/// became unreachable or the lease ran out).
///
/// With [`Cancel`](OnLost::Cancel) the handler is dropped wherever it is — maybe halfway
/// through a side effect (a row written, a payment sent) — and the client gets a `503` it
/// may retry. Make such handlers safe to run again: an idempotency key from the client,
/// and the lease's fencing token passed to the store so that it refuses a stale holder's
/// writes. Loss is checked before the handler's answer is accepted: an answer given after
/// the loss becomes the `503` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLost {
    /// Drop the inner future (it stops at its next `.await`) and answer
    /// `503 Service Unavailable`, also when it finished after the lease was lost. The
    /// default.
    #[default]
    Cancel,
    /// Let the inner future finish; it can watch [`HeldLock::lost`](crate::HeldLock::lost)
    /// itself.
    Continue,
}

/// When the lease is released after the inner service has answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Release {
    /// Release, and wait for a quorum to confirm, before the response is returned (or, with
    /// [`hold_until_body_end`](super::RedlockLayer::hold_until_body_end), before the body's end is
    /// signalled): the client's next request finds the lock free. The default.
    #[default]
    BeforeResponse,
    /// Return the response at once and release on a background task: one round trip less
    /// of latency, but an immediate retry may still see `423`.
    InBackground,
}
