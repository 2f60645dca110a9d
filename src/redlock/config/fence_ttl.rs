//! How long a fencing counter outlives the last lock on its key.
//!
//! A fencing counter (`{prefix}{{key}}:fence`) is one key per locked resource. Without an
//! expiry, every order id ever locked would leave one key on every node for good. So every
//! fenced acquisition gives the counters of its keys an expiry of `fence_ttl` (the
//! acquire script on the nodes that said yes, the fencing write-back on every node it
//! reaches), refreshed on each use and never shortened (a counter from before this expiry
//! existed gets one on its next use).
//!
//! ## What stays guaranteed
//!
//! A counter disappears only after `fence_ttl` in which no fenced acquisition of its key
//! touched it. So, with the conditions of the write-back (see `sync_fence` in
//! [`acquire`](super::acquire)): a fenced acquisition that starts less than `fence_ttl`
//! after the previous one's write-back gets a larger token. Tokens of one key strictly
//! increase for as long as the key is locked at least once per `fence_ttl` — and the
//! builder requires `fence_ttl` to be at least [`FLOOR_FACTOR`] times the ttl and the
//! builder's `max_hold`, so that it is far longer than any lease it issues (default 7 days).
//!
//! ## The assumption, honestly
//!
//! After a quiet `fence_ttl` the counters are gone and the next token starts again from 1.
//! A resource that remembers a token for longer than `fence_ttl` after the last lock on
//! its key would then see a smaller token: it would refuse the new holder's writes (and
//! would accept a write of a holder paused for longer than `fence_ttl` with its old
//! token). Choose `fence_ttl` longer than any resource keeps the last token it accepted,
//! and than any delay you accept between issuing a token and presenting it. Further
//! assumptions: a lease held past `fence_ttl` (a per-call `max_hold`, or none, with the
//! watchdog extending it for longer than `fence_ttl`) is not covered — extending a lease
//! does not refresh the counters; the nodes' clocks (Redis expiries follow the wall clock)
//! do not jump forward by a large part of `fence_ttl`; and no node evicts keys with an
//! expiry (`maxmemory-policy noeviction`, see
//! [`Redlock::check_config`](crate::Redlock::check_config)).

use std::time::Duration;

use crate::redlock::core::error::ConfigError;

/// Default `fence_ttl`: 7 days.
pub(crate) const DEFAULT_FENCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `fence_ttl` must be at least this many times the lock ttl and `max_hold`.
pub(crate) const FLOOR_FACTOR: u32 = 10;

/// The longest `fence_ttl` accepted: about 10 years (Redis expiries are milliseconds).
pub(crate) const MAX_FENCE_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);

/// The `fence_ttl` to use: the one given, checked, or else the default raised to the floor.
pub(crate) fn resolve(
    given: Option<Duration>,
    ttl: Duration,
    max_hold: Option<Duration>,
) -> Result<Duration, ConfigError> {
    let floor = ttl
        .max(max_hold.unwrap_or(Duration::ZERO))
        .saturating_mul(FLOOR_FACTOR);
    let fence_ttl = given.unwrap_or(DEFAULT_FENCE_TTL.max(floor));
    let invalid = |reason: String| ConfigError::InvalidTtl {
        ttl: fence_ttl,
        reason,
    };
    if fence_ttl < floor {
        return Err(invalid(format!(
            "as the fence ttl it must be at least {FLOOR_FACTOR} times the lock ttl and the \
             max hold ({floor:?})"
        )));
    }
    if fence_ttl > MAX_FENCE_TTL {
        return Err(invalid(format!(
            "as the fence ttl it must be at most {MAX_FENCE_TTL:?}"
        )));
    }
    Ok(fence_ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn default_is_seven_days_raised_to_the_floor() {
        assert_eq!(resolve(None, 10 * S, None), Ok(DEFAULT_FENCE_TTL));
        let long = DEFAULT_FENCE_TTL;
        assert_eq!(resolve(None, 10 * S, Some(long)), Ok(long * FLOOR_FACTOR));
    }

    #[test]
    fn given_values_are_checked() {
        assert_eq!(resolve(Some(100 * S), 10 * S, None), Ok(100 * S));
        assert!(resolve(Some(99 * S), 10 * S, None).is_err());
        assert!(resolve(Some(100 * S), S, Some(11 * S)).is_err());
        assert!(resolve(Some(MAX_FENCE_TTL + S), S, None).is_err());
    }
}
