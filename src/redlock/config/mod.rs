//! What can be configured, checked before use: per-call [`options`], the [`retry`]
//! policy, node URLs ([`node_url`]), the fencing counters' expiry ([`fence_ttl`]) and the
//! engine-wide [`settings`]. Uses only `core/`. The builder (`builder/`) fills these in.

pub(crate) mod fence_ttl;
pub(crate) mod node_url;
pub(crate) mod options;
pub(crate) mod retry;
pub(crate) mod settings;
