//! # tower-redlock
//!
//! [Redlock](https://redis.io/docs/latest/develop/use/patterns/distributed-locks/) distributed
//! locking for Tower and Axum services.
//!
//! - [`Redlock`]: a standalone engine. It takes a **quorum lease** (`N/2 + 1` of `N`
//!   independent Redis masters), keeps it alive with a watchdog, tells you when it is lost,
//!   and releases it — usable from any async code.
//! - [`layer::RedlockLayer`]: Tower middleware that derives a lock key from each
//!   request, holds the lease while the inner service runs and answers `423 Locked` / `503`
//!   with `Retry-After` when it cannot.
//! - With the `axum` feature: [`HeldLock`] and `Locked<K>` extractors ([`extract`]).
//! - Shared leases: read/write leases ([`Redlock::acquire_read`], [`Redlock::acquire_write`])
//!   and `N` permits per key ([`Redlock::acquire_permit`]), in quorum form too ([`LeaseMode`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_redlock::Redlock;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redlock = Redlock::builder()
//!     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
//!     .ttl(Duration::from_secs(10))
//!     .fencing(true)
//!     .build()
//!     .await?;
//!
//! let token = redlock
//!     .with_lock("invoice:42", async |lock| {
//!         // Only one holder at a time, on every instance of the service. With fencing on,
//!         // each holder gets a larger token: pass it to the store you write to, so that
//!         // it can refuse a holder that lost its lease (see the README's *Fencing tokens*).
//!         lock.fencing_token()
//!     })
//!     .await?;
//! assert!(token.is_some());
//! # Ok(()) }
//! ```
//!
//! ## Where items live
//!
//! - The engine ([`Redlock`], [`HeldLock`], [`LockOptions`], [`LockError`], ...): at the
//!   crate root, and only there.
//! - The middleware: [`layer`] ([`layer::RedlockLayer`], the [`layer::key`] extractors, the
//!   rejection and response types), one module as in tower-http.
//! - Health checks: [`health`]. Axum extractors: [`extract`]. The test kit: `testkit`
//!   (feature `testkit`).
//!
//! Every public item has exactly one path: nothing is re-exported twice.
#![forbid(unsafe_code)]
// Library-only lints (`Cargo.toml`'s `[lints]` hold the rest): in tests, examples and benches,
// whose helper modules are private by nature, `unreachable_pub` would flag every `pub`.
#![warn(unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod health;
pub mod layer;
mod redlock;

#[cfg(feature = "axum")]
pub mod extract;

// The engine's public items (the `pub use` list of `src/redlock/mod.rs`) are public here, at
// the root, and nowhere else: the module itself is private.
pub use redlock::*;

#[cfg(feature = "testkit")]
pub mod testkit;

// Beside `testkit`, not in it: the benches include `src/testkit/mod.rs` on its own.
#[cfg(feature = "testkit")]
#[path = "testkit/sim.rs"]
pub mod sim;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
