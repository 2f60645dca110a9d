//! Retry policy: attempts, exponential backoff with a cap, jitter, and an overall deadline.

use std::time::Duration;

use crate::redlock::core::error::ConfigError;

/// How [`Redlock::acquire`](crate::Redlock::acquire) retries while the lock is contended or
/// the quorum is unreachable.
///
/// The delay before attempt `k + 1` is `base_delay · 2^(k-1)`, capped at `max_delay`, then
/// spread by `± jitter` (a fraction). No attempt starts after `deadline` (counted from the
/// first attempt), no sleep follows the last attempt, and a sleep never reaches past the
/// deadline.
///
/// ```
/// use std::time::Duration;
/// use tower_redlock::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .attempts(50)
///     .base_delay(Duration::from_millis(20))
///     .max_delay(Duration::from_millis(500))
///     .jitter(0.3)
///     .deadline(Duration::from_secs(5));
/// assert_eq!(policy.max_attempts(), 50);
/// assert_eq!(RetryPolicy::none().max_attempts(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: f64,
    deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Up to 1000 attempts within 10 s, starting at 10 ms and doubling up to 250 ms, ±50 %.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1000,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(250),
            jitter: 0.5,
            deadline: Some(Duration::from_secs(10)),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no waiting: fail fast.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            deadline: None,
            ..Self::default()
        }
    }

    /// Retry until `deadline` has passed (with the default backoff).
    pub fn until(deadline: Duration) -> Self {
        RetryPolicy {
            attempts: u32::MAX,
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    /// Maximum number of attempts, the first one included (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Delay before the second attempt; it doubles for each further attempt.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Upper bound of the (pre-jitter) delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Random spread of each delay, as a fraction in `[0, 1]` (clamped; NaN counts as 0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// Give up once this much time has passed since the first attempt.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No overall deadline: only the attempt count bounds the retries.
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// The maximum number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The overall deadline, if any.
    pub fn overall_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_delay < self.base_delay {
            return Err(ConfigError::InvalidRetry(format!(
                "max_delay {:?} is smaller than base_delay {:?}",
                self.max_delay, self.base_delay
            )));
        }
        Ok(())
    }

    /// Backoff before attempt `finished + 1`, given `finished ≥ 1` attempts so far, before
    /// jitter. Saturates instead of overflowing.
    pub(crate) fn backoff(&self, finished: u32) -> Duration {
        let exp = finished.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }

    /// Backoff with jitter applied, `unit` being a uniform sample in `[0, 1)`.
    pub(crate) fn delay(&self, finished: u32, unit: f64) -> Duration {
        let base = self.backoff(finished);
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }

    /// What to do after `finished` attempts, `elapsed` after the first began, given the
    /// wait the last failure suggests. `None`: stop now (no sleep after the last attempt).
    pub(crate) fn next_sleep(
        &self,
        finished: u32,
        elapsed: Duration,
        unit: f64,
        hint: Option<Duration>,
    ) -> Option<Duration> {
        if finished >= self.attempts {
            return None;
        }
        let mut sleep = self.delay(finished, unit);
        if let Some(hint) = hint {
            // The holder's remaining time: no point waiting longer than that.
            sleep = sleep.min(hint);
        }
        match self.deadline {
            Some(deadline) => {
                let left = deadline.checked_sub(elapsed)?;
                if sleep >= left { None } else { Some(sleep) }
            }
            None => Some(sleep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_and_caps_without_overflow() {
        let p = RetryPolicy::default()
            .base_delay(10 * MS)
            .max_delay(100 * MS)
            .jitter(0.0);
        assert_eq!(p.backoff(1), 10 * MS);
        assert_eq!(p.backoff(2), 20 * MS);
        assert_eq!(p.backoff(4), 80 * MS);
        assert_eq!(p.backoff(5), 100 * MS);
        assert_eq!(p.backoff(u32::MAX), 100 * MS);
        let huge = RetryPolicy::default()
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        assert_eq!(huge.backoff(40), Duration::MAX);
        assert!(huge.delay(40, 0.99) > Duration::ZERO);
    }

    #[test]
    fn jitter_stays_in_band() {
        let p = RetryPolicy::default()
            .base_delay(100 * MS)
            .max_delay(100 * MS)
            .jitter(0.5);
        assert_eq!(p.delay(1, 0.0), 50 * MS);
        assert_eq!(p.delay(1, 0.5), 100 * MS);
        assert!(p.delay(1, 0.999_999) <= 150 * MS);
        assert_eq!(RetryPolicy::default().jitter(f64::NAN).jitter, 0.0);
    }

    #[test]
    fn zero_delay_works() {
        let p = RetryPolicy::default()
            .base_delay(Duration::ZERO)
            .max_delay(Duration::ZERO)
            .attempts(3)
            .no_deadline();
        assert_eq!(
            p.next_sleep(1, Duration::ZERO, 0.7, None),
            Some(Duration::ZERO)
        );
        assert_eq!(p.next_sleep(3, Duration::ZERO, 0.7, None), None);
    }

    #[test]
    fn no_sleep_after_last_attempt_or_past_deadline() {
        let p = RetryPolicy::default()
            .attempts(3)
            .base_delay(10 * MS)
            .max_delay(10 * MS)
            .jitter(0.0)
            .deadline(100 * MS);
        assert_eq!(p.next_sleep(1, Duration::ZERO, 0.0, None), Some(10 * MS));
        assert_eq!(p.next_sleep(3, Duration::ZERO, 0.0, None), None);
        assert_eq!(p.next_sleep(1, 95 * MS, 0.0, None), None);
        assert_eq!(p.next_sleep(1, 200 * MS, 0.0, None), None);
        assert_eq!(
            p.next_sleep(1, Duration::ZERO, 0.0, Some(3 * MS)),
            Some(3 * MS)
        );
        assert_eq!(
            RetryPolicy::none().next_sleep(1, Duration::ZERO, 0.0, None),
            None
        );
    }

    #[test]
    fn validate_rejects_inverted_bounds() {
        assert!(
            RetryPolicy::default()
                .base_delay(MS * 10)
                .max_delay(MS)
                .validate()
                .is_err()
        );
    }
}
