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

/// The breaker's leave for one attempt, from [`Breaker::admit`]. Its outcome goes back
/// through [`record`](Ticket::record). The half-open probe's ticket dropped without an
/// outcome (its attempt was cancelled: a client disconnect, a `timeout`, a `select!`) gives
/// the probe slot back: the breaker is open again with a probe allowed at once, instead of
/// staying half-open — failing every attempt — for good.
#[must_use = "an attempt's outcome goes back through `record`"]
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Ticket<'_> {
    /// Whether this attempt is the half-open probe.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records the attempt's outcome: `unavailable` when no quorum could be reached.
    /// Returns `true` when this call opened the breaker.
    pub(crate) fn record(mut self, unavailable: bool) -> bool {
        let probe = std::mem::take(&mut self.probe);
        self.breaker.record(probe, unavailable)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probe_abandoned();
        }
    }
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

    /// Lets an attempt go (`Ok`, maybe as the half-open probe), or says to fail fast and
    /// retry after the returned time.
    pub(crate) fn admit(&self) -> Result<Ticket<'_>, Duration> {
        let ticket = |probe| Ticket {
            breaker: self,
            probe,
        };
        if self.policy.is_none() {
            return Ok(ticket(false));
        }
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(ticket(false)),
            OPEN => {
                let until = self.open_until.load(Ordering::Acquire);
                let now = self.now();
                if now < until {
                    return Err(Duration::from_nanos(until - now));
                }
                // Cool-down over: exactly one caller becomes the probe.
                match self.state.compare_exchange(
                    OPEN,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Ok(ticket(true)),
                    Err(_) => Err(Duration::from_millis(10)),
                }
            }
            _ => Err(Duration::from_millis(10)),
        }
    }

    /// Records an attempt's outcome (`probe`: it was the half-open probe). Returns `true`
    /// when this call opened the breaker.
    fn record(&self, probe: bool, unavailable: bool) -> bool {
        let Some(policy) = self.policy else {
            return false;
        };
        if !unavailable {
            self.consecutive.store(0, Ordering::Release);
            if probe || self.state.load(Ordering::Acquire) != CLOSED {
                self.state.store(CLOSED, Ordering::Release);
            }
            return false;
        }
        let failures = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if probe || failures >= policy.failures {
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

    /// The probe went without an outcome: open again, with the next attempt as the probe.
    /// Only from half-open: if another attempt's outcome moved the breaker meanwhile, that
    /// outcome stands.
    fn probe_abandoned(&self) {
        // The cool-down is over already: the deadline goes first, then the state that
        // makes anyone read it.
        self.open_until.store(self.now(), Ordering::Release);
        let _ = self
            .state
            .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(b: &Breaker) -> Ticket<'_> {
        let ticket = b.admit().expect("admitted");
        assert!(!ticket.is_probe());
        ticket
    }

    fn probe(b: &Breaker) -> Ticket<'_> {
        let ticket = b.admit().expect("admitted");
        assert!(ticket.is_probe());
        ticket
    }

    /// A breaker of `failures` opened by as many unreachable quorums, its 1 s cool-down over.
    async fn opened_and_cooled_down(failures: u32) -> Breaker {
        let b = Breaker::new(Some(CircuitBreaker::new(failures, Duration::from_secs(1))));
        for _ in 0..failures {
            allowed(&b).record(true);
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1001)).await;
        b
    }

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_probes_and_closes() {
        let b = Breaker::new(Some(CircuitBreaker::new(3, Duration::from_secs(1))));
        for _ in 0..2 {
            assert!(!allowed(&b).record(true));
        }
        assert!(allowed(&b).record(true), "third failure opens");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Err(d) if d <= Duration::from_secs(1)));

        tokio::time::advance(Duration::from_millis(1001)).await;
        let first = probe(&b);
        assert!(b.admit().is_err(), "one probe at a time");
        assert!(first.record(true), "failed probe re-opens");
        assert_eq!(b.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_millis(1001)).await;
        probe(&b).record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        allowed(&b).record(false);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_an_outcome_gives_its_slot_back() {
        let b = opened_and_cooled_down(1).await;
        let abandoned = probe(&b);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop(abandoned);
        // Open, but the cool-down is not served again: the next attempt probes at once.
        assert_eq!(b.state(), BreakerState::Open);
        let next = probe(&b);
        assert!(b.admit().is_err(), "still one probe at a time");
        next.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_leaves_a_later_outcome_alone() {
        let b = opened_and_cooled_down(1).await;
        let abandoned = probe(&b);
        // An attempt admitted before the breaker opened succeeds meanwhile: closed.
        b.record(false, false);
        drop(abandoned);
        assert_eq!(b.state(), BreakerState::Closed);
        // A non-probe ticket dropped without an outcome changes nothing.
        drop(allowed(&b));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_always_allows() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            allowed(&b).record(true);
        }
        assert_eq!(b.state(), BreakerState::Disabled);
    }
}
