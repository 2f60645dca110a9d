//! # tower-redlock
//!
//! [Redlock](https://redis.io/docs/latest/develop/use/patterns/distributed-locks/) distributed
//! locking for Tower and Axum services.
//!
//! - [`Redlock`]: a standalone engine. It takes a **quorum lease** (`N/2 + 1` of `N`
//!   independent Redis masters), keeps it alive with a watchdog, tells you when it is lost,
//!   and releases it — usable from any async code.
//! - [`RedlockLayer`]: Tower middleware that derives a lock key from each
//!   request, holds the lease while the inner service runs and answers `423 Locked` / `503`
//!   with `Retry-After` when it cannot.
//! - With the `axum` feature: [`HeldLock`] and `Locked<K>` extractors ([`extract`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_redlock::Redlock;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redlock = Redlock::builder()
//!     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
//!     .ttl(Duration::from_secs(10))
//!     .build()
//!     .await?;
//!
//! let total = redlock
//!     .with_lock("invoice:42", async |lock| {
//!         // Only one holder at a time, on every instance of the service.
//!         lock.fencing_token()
//!     })
//!     .await?;
//! # let _ = total;
//! # Ok(()) }
//! ```
#![deny(missing_docs, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod health;
pub mod layer;
pub mod redlock;

#[cfg(feature = "axum")]
pub mod extract;

#[cfg(feature = "axum")]
pub use extract::{LockKey, Locked};
pub use layer::{RedlockLayer, key};

pub use redlock::{
    BreakerState, CircuitBreaker, ConfigError, HeldLock, LockError, LockOptions, MAX_KEY_LEN,
    MAX_KEYS_PER_LOCK, NodeUrl, Redlock, RedlockBuilder, ReleaseOutcome, RetryPolicy,
};

#[cfg(feature = "testkit")]
pub mod testkit;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
