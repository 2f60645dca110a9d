//! The engine's vocabulary, without I/O: lock keys and their layout, tokens, validity
//! arithmetic, the Lua scripts, the errors, metrics/tracing helpers and a small JSON
//! writer. Everything else uses it; it uses nothing of the engine.

pub(crate) mod error;
pub(crate) mod json;
pub(crate) mod keys;
pub(crate) mod script;
pub(crate) mod scripts;
pub(crate) mod shared_scripts;
pub(crate) mod slot;
pub(crate) mod telemetry;
pub(crate) mod token;
pub(crate) mod validity;
