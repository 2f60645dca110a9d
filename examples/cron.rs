//! One job per tick across several scheduler instances.
//!
//! Three "scheduler instances" (three separate engines over the same nodes, as three
//! processes would have) tick every 300 ms, 10 times. At every tick each one tries to take
//! `cron:report:{tick}` (failing fast: at most 100 ms of tries) and run the job under it with
//! `with_lock_options`; the one that wins runs the job, the others skip the tick. The job
//! takes 700 ms while the lease ttl is only 300 ms: the watchdog extends the lease while the
//! job runs. Every tick must run exactly once.
//!
//! ```text
//! cargo run --example cron --features testkit
//! ```

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{BoxError, Nodes};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

const INSTANCES: [&str; 3] = ["A", "B", "C"];
const TICKS: u32 = 10;
const PERIOD: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_millis(300);
const JOB: Duration = Duration::from_millis(700);
/// How long an instance keeps trying to take a tick's lock.
const SPLIT_VOTE_WINDOW: Duration = Duration::from_millis(100);
/// Bound on the whole run (it needs about `TICKS * PERIOD + JOB`).
const DEADLINE: Duration = Duration::from_secs(30);

/// What one instance did at one tick.
#[derive(Debug)]
enum Outcome {
    /// Ran the job; the lease outlived its ttl thanks to auto-extension.
    Ran { took: Duration },
    /// Someone else held the tick's lock.
    Skipped,
    /// Anything else (nodes unreachable, lease lost, ...).
    Failed(String),
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
    let mut tasks = JoinSet::new();
    for (name, redlock) in instances {
        tasks.spawn(scheduler(name, redlock, start));
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
        "OK: each of the {TICKS} ticks ran exactly once; every {} ms job outlived the {} ms ttl \
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
    start: Instant,
) -> Result<Vec<(u32, &'static str, Outcome)>, JoinError> {
    let mut interval = tokio::time::interval_at(start, PERIOD);
    let mut attempts = JoinSet::new();
    for tick in 0..TICKS {
        interval.tick().await;
        let redlock = redlock.clone();
        attempts.spawn(async move { (tick, name, run_tick(&redlock, name, tick, start).await) });
    }
    let mut records = Vec::with_capacity(TICKS as usize);
    while let Some(joined) = attempts.join_next().await {
        records.push(joined?);
    }
    Ok(records)
}

async fn run_tick(redlock: &Redlock, name: &str, tick: u32, start: Instant) -> Outcome {
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
            println!("[{:>5} ms] {name}: runs tick {tick}", at());
            tokio::time::sleep(JOB).await;
            lock.is_held()
        })
        .await;
    match result {
        Ok(true) => Outcome::Ran {
            took: began.elapsed(),
        },
        Ok(false) => Outcome::Failed("the lease had run out when the job ended".to_owned()),
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
