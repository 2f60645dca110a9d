//! Shared leases in the safety checker: read/write leases (no writer section overlaps any
//! other section within validity) and permits (never more than `N` sections at once), plus
//! a deliberately broken permit lock — a per-node counter with a majority quorum — that
//! the checker must catch.
//!
//! The broken lock is the counterexample of `redlock/shared/`: 5 nodes, 2 permits, three
//! processes, each of which reaches only 3 nodes (a partition of 2 nodes per process, a
//! minority fault each): A reaches nodes 0, 1, 2; B 2, 3, 4; C 0, 1, 3. No node ever admits
//! more than 2 holders, yet each process always collects 3 of 5 yes votes: three holders
//! of two permits, every time their holds meet (they hold for 100 ms in a loop, so they
//! do, deterministically).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tower_redlock::{LeaseMode, LockError, LockOptions, Redlock};

use crate::history::{Section, mono_now, to_mono};
use crate::worker::{KEY, Stats};

/// The worker's lease kind (unset: the exclusive lock of the classic runs).
pub const LEASE_VAR: &str = "SAFETY_LEASE";

/// Which shared lease a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Tasks take read leases (3 in 4) or write leases.
    ReadWrite,
    /// Tasks take one of `n` permits.
    Permits(u32),
    /// The majority-quorum counter with `n` permits (test-only, unsafe).
    BrokenPermits(u32),
}

impl Lease {
    pub fn to_var(self) -> String {
        match self {
            Lease::ReadWrite => "rw".to_owned(),
            Lease::Permits(n) => format!("permits:{n}"),
            Lease::BrokenPermits(n) => format!("broken-permits:{n}"),
        }
    }

    pub fn from_env() -> Option<Lease> {
        let var = std::env::var(LEASE_VAR).ok().filter(|v| !v.is_empty())?;
        let n = |s: &str| s.parse().expect("permit count");
        Some(match var.split_once(':') {
            None if var == "rw" => Lease::ReadWrite,
            Some(("permits", count)) => Lease::Permits(n(count)),
            Some(("broken-permits", count)) => Lease::BrokenPermits(n(count)),
            _ => panic!("bad {LEASE_VAR}: {var}"),
        })
    }
}

/// A section's kind, in its `token` field: writers are 1, readers and permits 0.
const WRITER: u64 = 1;

/// One client task of a shared-lease run: take the lease, hold it a moment, record the
/// section, release; until the shared deadline.
pub async fn client_task(
    client: String,
    redlock: Redlock,
    lease: Lease,
    until: u64,
    process: usize,
) -> (Vec<Section>, Stats) {
    let mut sections = Vec::new();
    let mut stats = Stats::default();
    let broken = match lease {
        Lease::BrokenPermits(n) => Some(BrokenPermits::connect(process, n).await),
        _ => None,
    };
    for _ in 0..100_000 {
        if mono_now() >= until {
            break;
        }
        let write = lease == Lease::ReadWrite && rand::random_range(0..4) == 0;
        if let Some(broken) = &broken {
            let token = format!("{client}-{}", mono_now());
            if !broken.acquire(&token).await {
                stats.contended += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let acquired = mono_now();
            stats.acquired += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let released = mono_now();
            sections.push(section(
                &client,
                acquired,
                acquired + 1_000_000_000,
                released,
                0,
            ));
            broken.release(&token).await;
            continue;
        }
        let mode = match lease {
            Lease::ReadWrite if write => LeaseMode::Write,
            Lease::ReadWrite => LeaseMode::Read,
            Lease::Permits(n) | Lease::BrokenPermits(n) => LeaseMode::Permit(n),
        };
        let acquire = redlock.acquire_mode_with(KEY, mode, LockOptions::new());
        let lock = match tokio::time::timeout(Duration::from_secs(30), acquire).await {
            Ok(Ok(lock)) => lock,
            Ok(Err(LockError::Unavailable { .. })) => {
                stats.unavailable += 1;
                continue;
            }
            Ok(Err(LockError::Contended { .. })) => {
                stats.contended += 1;
                continue;
            }
            Ok(Err(_)) => {
                stats.other += 1;
                continue;
            }
            Err(_) => panic!("{client}: acquire hung for 30 s"),
        };
        let acquired = mono_now();
        stats.acquired += 1;
        tokio::time::sleep(Duration::from_micros(rand::random_range(0..=3_000u64))).await;
        let released = mono_now();
        let kind = if write { WRITER } else { 0 };
        let valid_until = to_mono(lock.valid_until());
        sections.push(section(&client, acquired, valid_until, released, kind));
        let _ = tokio::time::timeout(Duration::from_secs(5), lock.release()).await;
    }
    (sections, stats)
}

fn section(client: &str, acquired: u64, valid_until: u64, released: u64, kind: u64) -> Section {
    Section {
        client: client.to_owned(),
        acquired,
        valid_until,
        released,
        token: kind,
        read: 0,
        wrote: false,
    }
}

/// What the shared checker found.
#[derive(Debug, Default)]
pub struct SharedVerdict {
    pub sections: usize,
    pub writers: usize,
    /// RW: sections that overlapped a writer's within validity.
    pub writer_overlaps: usize,
    /// Permits: the most sections at one instant, and how many times it exceeded `n`.
    pub most_at_once: usize,
    pub over_capacity: usize,
    pub example: Option<(Section, Section)>,
}

impl SharedVerdict {
    pub fn is_safe(&self) -> bool {
        self.writer_overlaps == 0 && self.over_capacity == 0
    }
}

impl std::fmt::Display for SharedVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sections ({} writers): {} writer overlaps, at most {} at once, {} times over \
             capacity{}",
            self.sections,
            self.writers,
            self.writer_overlaps,
            self.most_at_once,
            self.over_capacity,
            match &self.example {
                Some((a, b)) => format!("; e.g. {} and {}", a.to_line(), b.to_line()),
                None => String::new(),
            }
        )
    }
}

/// Checks a shared-lease history: no writer overlaps another section; never more than
/// `n` permit holders at one instant (each section counts from `acquired` to the end of
/// its validity window, `end()`).
pub fn check(sections: &[Section], lease: Lease) -> SharedVerdict {
    let mut sorted: Vec<&Section> = sections.iter().collect();
    sorted.sort_by_key(|s| s.acquired);
    let mut verdict = SharedVerdict {
        sections: sorted.len(),
        writers: sorted.iter().filter(|s| s.token == WRITER).count(),
        ..SharedVerdict::default()
    };
    // Sections still open at each one's start (by acquisition order).
    let mut open: Vec<&Section> = Vec::new();
    for &section in &sorted {
        open.retain(|s| s.end() > section.acquired);
        for &other in &open {
            if other.token == WRITER || section.token == WRITER {
                verdict.writer_overlaps += 1;
                verdict
                    .example
                    .get_or_insert((other.clone(), section.clone()));
            }
        }
        open.push(section);
        verdict.most_at_once = verdict.most_at_once.max(open.len());
        if let Lease::Permits(n) | Lease::BrokenPermits(n) = lease
            && open.len() > n as usize
        {
            verdict.over_capacity += 1;
            verdict
                .example
                .get_or_insert((open[0].clone(), section.clone()));
        }
    }
    verdict
}

/// The broken permit lock: on each node a ZSET of holders (score: expiry in node time),
/// admitting while fewer than `n` live ones; a holder needs 3 of 5 yes votes.
struct BrokenPermits {
    /// The connections to the nodes this process reaches.
    nodes: Vec<MultiplexedConnection>,
    n: u32,
}

/// Node subsets of the counterexample: no node is in more than 2, each has 3 of 5.
const REACHES: [[usize; 3]; 3] = [[0, 1, 2], [2, 3, 4], [0, 1, 3]];

const ADMIT: &str = r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + 5000, ARGV[1])
return 1";

impl BrokenPermits {
    async fn connect(process: usize, n: u32) -> BrokenPermits {
        let urls = std::env::var(crate::worker::NODES_VAR).unwrap();
        let urls: Vec<&str> = urls.split_whitespace().collect();
        assert_eq!(urls.len(), 5, "the broken permits need the 5 nodes");
        let mut nodes = Vec::new();
        for &i in &REACHES[process % 3] {
            nodes.push(crate::worker::counter_connection(urls[i]).await);
        }
        BrokenPermits { nodes, n }
    }

    /// Whether a majority of the 5 nodes (3) admitted `token`.
    async fn acquire(&self, token: &str) -> bool {
        let script = redis::Script::new(ADMIT);
        let mut yes = 0;
        for node in &self.nodes {
            let mut node = node.clone();
            let admitted: i64 = script
                .key("broken-permits")
                .arg(token)
                .arg(self.n)
                .invoke_async(&mut node)
                .await
                .unwrap_or(0);
            yes += usize::from(admitted == 1);
        }
        if yes < 3 {
            self.release(token).await;
        }
        yes >= 3
    }

    async fn release(&self, token: &str) {
        for node in &self.nodes {
            let mut node = node.clone();
            let _: Result<i64, _> = redis::cmd("ZREM")
                .arg("broken-permits")
                .arg(token)
                .query_async(&mut node)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(acquired: u64, end: u64, kind: u64) -> Section {
        section("c", acquired, end, end, kind)
    }

    #[test]
    fn a_writer_overlapping_a_reader_is_caught() {
        let readers = [s(0, 10, 0), s(5, 15, 0)];
        assert!(check(&readers, Lease::ReadWrite).is_safe());
        let mut history = readers.to_vec();
        history.push(s(20, 30, WRITER));
        assert!(check(&history, Lease::ReadWrite).is_safe());
        history.push(s(14, 16, WRITER));
        let verdict = check(&history, Lease::ReadWrite);
        assert_eq!(verdict.writer_overlaps, 1, "{verdict}");
        history.push(s(29, 40, 0));
        assert_eq!(check(&history, Lease::ReadWrite).writer_overlaps, 2);
    }

    #[test]
    fn more_holders_than_permits_are_caught() {
        let two = [s(0, 10, 0), s(5, 15, 0), s(10, 20, 0)];
        let verdict = check(&two, Lease::Permits(2));
        assert!(verdict.is_safe() && verdict.most_at_once == 2, "{verdict}");
        let three = [s(0, 10, 0), s(5, 15, 0), s(9, 20, 0)];
        let verdict = check(&three, Lease::Permits(2));
        assert_eq!(
            (verdict.most_at_once, verdict.over_capacity),
            (3, 1),
            "{verdict}"
        );
    }
}
