//! The faults a simulated node is set to, and the seeded generator of its delays.

use std::time::Duration;

/// SplitMix64: a tiny seeded generator, so that one seed replays a run's delays exactly.
/// Not for anything secret.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform duration in `[0, max]`, in whole nanoseconds.
    pub(super) fn up_to(&mut self, max: Duration) -> Duration {
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % max.saturating_add(1))
    }
}

/// A node's faults. Network faults (delay, lost replies, partition) outlive a restart;
/// a pause (the process stopped) does not.
pub(super) struct Faults {
    /// Every request's round trip: `delay` plus up to `jitter`, half on the way to the
    /// node, half on the way back.
    pub(super) delay: Duration,
    pub(super) jitter: Duration,
    rng: SplitMix64,
    /// Requests are applied but their replies never come.
    pub(super) drop_replies: bool,
    /// Requests are neither applied nor answered; new connections fail.
    pub(super) partitioned: bool,
    /// Requests wait, unapplied, until the node resumes.
    pub(super) paused: bool,
}

impl Faults {
    pub(super) fn new(seed: u64) -> Faults {
        Faults {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rng: SplitMix64::new(seed),
            drop_replies: false,
            partitioned: false,
            paused: false,
        }
    }

    /// One request's (to the node, back) delays.
    pub(super) fn sample(&mut self) -> (Duration, Duration) {
        let total = self.delay + self.rng.up_to(self.jitter);
        let there = total / 2;
        (there, total - there)
    }

    /// No faults left (the generator keeps its place).
    pub(super) fn heal(&mut self) {
        self.delay = Duration::ZERO;
        self.jitter = Duration::ZERO;
        self.drop_replies = false;
        self.partitioned = false;
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_replays_the_same_delays() {
        let draw = |seed| {
            let mut faults = Faults::new(seed);
            faults.delay = Duration::from_millis(5);
            faults.jitter = Duration::from_millis(10);
            (0..50).map(|_| faults.sample()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for (there, back) in draw(7) {
            let total = there + back;
            assert!(total >= Duration::from_millis(5) && total <= Duration::from_millis(15));
        }
    }
}
