//! The history of critical sections and the checker.
//!
//! A worker records one [`Section`] per lock it got: who, when it got it, until when the
//! lease was valid, when it left the critical section, its fencing token, the counter value
//! it read and whether it wrote `read + 1` back. Times are `CLOCK_MONOTONIC` nanoseconds,
//! one clock for every process on the machine.
//!
//! [`check`] verifies, over the sections of every process:
//!
//! 1. **Mutual exclusion**: no two sections overlap within their validity windows
//!    `[acquired, min(released, valid_until)]`.
//! 2. **Fencing**: tokens strictly increase in acquisition order.
//! 3. **No lost update**: the final counter equals the number of sections that wrote, and
//!    the k-th writing section (in acquisition order) read exactly k.

use std::fmt::{self, Write as _};

/// The shared clock: `CLOCK_MONOTONIC` in nanoseconds (the same clock in every process).
pub fn mono_now() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    let secs = u64::try_from(ts.tv_sec()).expect("monotonic seconds are positive");
    let nanos = u64::try_from(ts.tv_nsec()).expect("nanoseconds are positive");
    secs * 1_000_000_000 + nanos
}

/// `at` (a Tokio instant, which is `CLOCK_MONOTONIC` underneath) on the shared clock.
pub fn to_mono(at: tokio::time::Instant) -> u64 {
    let (now, mono) = (tokio::time::Instant::now(), mono_now());
    if at >= now {
        mono + u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX / 2)
    } else {
        mono.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One critical section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `p<process>t<task>`.
    pub client: String,
    /// When `acquire` returned.
    pub acquired: u64,
    /// The lease's validity end, as known when the section ended.
    pub valid_until: u64,
    /// When the section ended (before `release` was called).
    pub released: u64,
    pub token: u64,
    /// The counter value read inside the section.
    pub read: i64,
    /// Whether `read + 1` was written back (skipped when too little validity was left).
    pub wrote: bool,
}

impl Section {
    /// End of the validity window.
    pub fn end(&self) -> u64 {
        self.released.min(self.valid_until)
    }

    /// One line of a worker's output file.
    pub fn to_line(&self) -> String {
        format!(
            "CS {} {} {} {} {} {} {}",
            self.client,
            self.acquired,
            self.valid_until,
            self.released,
            self.token,
            self.read,
            u8::from(self.wrote)
        )
    }

    /// Parses [`to_line`](Self::to_line)'s output.
    pub fn parse(line: &str) -> Option<Section> {
        let mut f = line.split(' ');
        if f.next()? != "CS" {
            return None;
        }
        let section = Section {
            client: f.next()?.to_owned(),
            acquired: f.next()?.parse().ok()?,
            valid_until: f.next()?.parse().ok()?,
            released: f.next()?.parse().ok()?,
            token: f.next()?.parse().ok()?,
            read: f.next()?.parse().ok()?,
            wrote: f.next()? == "1",
        };
        f.next().is_none().then_some(section)
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sections: usize,
    pub writes: usize,
    pub counter: i64,
    /// Pairs of overlapping sections (the first few), and how many there were.
    pub overlaps: Vec<(Section, Section)>,
    pub overlap_count: usize,
    /// Consecutive sections (in acquisition order) whose token did not increase.
    pub token_violations: Vec<(Section, Section)>,
    pub token_violation_count: usize,
    /// Writing sections that did not read what the sections before them wrote.
    pub stale_reads: usize,
}

const EXAMPLES: usize = 5;

impl Verdict {
    /// Updates lost: sections that wrote, minus what the counter shows.
    pub fn lost_updates(&self) -> i64 {
        i64::try_from(self.writes).unwrap_or(i64::MAX) - self.counter
    }

    pub fn is_safe(&self) -> bool {
        self.overlap_count == 0
            && self.token_violation_count == 0
            && self.stale_reads == 0
            && self.lost_updates() == 0
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sections ({} wrote), counter {}: {} overlaps, {} token violations, {} stale \
             reads, {} lost updates",
            self.sections,
            self.writes,
            self.counter,
            self.overlap_count,
            self.token_violation_count,
            self.stale_reads,
            self.lost_updates()
        )?;
        let mut examples = String::new();
        for (a, b) in &self.overlaps {
            let _ = write!(
                examples,
                "\n  overlap: {} [{}, {}] and {} [{}, {}] ({} µs)",
                a.client,
                a.acquired,
                a.end(),
                b.client,
                b.acquired,
                b.end(),
                a.end().min(b.end()).saturating_sub(b.acquired) / 1_000
            );
        }
        for (a, b) in &self.token_violations {
            let _ = write!(
                examples,
                "\n  token: {} got {} at {}, then {} got {} at {}",
                a.client, a.token, a.acquired, b.client, b.token, b.acquired
            );
        }
        f.write_str(&examples)
    }
}

/// Checks a history (the sections of every process) against the final counter value.
pub fn check(sections: &[Section], counter: i64) -> Verdict {
    let mut sorted: Vec<&Section> = sections.iter().collect();
    sorted.sort_by_key(|s| (s.acquired, s.end()));
    let mut verdict = Verdict {
        sections: sorted.len(),
        writes: sorted.iter().filter(|s| s.wrote).count(),
        counter,
        ..Verdict::default()
    };
    // The section that ends last among those acquired so far.
    let mut latest: Option<&Section> = None;
    let mut writes_before = 0i64;
    for (i, &section) in sorted.iter().enumerate() {
        if let Some(prev) = latest
            && section.acquired < prev.end()
        {
            verdict.overlap_count += 1;
            if verdict.overlaps.len() < EXAMPLES {
                verdict.overlaps.push((prev.clone(), section.clone()));
            }
        }
        if latest.is_none_or(|prev| section.end() > prev.end()) {
            latest = Some(section);
        }
        if i > 0 && section.token <= sorted[i - 1].token {
            verdict.token_violation_count += 1;
            if verdict.token_violations.len() < EXAMPLES {
                verdict
                    .token_violations
                    .push((sorted[i - 1].clone(), section.clone()));
            }
        }
        if section.wrote {
            if section.read != writes_before {
                verdict.stale_reads += 1;
            }
            writes_before += 1;
        }
    }
    verdict
}

/// Hand-over times: from one section's end to the next section's start (in acquisition
/// order), in milliseconds: `(median, 99th percentile, max)`.
pub fn handovers(sections: &[Section]) -> (f64, f64, f64) {
    let mut sorted: Vec<&Section> = sections.iter().collect();
    sorted.sort_by_key(|s| s.acquired);
    let mut gaps: Vec<u64> = sorted
        .windows(2)
        .map(|w| w[1].acquired.saturating_sub(w[0].released))
        .collect();
    if gaps.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    gaps.sort_unstable();
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    (at(0.5), at(0.99), at(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(client: &str, acquired: u64, end: u64, token: u64, read: i64) -> Section {
        Section {
            client: client.to_owned(),
            acquired,
            valid_until: end + 1_000,
            released: end,
            token,
            read,
            wrote: true,
        }
    }

    #[test]
    fn lines_round_trip() {
        let s = cs("p1t2", 10, 20, 7, 3);
        assert_eq!(Section::parse(&s.to_line()), Some(s));
        assert_eq!(Section::parse("CS p0t0 1 2 3"), None);
        assert_eq!(Section::parse("DONE"), None);
    }

    #[test]
    fn a_correct_history_passes() {
        let history = [
            cs("p0t0", 0, 10, 1, 0),
            cs("p1t0", 11, 20, 2, 1),
            cs("p2t1", 25, 30, 5, 2),
        ];
        let verdict = check(&history, 3);
        assert!(verdict.is_safe(), "{verdict}");
    }

    #[test]
    fn the_window_ends_at_the_validity_not_the_release() {
        // The first section overran its lease (released at 50, valid until 10): the second
        // started after the validity ended, which the lock allows.
        let mut late = cs("p0t0", 0, 50, 1, 0);
        late.valid_until = 10;
        late.wrote = false;
        let verdict = check(&[late, cs("p1t0", 11, 20, 2, 0)], 1);
        assert!(verdict.is_safe(), "{verdict}");
    }

    #[test]
    fn overlaps_tokens_and_lost_updates_are_caught() {
        let history = [
            cs("p0t0", 0, 10, 1, 0),
            cs("p1t0", 5, 15, 1, 0), // overlaps, same token, read the same value
            cs("p2t0", 20, 30, 3, 1),
        ];
        let verdict = check(&history, 2);
        assert_eq!(verdict.overlap_count, 1);
        assert_eq!(verdict.token_violation_count, 1);
        assert_eq!(verdict.stale_reads, 2);
        assert_eq!(verdict.lost_updates(), 1);
        assert!(!verdict.is_safe());
        let text = verdict.to_string();
        assert!(
            text.contains("overlap: p0t0") && text.contains("token: p0t0"),
            "{text}"
        );
    }

    #[test]
    fn an_overlap_with_an_earlier_long_section_is_caught() {
        // The third overlaps the first (still running), not the second.
        let history = [
            cs("p0t0", 0, 100, 1, 0),
            cs("p1t0", 10, 20, 2, 1),
            cs("p2t0", 50, 60, 3, 2),
        ];
        assert_eq!(check(&history, 3).overlap_count, 2);
    }
}
