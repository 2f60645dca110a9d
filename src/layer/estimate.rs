//! [`HoldEstimate`]: how long a layer's requests usually hold their lock, for the
//! `Retry-After` of a `423`.
//!
//! The holder's `PTTL` is not when the lock frees: the watchdog keeps raising it to the
//! full ttl every ttl/3, so it only says when a *crashed* holder would expire. A request
//! that collides with a 1 s payment under a 10 s ttl would be told to come back in 10 s.
//! Instead the layer keeps, per matched route (see [`routes`](super::routes)), an
//! exponentially weighted moving average of how long requests held the lock, from
//! acquisition to the end of the request's lease, and a `423` says that, capped by the
//! holder's remaining time when the engine knows it.
//!
//! Cost: one `Instant::now()` and one atomic compare-and-swap loop when a lease ends; while
//! acquiring, finding the route's entry (a read lock and a scan of the route templates) —
//! no Redis round trip, and one fewer (the holder's `PTTL`) per `423`. It holds no lock state, only a number: a wrong estimate makes a client
//! retry too early (another `423`) or too late, never breaks mutual exclusion.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest sample, as `1 / WINDOW`, once `WINDOW` samples were seen (before,
/// the plain mean of the samples so far).
const WINDOW: u64 = 4;
/// The average lives in the low bits (microseconds), the sample count (saturating at
/// [`WINDOW`]) in the high byte.
const COUNT_SHIFT: u32 = 56;
const AVERAGE_MASK: u64 = (1 << COUNT_SHIFT) - 1;

/// A per-route moving average of hold durations.
#[derive(Debug, Default)]
pub(crate) struct HoldEstimate {
    packed: AtomicU64,
}

impl HoldEstimate {
    /// Adds one observed hold.
    pub(crate) fn record(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros())
            .unwrap_or(u64::MAX)
            .min(AVERAGE_MASK);
        // `fetch_update` retries on contention; the closure never refuses.
        let _ = self
            .packed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let (count, average) = unpack(packed);
                let count = (count + 1).min(WINDOW);
                let average = if sample >= average {
                    average + (sample - average) / count
                } else {
                    average - (average - sample) / count
                };
                Some(count << COUNT_SHIFT | average)
            });
    }

    /// The average hold, once at least one was observed.
    pub(crate) fn get(&self) -> Option<Duration> {
        let (count, average) = unpack(self.packed.load(Ordering::Relaxed));
        (count > 0).then(|| Duration::from_micros(average))
    }
}

fn unpack(packed: u64) -> (u64, u64) {
    (packed >> COUNT_SHIFT, packed & AVERAGE_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_until_a_hold_is_seen() {
        let estimate = HoldEstimate::default();
        assert_eq!(estimate.get(), None);
        estimate.record(ms(1000));
        assert_eq!(estimate.get(), Some(ms(1000)));
    }

    #[test]
    fn mean_while_warming_up_then_moving_average() {
        let estimate = HoldEstimate::default();
        for hold in [100, 200, 300, 400] {
            estimate.record(ms(hold));
        }
        assert_eq!(estimate.get(), Some(ms(250)));
        // The newest hold weighs a quarter.
        estimate.record(ms(1250));
        assert_eq!(estimate.get(), Some(ms(500)));
        // Shorter holds pull it down again.
        for _ in 0..40 {
            estimate.record(ms(100));
        }
        let settled = estimate.get().unwrap();
        assert!(settled >= ms(100) && settled < ms(101), "{settled:?}");
    }

    #[test]
    fn huge_holds_saturate() {
        let estimate = HoldEstimate::default();
        estimate.record(Duration::MAX);
        estimate.record(Duration::MAX);
        assert_eq!(estimate.get(), Some(Duration::from_micros(AVERAGE_MASK)));
    }
}
