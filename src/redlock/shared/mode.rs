//! [`LeaseMode`]: which kind of lease an acquisition takes.

use super::keys;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::{LockKeys, Shape};

/// Most permits one key may have ([`LeaseMode::Permit`]).
pub const MAX_PERMITS: u32 = 256;

/// Which kind of lease an acquisition takes (see the README's *Shared leases*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LeaseMode {
    /// One holder at a time ([`Redlock::acquire`](crate::Redlock::acquire)).
    #[default]
    Exclusive,
    /// Shared with other readers; excludes writers and exclusive leases.
    Read,
    /// Excludes readers, writers and exclusive leases; waiting, it blocks new readers.
    Write,
    /// One of `n` permits: at most `n` holders of the key at once.
    Permit(u32),
}

impl LeaseMode {
    /// The key set of a lease of this mode on `key`.
    pub(crate) fn keys(self, prefix: &str, key: &str) -> Result<LockKeys, LockError> {
        match self {
            LeaseMode::Exclusive => LockKeys::new(prefix, [key]),
            LeaseMode::Read => keys::read_write(prefix, key, false),
            LeaseMode::Write => keys::read_write(prefix, key, true),
            LeaseMode::Permit(n) if n == 0 || n > MAX_PERMITS => Err(LockError::InvalidOptions {
                reason: format!("{n} permits: between 1 and {MAX_PERMITS} are allowed"),
            }),
            LeaseMode::Permit(n) => keys::permits(prefix, key, n),
        }
    }
}

/// Refuses what a key set's shape cannot do: a fencing token for a reader or a permit
/// (never silently off), and read/write leases on simulated nodes (which run only the
/// exclusive scripts).
pub(crate) fn check_shape(
    keys: &LockKeys,
    fencing: bool,
    in_memory: bool,
) -> Result<(), LockError> {
    let refuse = |reason: &str| {
        Err(LockError::InvalidOptions {
            reason: reason.to_owned(),
        })
    };
    match keys.shape {
        Shape::Read { .. } | Shape::Write { .. } if in_memory => refuse(
            "read/write leases are not simulated: in-memory nodes run only the exclusive \
             scripts (permits work)",
        ),
        Shape::Read { .. } | Shape::Permits { .. } if fencing => refuse(
            "read leases and permits carry no fencing token; acquire them with \
             LockOptions::fencing(false)",
        ),
        _ => Ok(()),
    }
}
