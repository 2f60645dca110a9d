//! Validity arithmetic: `validity = ttl − elapsed − drift`, all saturating.

use std::time::Duration;

/// Fixed part of the drift allowance (Redis expires keys with up to ~1 ms of granularity).
pub(crate) const DRIFT_FLOOR: Duration = Duration::from_millis(2);

/// Smallest ttl accepted.
pub(crate) const MIN_TTL: Duration = Duration::from_millis(10);

/// Largest ttl accepted (Redis `PX` and our millisecond arithmetic stay far from overflow).
pub(crate) const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Clock drift allowance for a lease of `ttl`: `drift_factor · ttl + 2 ms`.
pub(crate) fn drift(ttl: Duration, drift_factor: f64) -> Duration {
    let scaled =
        Duration::try_from_secs_f64(ttl.as_secs_f64() * drift_factor).unwrap_or(Duration::MAX);
    scaled.saturating_add(DRIFT_FLOOR)
}

/// Remaining validity after `elapsed`, or `None` when nothing is left.
pub(crate) fn validity(ttl: Duration, elapsed: Duration, drift: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed)
        .and_then(|left| left.checked_sub(drift))
        .filter(|v| !v.is_zero())
}

/// Checks that a ttl leaves validity after the drift allowance.
pub(crate) fn check_ttl(ttl: Duration, drift_factor: f64) -> Result<(), String> {
    if ttl < MIN_TTL {
        return Err(format!("must be at least {} ms", MIN_TTL.as_millis()));
    }
    if ttl > MAX_TTL {
        return Err("must be at most 365 days".to_owned());
    }
    let drift = drift(ttl, drift_factor);
    if ttl <= drift.saturating_mul(2) {
        return Err(format!(
            "leaves too little validity after the clock drift allowance of {drift:?}"
        ));
    }
    Ok(())
}

/// Node timeouts a fenced acquisition must be able to spend and still hold a usable lease:
/// the acquire fan-out and the fencing write-back (each bounded by one node timeout) run
/// before the validity is known, and what is left must cover at least one more node timeout,
/// for the watchdog's first extension (itself bounded by one node timeout) to land.
pub(crate) const FENCED_ROUNDS: u32 = 3;

/// Checks that, with fencing, `FENCED_ROUNDS` node timeouts fit in the validity a lease of
/// `ttl` starts with (`ttl − drift`): otherwise a slow but working quorum could acquire,
/// write the token back, and be left with no validity, or none to extend it in.
pub(crate) fn check_fenced_timeout(
    ttl: Duration,
    drift_factor: f64,
    node_timeout: Duration,
) -> Result<(), String> {
    let usable = ttl.saturating_sub(drift(ttl, drift_factor));
    let needed = node_timeout.saturating_mul(FENCED_ROUNDS);
    if needed < usable {
        return Ok(());
    }
    Err(format!(
        "with fencing, {FENCED_ROUNDS} node timeouts ({needed:?}: the acquisition, the fencing \
         write-back, and one extension) must fit in the ttl of {ttl:?} less the clock drift \
         allowance ({usable:?}); use a node timeout below {:?} or a longer ttl",
        usable / FENCED_ROUNDS
    ))
}

/// Milliseconds for Redis, rounded up so that a lease is never shorter on the node than
/// locally assumed.
pub(crate) fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn drift_is_factor_plus_floor() {
        assert_eq!(drift(10_000 * MS, 0.01), 102 * MS);
        assert_eq!(drift(10_000 * MS, 0.0), 2 * MS);
        assert_eq!(drift(Duration::MAX, 10.0), Duration::MAX);
    }

    #[test]
    fn validity_saturates() {
        assert_eq!(validity(1000 * MS, 100 * MS, 12 * MS), Some(888 * MS));
        assert_eq!(validity(1000 * MS, 988 * MS, 12 * MS), None);
        assert_eq!(validity(1000 * MS, 5000 * MS, 12 * MS), None);
        assert_eq!(validity(1000 * MS, Duration::MAX, Duration::MAX), None);
    }

    #[test]
    fn ttl_checks() {
        assert!(check_ttl(Duration::ZERO, 0.01).is_err());
        assert!(check_ttl(5 * MS, 0.01).is_err());
        assert!(check_ttl(10 * MS, 0.01).is_ok());
        assert!(check_ttl(100 * MS, 0.49).is_err());
        assert!(check_ttl(Duration::MAX, 0.01).is_err());
    }

    #[test]
    fn fenced_timeouts_fit_three_times_in_the_validity() {
        // 1 s less a drift of 12 ms leaves 988 ms: 329 ms fits three times, 330 ms does not.
        assert!(check_fenced_timeout(1000 * MS, 0.01, 329 * MS).is_ok());
        let error = check_fenced_timeout(1000 * MS, 0.01, 330 * MS).unwrap_err();
        assert!(error.contains("fencing"), "{error}");
        assert!(check_fenced_timeout(1000 * MS, 0.01, 500 * MS).is_err());
        assert!(check_fenced_timeout(10 * MS, 0.01, Duration::MAX).is_err());
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(millis_ceil(2 * MS), 2);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }
}
