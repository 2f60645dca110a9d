//! Circuit breaker: after the quorum was found unreachable repeatedly, fail fast for a
//! cool-down, then let one probe through (half-open) to decide whether to close again.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When the circuit breaker opens and for how long.
///
/// ```
/// use std::time::Duration;
/// use tower_redlock::CircuitBreaker;
///
/// let breaker = CircuitBreaker::new(5, Duration::from_secs(2));
/// assert_eq!(breaker.failure_threshold(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    failures: u32,
    cool_down: Duration,
}

impl Default for CircuitBreaker {
    /// Opens after 5 consecutive unreachable quorums, for 1 s.
    fn default() -> Self {
        CircuitBreaker::new(5, Duration::from_secs(1))
    }
}

impl CircuitBreaker {
    /// Opens after `failures` consecutive [`Unavailable`](crate::LockError::Unavailable)
    /// outcomes (at least 1), and stays open for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        CircuitBreaker {
            failures: failures.max(1),
            cool_down,
        }
    }

    /// Consecutive failures that open the breaker.
    pub fn failure_threshold(&self) -> u32 {
        self.failures
    }

    /// How long the breaker stays open before a probe.
    pub fn cool_down(&self) -> Duration {
        self.cool_down
    }
}

/// The breaker's state, as shown in health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum BreakerState {
    /// Requests flow normally.
    Closed,
    /// Failing fast until the cool-down ends.
    Open,
    /// One probe is deciding whether to close again.
    HalfOpen,
    /// No breaker is configured.
    Disabled,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Lock-free breaker state: one atomic load on the healthy path.
pub(crate) struct Breaker {
    policy: Option<CircuitBreaker>,
    base: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// While open: nanoseconds after `base` when a probe may go.
    open_until: AtomicU64,
}

/// What the breaker allows for one attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as the half-open probe.
    Probe,
    /// Fail fast; retry after this long.
    Rejected(Duration),
}

impl Breaker {
    pub(crate) fn new(policy: Option<CircuitBreaker>) -> Breaker {
        Breaker {
            policy,
            base: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn state(&self) -> BreakerState {
        match (self.policy, self.state.load(Ordering::Acquire)) {
            (None, _) => BreakerState::Disabled,
            (_, CLOSED) => BreakerState::Closed,
            (_, OPEN) => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn admit(&self) -> Admission {
        if self.policy.is_none() {
            return Admission::Allowed;
        }
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Allowed,
            OPEN => {
                let until = self.open_until.load(Ordering::Acquire);
                let now = self.now();
                if now < until {
                    return Admission::Rejected(Duration::from_nanos(until - now));
                }
                // Cool-down over: exactly one caller becomes the probe.
                match self.state.compare_exchange(
                    OPEN,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Admission::Probe,
                    Err(_) => Admission::Rejected(Duration::from_millis(10)),
                }
            }
            _ => Admission::Rejected(Duration::from_millis(10)),
        }
    }

    /// Records an attempt's outcome: `unavailable` when no quorum could be reached.
    /// Returns `true` when this call opened the breaker.
    pub(crate) fn record(&self, admission: &Admission, unavailable: bool) -> bool {
        let Some(policy) = self.policy else {
            return false;
        };
        if !unavailable {
            self.consecutive.store(0, Ordering::Release);
            if *admission == Admission::Probe || self.state.load(Ordering::Acquire) != CLOSED {
                self.state.store(CLOSED, Ordering::Release);
            }
            return false;
        }
        let failures = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if *admission == Admission::Probe || failures >= policy.failures {
            let until = self
                .now()
                .saturating_add(u64::try_from(policy.cool_down.as_nanos()).unwrap_or(u64::MAX));
            self.open_until.store(until, Ordering::Release);
            let previous = self.state.swap(OPEN, Ordering::AcqRel);
            self.consecutive.store(0, Ordering::Release);
            return previous != OPEN;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_probes_and_closes() {
        let b = Breaker::new(Some(CircuitBreaker::new(3, Duration::from_secs(1))));
        for _ in 0..2 {
            let a = b.admit();
            assert_eq!(a, Admission::Allowed);
            assert!(!b.record(&a, true));
        }
        let a = b.admit();
        assert!(b.record(&a, true), "third failure opens");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Rejected(d) if d <= Duration::from_secs(1)));

        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        assert!(
            matches!(b.admit(), Admission::Rejected(_)),
            "one probe at a time"
        );
        assert!(b.record(&probe, true), "failed probe re-opens");
        assert_eq!(b.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        b.record(&probe, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Allowed);
    }

    #[test]
    fn disabled_always_allows() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            let a = b.admit();
            assert_eq!(a, Admission::Allowed);
            b.record(&a, true);
        }
        assert_eq!(b.state(), BreakerState::Disabled);
    }
}
