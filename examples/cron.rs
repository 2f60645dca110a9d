//! One job per tick across several scheduler instances.
//!
//! Three "scheduler instances" (three separate engines over the same nodes, as three
//! processes would have) tick every 300 ms, 10 times. At every tick each one tries to take
//! `cron:report:{tick}` (failing fast: at most 500 ms of tries) and run the job under it with
//! `with_lock_options`; the one that wins runs the job, the others skip the tick. The job
//! takes 2.5 s while the lease ttl is only 1 s: the watchdog extends the lease while the job
//! runs.
//!
//! **What the lock guarantees, and what it does not.** A lock gives mutual exclusion, not
//! "exactly once": while a lease is valid, at most one instance runs a tick's job. On its own
//! it cannot stop a tick from being skipped (no instance got the lock: all down, or the
//! quorum unreachable) nor from running twice (the winner's lease was lost — a paused
//! process, a partition — and a late instance took the lock after it, or a job finished and
//! a slow instance arrived afterwards). This example gets its once-per-tick result from two
//! more things:
//! - **every instance tries every tick**, so a tick runs if any instance, alive and
//!   reaching a quorum, gets the lock;
//! - **the job records its tick with a check-and-set** in the store it writes to (here the
//!   `Ledger`, standing for a table with a unique `tick` column and
//!   `INSERT .. ON CONFLICT DO NOTHING`): a holder that finds the tick recorded does not
//!   run it again, even when it got the lock after a lost lease.
//!
//! Together: at most one run per tick (the check-and-set); a run whenever one instance gets
//! the lock within the tick's window (every instance tries); and no two instances working on
//! a tick at once while a lease holds (the lock). Here the tick is recorded before the job
//! runs, so a job that crashes midway is not rerun: at most once. To rerun it instead,
//! record the tick at the end, in the same transaction as the job's result (the lock then
//! keeps the other instances from doing the same work meanwhile), or make the job
//! idempotent. Where a stale holder could still write after losing its lease, pass a
//! fencing token (`.fencing(true)`) to the store and have it refuse smaller ones.
//!
//! ```text
//! cargo run --example cron --features testkit
//! ```

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{BoxError, Nodes};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

const INSTANCES: [&str; 3] = ["A", "B", "C"];
const TICKS: u32 = 10;
const PERIOD: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(1);
const JOB: Duration = Duration::from_millis(2500);
/// How long an instance keeps trying to take a tick's lock.
const SPLIT_VOTE_WINDOW: Duration = Duration::from_millis(500);
/// Bound on the whole run (it needs about `TICKS * PERIOD + JOB`).
const DEADLINE: Duration = Duration::from_secs(30);

/// What one instance did at one tick.
#[derive(Debug)]
enum Outcome {
    /// Ran the job; the lease outlived its ttl thanks to auto-extension.
    Ran { took: Duration },
    /// Someone else held the tick's lock.
    Skipped,
    /// Got the lock, but the tick was already recorded in the ledger: not run again.
    AlreadyDone,
    /// Anything else (nodes unreachable, lease lost, ...).
    Failed(String),
}

/// The store the job writes to, shared by every instance (in production: a database table
/// with a unique `tick` column). `record` is a check-and-set: it records the tick for one
/// instance only.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<BTreeMap<u32, &'static str>>>);

impl Ledger {
    /// Records `tick` as run by `instance`; `false` if it was already recorded.
    fn record(&self, tick: u32, instance: &'static str) -> bool {
        let mut ticks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match ticks.entry(tick) {
            Entry::Vacant(entry) => {
                entry.insert(instance);
                true
            }
            Entry::Occupied(_) => false,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    // A per-run prefix keeps concurrent runs on shared nodes from skipping each other's ticks.
    let builder = nodes
        .builder()?
        .key_prefix(format!("redlock:cron-example:{}:", common::run_id()));
    let mut instances = Vec::with_capacity(INSTANCES.len());
    for name in INSTANCES {
        instances.push((name, builder.clone().build().await?));
    }
    println!(
        "{} scheduler instances, {TICKS} ticks every {} ms; job {} ms under a lease of ttl {} ms",
        INSTANCES.len(),
        PERIOD.as_millis(),
        JOB.as_millis(),
        TTL.as_millis()
    );

    let start = Instant::now() + Duration::from_millis(50);
    let ledger = Ledger::default();
    let mut tasks = JoinSet::new();
    for (name, redlock) in instances {
        tasks.spawn(scheduler(name, redlock, ledger.clone(), start));
    }
    let mut records = Vec::new();
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            records.extend(joined??);
        }
        Ok::<_, JoinError>(())
    };
    match tokio::time::timeout(DEADLINE, collect).await {
        Ok(joined) => joined.map_err(|e| format!("a scheduler failed: {e}"))?,
        Err(_) => return Err(format!("the schedulers did not finish within {DEADLINE:?}").into()),
    }

    // tick -> instance -> outcome
    let mut table: BTreeMap<u32, BTreeMap<&str, Outcome>> = BTreeMap::new();
    for (tick, name, outcome) in records {
        table.entry(tick).or_default().insert(name, outcome);
    }
    println!();
    println!(
        "tick  {}  job",
        INSTANCES.map(|n| format!("{n:<8}")).join(" ")
    );
    let mut problems = Vec::new();
    for tick in 0..TICKS {
        let row = table.remove(&tick).unwrap_or_default();
        let cells = INSTANCES.map(|name| match row.get(name) {
            Some(Outcome::Ran { .. }) => "ran     ",
            Some(Outcome::Skipped) => "skipped ",
            Some(Outcome::AlreadyDone) => "done    ",
            Some(Outcome::Failed(_)) => "FAILED  ",
            None => "-       ",
        });
        let runs: Vec<Duration> = row
            .values()
            .filter_map(|o| match o {
                Outcome::Ran { took } => Some(*took),
                _ => None,
            })
            .collect();
        let job = match runs.as_slice() {
            [took] => format!("{} ms, lease held throughout", took.as_millis()),
            _ => format!("ran {} times", runs.len()),
        };
        println!("{tick:>4}  {}  {job}", cells.join(" "));
        if runs.len() != 1 {
            problems.push(format!("tick {tick} ran {} times", runs.len()));
        }
        for (name, outcome) in &row {
            if let Outcome::Failed(error) = outcome {
                problems.push(format!("instance {name} at tick {tick}: {error}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!("invariant violated: {}", problems.join("; ")).into());
    }
    println!(
        "OK: each of the {TICKS} ticks ran exactly once in this run (the lock: never two at once; \
         the ledger's check-and-set: never twice); every {} ms job outlived the {} ms ttl \
         through auto-extension",
        JOB.as_millis(),
        TTL.as_millis()
    );
    Ok(())
}

/// One scheduler instance: ticks `TICKS` times from `start`, running each tick's attempt in
/// its own task so that a long job does not delay the next tick.
async fn scheduler(
    name: &'static str,
    redlock: Redlock,
    ledger: Ledger,
    start: Instant,
) -> Result<Vec<(u32, &'static str, Outcome)>, JoinError> {
    let mut interval = tokio::time::interval_at(start, PERIOD);
    let mut attempts = JoinSet::new();
    for tick in 0..TICKS {
        interval.tick().await;
        let (redlock, ledger) = (redlock.clone(), ledger.clone());
        attempts.spawn(async move {
            let outcome = run_tick(&redlock, &ledger, name, tick, start).await;
            (tick, name, outcome)
        });
    }
    let mut records = Vec::with_capacity(TICKS as usize);
    while let Some(joined) = attempts.join_next().await {
        records.push(joined?);
    }
    Ok(records)
}

async fn run_tick(
    redlock: &Redlock,
    ledger: &Ledger,
    name: &'static str,
    tick: u32,
    start: Instant,
) -> Outcome {
    let at = || start.elapsed().as_millis();
    // Fail fast, within a short window. `no_retry()` alone is not enough here: when the three
    // instances ask at the same instant, the votes can split (2/2/1 of 5 nodes) and nobody
    // gets a quorum; a few jittered retries settle that, as Redlock prescribes. The window is
    // far shorter than the job, so a loser gives up while the winner still holds the lock.
    let options = LockOptions::new().ttl(TTL).retry(
        RetryPolicy::until(SPLIT_VOTE_WINDOW)
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(20)),
    );
    let began = Instant::now();
    let result = redlock
        .with_lock_options(format!("cron:report:{tick}"), options, async |lock| {
            // Under the lock, and before the job's first effect: the check-and-set that
            // makes a second holder of this tick (after a lost lease) a no-op.
            if !ledger.record(tick, name) {
                println!("[{:>5} ms] {name}: tick {tick} already done", at());
                return None;
            }
            println!("[{:>5} ms] {name}: runs tick {tick}", at());
            tokio::time::sleep(JOB).await;
            Some(lock.is_held())
        })
        .await;
    match result {
        Ok(Some(true)) => Outcome::Ran {
            took: began.elapsed(),
        },
        Ok(Some(false)) => Outcome::Failed("the lease had run out when the job ended".to_owned()),
        Ok(None) => Outcome::AlreadyDone,
        Err(e) if e.is_contended() => {
            println!(
                "[{:>5} ms] {name}: skipped (another instance runs tick {tick})",
                at()
            );
            Outcome::Skipped
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
