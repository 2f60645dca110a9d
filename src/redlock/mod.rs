//! The Redlock engine: quorum leases on independent Redis masters. Knows nothing of HTTP.
//!
//! - [`Redlock`] acquires, and [`HeldLock`] is the lease: it is extended by a watchdog while
//!   held, tells when it [ended](HeldLock::ended) (lost or released), and is released on
//!   [`release`](HeldLock::release) or, in the background, when its last clone is dropped.
//! - [`Redlock::shutdown`] releases every lease still held and stops taking new ones.
//! - Every node call is bounded by the node timeout; an error or a timeout is a "no" vote.
//! - Acquisition returns as soon as its outcome is decided and cleans up every node that
//!   said, or may still say, yes.

mod acquire;
mod backlog;
mod breaker;
mod builder;
mod carry;
mod cleanup;
mod client;
mod env;
mod error;
mod fanout;
mod fence_ttl;
mod handoff;
pub(crate) mod health;
mod janitor;
pub(crate) mod json;
mod keys;
mod lease;
mod lifecycle;
mod node;
mod node_url;
mod options;
mod queue;
mod recovery;
mod registry;
mod release;
mod retry;
mod scripts;
mod shutdown;
// The test kit's `sim` drives every fault; without it only `in_memory` uses the nodes.
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub(crate) mod sim;
mod telemetry;
mod timers;
mod token;
mod validity;
mod wake;
mod watchdog;

pub use breaker::{BreakerState, CircuitBreaker};
pub use builder::RedlockBuilder;
pub use client::Redlock;
pub use error::{ConfigError, LockError};
pub use keys::{MAX_KEY_LEN, MAX_KEYS_PER_LOCK};
pub use lease::{HeldLock, ReleaseOutcome};
pub use node_url::NodeUrl;
pub use options::LockOptions;
pub use retry::RetryPolicy;
