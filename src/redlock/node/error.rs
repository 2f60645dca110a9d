//! Why a node did not answer usefully.

use std::time::Duration;

use redis::RedisError;

/// Why a node did not answer usefully. Counts as a "no" vote.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("unexpected reply: {0}")]
    Reply(&'static str),
    #[error("skipped: it stopped answering and has not answered a probe since")]
    Skipped,
    #[error("passed by: {0} of its replies are overdue; it is used again once it catches up")]
    Behind(usize),
}

impl NodeError {
    /// Whether the node failed to answer at all (as opposed to answering with an error):
    /// a reason to skip it until it answers again.
    pub(crate) fn is_unresponsive(&self) -> bool {
        match self {
            NodeError::Timeout(_) => true,
            NodeError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
            }
            NodeError::Reply(_) | NodeError::Skipped | NodeError::Behind(_) => false,
        }
    }
}
