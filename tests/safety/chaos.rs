//! A random fault schedule over a minority of the lock nodes.
//!
//! At most [`MAX_FAULTY`] nodes (2 of 5) are faulty at any moment. Faults:
//!
//! - **crash**: `SIGKILL`, then a restart with an empty data set no sooner than one ttl
//!   later (the delayed-restart rule);
//! - **pause**: `SIGSTOP` for 50–600 ms, then `SIGCONT` (data kept);
//! - **slow**: 20–150 ms latency and up to 30 ms jitter each way on the node's proxy,
//!   for 0.2–1.5 s.
//!
//! The schedule is drawn from a seeded RNG; the seed is printed so that a failing run can
//! be replayed (`SAFETY_SEED=<seed>`; thread timing still varies between runs).

use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower_redlock::testkit::{FaultProxy, LocalCluster};

pub const SEED_VAR: &str = "SAFETY_SEED";
pub const MAX_FAULTY: usize = 2;
/// Bound on the scheduler's loop, on top of its deadline.
const MAX_STEPS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Crashed,
    Paused,
    Slow,
}

/// The seed from `SAFETY_SEED`, or a fresh one.
pub fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={value:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// What the schedule did, for the report.
#[derive(Debug, Default)]
pub struct ChaosLog {
    pub seed: u64,
    pub crashes: usize,
    pub pauses: usize,
    pub slowdowns: usize,
    pub max_faulty: usize,
    /// One line per event, `+<ms> <event>`.
    pub events: Vec<String>,
}

impl ChaosLog {
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} crashes (delayed restart), {} pauses, {} slowdowns, at most {} nodes faulty at once",
            self.seed, self.crashes, self.pauses, self.slowdowns, self.max_faulty
        )
    }

    /// The last `n` events, one per line.
    pub fn tail(&self, n: usize) -> String {
        let mut out = String::new();
        for event in &self.events[self.events.len().saturating_sub(n)..] {
            let _ = writeln!(out, "  {event}");
        }
        out
    }
}

/// Runs the schedule on `cluster` (and its `proxies`) until `until`, then heals every
/// paused or slow node. Crashed nodes stay down when the run ends before their restart.
pub async fn run(
    cluster: &LocalCluster,
    proxies: &[FaultProxy],
    ttl: Duration,
    seed: u64,
    until: Instant,
) -> ChaosLog {
    println!("safety: fault schedule seed {seed} (replay with {SEED_VAR}={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut log = ChaosLog {
        seed,
        ..ChaosLog::default()
    };
    // Per node: the fault and when it ends.
    let mut faults: Vec<Option<(Fault, Instant)>> = vec![None; cluster.len()];
    let mut next_injection = start + Duration::from_millis(rng.random_range(100..400));
    for _ in 0..MAX_STEPS {
        let now = Instant::now();
        if now >= until {
            break;
        }
        // Recoveries that are due.
        for (i, slot) in faults.iter_mut().enumerate() {
            let Some((fault, ends)) = *slot else { continue };
            if ends > now {
                continue;
            }
            match fault {
                Fault::Crashed => cluster.restart(i).await.expect("restart a crashed node"),
                Fault::Paused => {
                    tokio::task::block_in_place(|| cluster.resume(i)).expect("resume a node");
                }
                Fault::Slow => proxies[i].heal(),
            }
            log.events.push(format!(
                "+{} node {i} recovers from {fault:?}",
                start.elapsed().as_millis()
            ));
            *slot = None;
        }
        // A new fault, if a minority stays faulty.
        let faulty = faults.iter().filter(|f| f.is_some()).count();
        if now >= next_injection && faulty < MAX_FAULTY {
            let healthy: Vec<usize> = (0..faults.len()).filter(|&i| faults[i].is_none()).collect();
            let i = healthy[rng.random_range(0..healthy.len())];
            let (fault, lasts) = match rng.random_range(0..3) {
                0 => {
                    cluster.kill(i).await.expect("kill a node");
                    log.crashes += 1;
                    // Delayed restart: down for at least one ttl.
                    let down = ttl + Duration::from_millis(rng.random_range(0..500));
                    (Fault::Crashed, down)
                }
                1 => {
                    tokio::task::block_in_place(|| cluster.pause(i)).expect("pause a node");
                    log.pauses += 1;
                    (
                        Fault::Paused,
                        Duration::from_millis(rng.random_range(50..600)),
                    )
                }
                _ => {
                    proxies[i].set_latency(Duration::from_millis(rng.random_range(20..150)));
                    proxies[i].set_jitter(Duration::from_millis(rng.random_range(0..30)));
                    log.slowdowns += 1;
                    (
                        Fault::Slow,
                        Duration::from_millis(rng.random_range(200..1500)),
                    )
                }
            };
            log.events.push(format!(
                "+{} node {i}: {fault:?} for {} ms",
                start.elapsed().as_millis(),
                lasts.as_millis()
            ));
            faults[i] = Some((fault, Instant::now() + lasts));
            log.max_faulty = log.max_faulty.max(faulty + 1);
            next_injection = Instant::now() + Duration::from_millis(rng.random_range(50..700));
        }
        // Sleep until the next thing to do.
        let next = faults
            .iter()
            .flatten()
            .map(|&(_, ends)| ends)
            .chain([next_injection, until])
            .min()
            .unwrap_or(until);
        tokio::time::sleep_until(next.max(Instant::now() + Duration::from_millis(1))).await;
    }
    // Leave no node frozen or slow (a crashed node stays down: the run is over).
    for (i, slot) in faults.iter().enumerate() {
        match slot {
            Some((Fault::Paused, _)) => {
                tokio::task::block_in_place(|| cluster.resume(i)).expect("resume a node");
            }
            Some((Fault::Slow, _)) => proxies[i].heal(),
            _ => {}
        }
    }
    log
}
