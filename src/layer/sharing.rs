//! [`Sharing`]: which lease a layer's request takes — exclusive, read or write by method,
//! or one of `n` permits — and how a refusal is answered.

use std::sync::Arc;

use http::Method;

use super::response::Rejection;
use crate::redlock::{LeaseMode, LockError};

/// How a layer's requests share their key.
#[derive(Debug, Clone, Default)]
pub(crate) enum Sharing {
    /// One request per key at a time.
    #[default]
    Exclusive,
    /// These methods take read leases, every other one a write lease.
    ReadWrite(Arc<[Method]>),
    /// At most `n` requests per key at once.
    Permits(u32),
}

impl Sharing {
    /// The lease a request with `method` takes.
    pub(crate) fn mode(&self, method: &Method) -> LeaseMode {
        match self {
            Sharing::Exclusive => LeaseMode::Exclusive,
            Sharing::ReadWrite(readers) if readers.contains(method) => LeaseMode::Read,
            Sharing::ReadWrite(_) => LeaseMode::Write,
            Sharing::Permits(n) => LeaseMode::Permit(*n),
        }
    }
}

impl Rejection {
    /// The rejection of an acquisition of `mode` that failed with `error`: every permit
    /// taken is [`Rejection::Capacity`] (`429`), anything else [`Rejection::Lock`].
    pub(crate) fn of(error: LockError, mode: LeaseMode) -> Rejection {
        match (error, mode) {
            (LockError::Contended { retry_after }, LeaseMode::Permit(_)) => {
                Rejection::Capacity { retry_after }
            }
            (error, _) => Rejection::Lock(error),
        }
    }
}
