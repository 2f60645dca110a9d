//! The Redlock engine: quorum leases on independent Redis masters. Knows nothing of HTTP.
//!
//! - [`Redlock`] acquires, and [`HeldLock`] is the lease: it is extended by a watchdog while
//!   held, tells when it [ended](HeldLock::ended) (lost or released), and is released on
//!   [`release`](HeldLock::release) or, in the background, when its last clone is dropped.
//! - [`Redlock::shutdown`] releases every lease still held and stops taking new ones.
//! - Every node call is bounded by the node timeout; an error or a timeout is a "no" vote.
//! - Acquisition returns as soon as its outcome is decided and cleans up every node that
//!   said, or may still say, yes.
//!
//! # Layout
//!
//! Each folder owns one concern; dependencies point down this list only
//! (`../shared/tools/module-cycles src` checks it):
//!
//! | module | owns |
//! |---|---|
//! | `handle/` | the public handle and its builder (`handle/builder/`): wiring, no logic |
//! | `ops/` | health, settings check, shutdown |
//! | `engine` | the state every handle shares |
//! | `acquire/` | one attempt, its cleanup, retries, fencing write-back, waiting |
//! | `handover/` | local hand-over: per-key lines, hand-off, carried hand-off (one switch) |
//! | `lease/` | a held lease: extension, timers, release, the ending decision |
//! | `shared/` | read/write leases and permits: the safety argument, their node calls |
//! | `wake/` | wake-on-release (pub/sub) |
//! | `node/` | node I/O behind one seam, fan-out, the quorum tally, availability |
//! | `sim/` | simulated nodes (the seam's second implementation) |
//! | `background/`, `config/`, `core/` | background work; settings; keys, tokens, scripts, errors |

mod acquire;
mod background;
mod config;
mod core;
mod engine;
mod handle;
mod handover;
mod lease;
mod node;
pub(crate) mod ops;
// The test kit's `sim` drives every fault; without it only `in_memory` uses the nodes.
mod shared;
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub(crate) mod sim;
mod wake;

pub use self::config::node_url::{NodeKind, NodeUrl};
pub use self::config::options::LockOptions;
pub use self::config::retry::RetryPolicy;
pub use self::core::error::{ConfigError, LockError};
pub(crate) use self::core::json;
pub use self::core::keys::{MAX_KEY_LEN, MAX_KEYS_PER_LOCK};
pub use self::handle::Redlock;
pub use self::handle::builder::RedlockBuilder;
pub use self::lease::{HeldLock, ReleaseOutcome};
pub use self::node::breaker::{BreakerState, CircuitBreaker};
pub use self::shared::{LeaseMode, MAX_PERMITS};
