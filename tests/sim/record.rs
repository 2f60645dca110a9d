//! What a run observed: grants, releases, faults, a trace of events, and violations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One grant: who, the keys they asked for, when, until when it protected, and its
/// fencing token.
#[derive(Debug, Clone)]
pub struct Grant {
    pub holder: usize,
    pub keys: Vec<&'static str>,
    pub acquired: Instant,
    pub end: Instant,
    pub token: Option<u64>,
}

/// A lease given back (released, dropped, or its release cancelled) while still valid,
/// and what the nodes showed `PROBE` later.
#[derive(Debug, Clone)]
pub struct Release {
    pub holder: usize,
    pub how: &'static str,
    pub at: Instant,
    pub probed: Instant,
    /// The keys that were still set on a quorum of nodes at `probed`.
    pub still_held: Vec<&'static str>,
}

#[derive(Default)]
pub struct Record {
    pub grants: Vec<Grant>,
    pub releases: Vec<Release>,
    pub violations: Vec<String>,
    /// Nodes restarted without their data, and when.
    pub emptied: Vec<usize>,
    pub emptied_at: Vec<Instant>,
    /// When some node had a fault: `(node, from, to)`.
    pub faults: Vec<(usize, Instant, Instant)>,
    /// Every event, as `time task what`, to compare two runs of one seed.
    pub trace: Vec<String>,
}

/// The record shared by a run's tasks, and the run's start.
#[derive(Clone)]
pub struct Log {
    pub record: Arc<Mutex<Record>>,
    pub start: Instant,
}

impl Log {
    pub fn new() -> Log {
        Log {
            record: Arc::default(),
            start: Instant::now(),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.record.lock().unwrap())
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Instant::now() - self.start
    }

    /// `at` as virtual time since the start (the same in every replay).
    pub fn at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    pub fn event(&self, who: &str, what: impl std::fmt::Display) {
        let line = format!("{:>12?} {who} {what}", self.elapsed());
        self.with(|r| r.trace.push(line));
    }

    pub fn violation(&self, violation: String) {
        self.event("check", format_args!("violation: {violation}"));
        self.with(|r| r.violations.push(violation));
    }
}
