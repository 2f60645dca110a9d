//! The engine's background work: its [`lifecycle`] (taking locks, or shutting down, and
//! the work still under way) and the [`janitor`] that runs what outlives a caller (late
//! replies, cleanups). Uses nothing else of the engine.

pub(crate) mod janitor;
pub(crate) mod lifecycle;
