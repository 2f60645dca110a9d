//! Errors of the engine: [`LockError`] for lock operations, [`ConfigError`] for setup.

use std::time::Duration;

/// Why a lock operation did not succeed.
///
/// Messages never contain lock keys, tokens or node passwords, so they are safe to log and
/// to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Someone else holds the lock (on enough nodes that no quorum is possible for us).
    #[error("the lock is held by someone else; retry after {} ms", retry_after.as_millis())]
    #[non_exhaustive]
    Contended {
        /// When it makes sense to try again: the holder's remaining time to live as
        /// reported by the nodes (rounded up, never zero).
        retry_after: Duration,
    },
    /// Too few nodes answered to ever form a quorum (nodes down, timed out, or the circuit
    /// breaker is open).
    #[error("lock quorum unavailable: {reachable} of {total} nodes reachable, {required} required{}",
        if *circuit_open { " (circuit breaker open)" } else { "" })]
    #[non_exhaustive]
    Unavailable {
        /// Nodes that answered (or might still have answered) when the outcome was decided.
        reachable: usize,
        /// Nodes configured.
        total: usize,
        /// Nodes needed for a quorum (`total / 2 + 1`).
        required: usize,
        /// A suggested wait before trying again.
        retry_after: Duration,
        /// `true` when the circuit breaker failed this fast, without asking the nodes.
        circuit_open: bool,
    },
    /// A quorum agreed, but acquiring took so long that no validity time was left.
    #[error("the lock validity was used up during acquisition")]
    Expired,
    /// The lease can no longer be guaranteed: it expired, was released, or a quorum of nodes
    /// no longer holds our token.
    #[error("the lock lease was lost")]
    Lost,
    /// The key is empty or too long.
    #[error("invalid lock key: {reason}")]
    #[non_exhaustive]
    InvalidKey {
        /// What is wrong with the key (never the key itself).
        reason: String,
    },
    /// The per-call options are unusable (e.g. a ttl too small for the clock drift).
    #[error("invalid lock options: {reason}")]
    #[non_exhaustive]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// The engine was shut down ([`Redlock::shutdown`](crate::Redlock::shutdown)): it takes
    /// no new locks. Acquisitions still waiting when it shut down fail with this too.
    #[error("the lock engine is shut down")]
    ShutDown,
}

impl LockError {
    pub(crate) fn unavailable(reachable: usize, total: usize, required: usize) -> LockError {
        LockError::Unavailable {
            reachable,
            total,
            required,
            retry_after: Duration::from_secs(1),
            circuit_open: false,
        }
    }

    /// `true` for [`LockError::Contended`]: someone else holds the lock.
    pub fn is_contended(&self) -> bool {
        matches!(self, LockError::Contended { .. })
    }

    /// `true` for [`LockError::Unavailable`]: the quorum could not be reached.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LockError::Unavailable { .. })
    }

    /// `true` for [`LockError::ShutDown`]: the engine was shut down.
    pub fn is_shut_down(&self) -> bool {
        matches!(self, LockError::ShutDown)
    }

    /// A suggested wait before retrying, for the errors where retrying makes sense.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LockError::Contended { retry_after } | LockError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            LockError::Expired => Some(Duration::from_millis(1)),
            _ => None,
        }
    }
}

/// A configuration mistake found by [`RedlockBuilder::build`](crate::RedlockBuilder::build)
/// or [`Redlock::from_env`](crate::Redlock::from_env).
///
/// Node URLs are shown with their password replaced by `***`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No node URL was given.
    #[error(
        "no Redis nodes configured: give at least one node URL (3 or 5 independent masters recommended)"
    )]
    NoNodes,
    /// A node URL could not be parsed.
    #[error("node {index} URL `{url}` is invalid: {reason}")]
    #[non_exhaustive]
    InvalidNodeUrl {
        /// Position of the URL in the list (0-based).
        index: usize,
        /// The URL with any password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The same node was given twice; Redlock needs independent nodes.
    #[error("node {index} URL `{url}` repeats an earlier node; Redlock needs independent nodes")]
    #[non_exhaustive]
    DuplicateNode {
        /// Position of the repeated URL.
        index: usize,
        /// The URL with any password redacted.
        url: String,
    },
    /// The ttl is too small (or too large) to leave any validity after the drift allowance.
    #[error("ttl of {ttl:?} is unusable: {reason}")]
    #[non_exhaustive]
    InvalidTtl {
        /// The ttl given.
        ttl: Duration,
        /// What is wrong.
        reason: String,
    },
    /// The clock drift factor is not a finite number in `[0, 0.5)`.
    #[error("drift factor {0} must be a finite number in [0, 0.5)")]
    InvalidDriftFactor(f64),
    /// The per-node timeout is zero or not smaller than the ttl.
    #[error("node timeout of {timeout:?} is unusable: {reason}")]
    #[non_exhaustive]
    InvalidNodeTimeout {
        /// The timeout given.
        timeout: Duration,
        /// What is wrong.
        reason: String,
    },
    /// The node backlog is zero: every node would be passed by at once.
    #[error("node backlog of {0} is unusable: it must be at least 1")]
    InvalidNodeBacklog(usize),
    /// [`pool_size`](crate::RedlockBuilder::pool_size) was 0 or more than 64.
    #[error("pool size of {0} is unusable: it must be 1 to 64 connections per node")]
    InvalidPoolSize(usize),
    /// [`in_memory`](crate::RedlockBuilder::in_memory) was given 0 or more than 64 nodes,
    /// or node URLs too.
    #[error("in-memory nodes are unusable: {0}")]
    InvalidInMemory(String),
    /// The key prefix is too long or contains characters that make keys ambiguous.
    #[error("key prefix is invalid: {0}")]
    InvalidKeyPrefix(String),
    /// An environment variable could not be used.
    #[error("environment variable {var} is invalid: {reason}")]
    #[non_exhaustive]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// What is wrong (never the variable's raw value when it may hold a password).
        reason: String,
    },
    /// The retry policy is unusable.
    #[error("retry policy is invalid: {0}")]
    InvalidRetry(String),
    /// [`build`](crate::RedlockBuilder::build) was called outside a Tokio runtime: the
    /// engine's connections and background task need one.
    #[error(
        "no Tokio runtime: build the engine from within one (e.g. under #[tokio::main]), with the time driver enabled"
    )]
    NoRuntime,
}
