//! Operations: health and readiness reports, and the check of node settings that break
//! locks. Uses `acquire/` (the health check's test lock), the engine's state, `node/` and
//! `core/`.

pub(crate) mod health;
pub(crate) mod shutdown;
