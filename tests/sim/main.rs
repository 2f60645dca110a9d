//! Deterministic simulation tests: many seeded runs of random lock operations and node
//! faults over simulated Redis nodes (`tower_redlock::sim`), under paused time.
//! No `redis-server` needed.
//!
//! Each seed builds its own current-thread runtime with paused time, 3 or 5 nodes (each
//! with a small baseline delay and jitter, or none), 2 or 3 engines sharing them, 3 or 4
//! tasks, and a fault schedule. A task acquires `["a"]`, `["b"]` or `["a", "b"]` (fenced or
//! not, so local hand-offs and carried leases happen too), sometimes cancelling the
//! acquisition; holds it a random time while extending it with ttls shorter and longer
//! than the default (often just before the watchdog's tick, sometimes two at once);
//! then releases it, drops it, or cancels its release half-way. Faults per node: delays
//! over the node timeout, dropped replies, partitions, pauses (often longer than the ttl,
//! so keys expire on them), restarts with data, restarts without data followed by a down
//! time longer than any lease (Redlock's delayed restart); and now and then a majority of
//! the nodes paused together. No fault starts after 1.1 s; operations go on on healed
//! nodes. After every run it checks:
//! - (a) no two holders of a key overlap within validity (`[acquired, min(valid_until,
//!   released))`, virtual time);
//! - (b) fencing tokens strictly increase per key (unless a majority of nodes restarted
//!   empty during the run);
//! - (c) `ended()` resolves by `valid_until` for a lease nobody released;
//! - (d) no lock key is left on any node once everything ended and a ttl passed;
//! - (e) no task leaks: the runtime's alive tasks are back to the baseline after the
//!   engines shut down;
//! - (f) a lease given back while valid (released, dropped, or its release cancelled),
//!   with every node free of faults from 300 ms before until the probe, is gone from a
//!   quorum of nodes 150 ms later, unless someone acquired the key meanwhile;
//! - (g) `valid_until` never overstates what a quorum holds: after acquiring, after each
//!   extension and before giving a lease back, a quorum of nodes keep every key of it
//!   until at least `valid_until` (unless a node restarted empty meanwhile);
//! - and that the lease is on the keys asked for.
//!
//! Run: `cargo test --all-features --test sim` (2,000 seeds). `SIM_SEEDS=n` runs seeds
//! `0..n`; `SIM_KEEP_GOING=1` lists every failing seed and violation instead of stopping
//! at the first; `SIM_SEED=n` replays one seed `SIM_REPEAT` times (default 20), requires
//! each run to repeat the first one's trace of events exactly (else prints the first
//! difference) and `SIM_TRACE=1` prints that trace. A longer run:
//! `SIM_SEEDS=100000 cargo test --release --all-features --test sim -- --nocapture`.
//!
//! What makes a seed replay: the operations, their timing, the faults and every node delay
//! come from the seed; the engine's `select!`s poll in a fixed order (`biased`); the tasks
//! set no retry jitter (the engine would draw it from the OS); lock tokens are random but
//! nothing should depend on their value. Not exact yet: of seeds 0..20 run 5 times each,
//! 18 replay exactly and 2 do not (seed 2: 3 of 5 runs differ; seed 18: 1 of 5); with
//! cancelled releases turned off, seeds 2, 18 and 28 of 0..30 still differ. In seed 2 the
//! first difference is when `h201` gets `b` (190 ms, fence 2, or 208 ms, fence 3): a
//! failed attempt bumped the counter in one run only. The source is not found yet.
//! `SIM_SEED` reports it (`differed from the first`), and `a_seed_replays_exactly`
//! (ignored until then) checks seeds 0..4.
//!
//! Bugs re-introduced on purpose (never committed), and the first seed that catches each
//! (`SIM_KEEP_GOING=1 cargo test --all-features --test sim seeded -- --nocapture`, debug
//! build, wall time from the start of the run on a loaded 2-core machine):
//!
//! | re-introduced bug                                           | seed | after   | by        |
//! |-------------------------------------------------------------|------|---------|-----------|
//! | extend without compare (sim `EXTEND` drops the token check) | 30   | 3.2 s   | (g)       |
//! | extend race (no `extending` turn, no `lower_valid_until`)   | 5    | 0.24 s  | (g)       |
//! | cancelled release (`Unfinished` disarmed before awaiting)   | 25   | 1.2 s   | (f)       |
//! | NUL key mix-up (local queue lines keyed by the first key)   | 45   | 3.6 s   | keys      |
//! | release without compare (sim `RELEASE` deletes any value)   | 2    | 0.28 s  | (g), (a)  |
//! | quorum off-by-one (`N / 2`)                                 | 0    | 0.08 s  | (g)       |
//!
//! `SIM_SEED=<seed> SIM_REPEAT=20` with the bug still in fails 20 runs of 20, each the same
//! trace (checked for the cancelled release, seed 25, and the extend race, seed 5).
//! An engine bug this generator found on clean code (December 2026, fixed): (c) failed in
//! about 300 of the 2,000 seeds (first: seed 2), `ended()` resolving up to ~31 ms after
//! `valid_until`: a user `extend()` that failed after lowering `valid_until` left the
//! lease's timer at its old, later wake; and the timers, which fire on whole
//! milliseconds rounded up, could declare a lease lost up to 1 ms late. An extension now
//! moves the timer when it lowers the validity, and the timers take entries 1 ms early.
//!
//! Before (g), extend without compare first showed as an overlap (a) at seed 190 (with
//! a slightly longer run per seed).

mod checks;
mod faults;
mod record;
mod rng;
mod scenario;
mod worker;

use std::time::{Duration, Instant as StdInstant};

use tower_redlock::Redlock;

const TTL: Duration = Duration::from_millis(400);
const NODE_TIMEOUT: Duration = Duration::from_millis(30);
/// How long after a release the nodes are looked at (check (f)).
const PROBE: Duration = Duration::from_millis(150);
/// How long every node must have been free of faults before a release for check (f).
const CALM: Duration = Duration::from_millis(300);
/// Faults start until then, from the start of a run.
const FAULTS_FOR: Duration = Duration::from_millis(1100);
/// Operations start until then: the last ones run on healed nodes.
const WORK_FOR: Duration = Duration::from_millis(1500);

/// Wall time after which a seed counts as hung (one takes tens of milliseconds).
const HUNG_AFTER: Duration = Duration::from_secs(60);

fn run_seed(seed: u64) -> Result<scenario::Outcome, String> {
    // Virtual time only advances when every task waits: a task that loops without ever
    // waiting stops it, and the run with it. Fail instead of hanging.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(HUNG_AFTER) {
            eprintln!(
                "seed {seed} hung: no progress in {HUNG_AFTER:?} (a task loops without waiting, \
                 so virtual time stopped)"
            );
            std::process::exit(101);
        }
    });
    let outcome = run_seed_inner(seed);
    let _ = done.send(());
    outcome
}

fn run_seed_inner(seed: u64) -> Result<scenario::Outcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(scenario::run(seed))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Where two traces of one seed first differ, or `None`.
fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    let at = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let line = |t: &[String]| t.get(at).cloned().unwrap_or_else(|| "(end)".to_owned());
    Some(format!(
        "event {at}:\n  first run: {}\n  this run:  {}",
        line(a),
        line(b)
    ))
}

/// `SIM_SEED=n`: runs seed `n` `SIM_REPEAT` times (default 20) and requires every run to
/// pass and to replay the first run's trace exactly.
fn replay(seed: u64) {
    let repeat = env_u64("SIM_REPEAT").unwrap_or(20).max(1);
    let (mut failed, mut diverged) = (0, 0);
    let mut first: Option<Vec<String>> = None;
    let mut report = String::new();
    for run in 0..repeat {
        let outcome = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if !outcome.violations.is_empty() {
            failed += 1;
            if failed == 1 {
                report += &format!("run {run} failed:\n{}\n", outcome.violations);
            }
        }
        if run == 0 && std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{}", outcome.trace.join("\n"));
        }
        match &first {
            None => first = Some(outcome.trace),
            Some(trace) => {
                if let Some(difference) = first_difference(trace, &outcome.trace) {
                    diverged += 1;
                    if diverged == 1 {
                        report += &format!("run {run} differs from run 0 at {difference}\n");
                    }
                }
            }
        }
    }
    eprintln!("seed {seed}: {failed} of {repeat} runs failed, {diverged} differed from the first");
    assert!(failed == 0 && diverged == 0, "seed {seed}:\n{report}");
}

#[test]
fn seeded_runs_keep_every_safety_property() {
    if let Some(seed) = env_u64("SIM_SEED") {
        return replay(seed);
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(2_000);
    let started = StdInstant::now();
    let mut grants = 0;
    // `SIM_KEEP_GOING`: list every failing seed instead of stopping at the first.
    let keep_going = std::env::var_os("SIM_KEEP_GOING").is_some();
    let mut failed = Vec::new();
    for seed in 0..seeds {
        if keep_going {
            eprintln!("seed {seed} starts at {:?}", started.elapsed());
        }
        let outcome = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if !outcome.violations.is_empty() && keep_going {
            for violation in outcome.violations.lines() {
                eprintln!(
                    "seed {seed} failed (after {:?}): {violation}",
                    started.elapsed()
                );
            }
            failed.push(seed);
        } else if !outcome.violations.is_empty() {
            panic!(
                "seed {seed} failed (after {:?}):\n{}\nreplay it: SIM_SEED={seed} cargo test --all-features --test sim",
                started.elapsed(),
                outcome.violations
            );
        }
        grants += outcome.grants;
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed: {failed:?}",
        failed.len()
    );
    // A run that grants nothing checks nothing.
    assert!(
        grants as u64 >= seeds,
        "only {grants} grants in {seeds} runs"
    );
    eprintln!(
        "{seeds} seeds, {grants} grants checked, in {:?}",
        started.elapsed()
    );
}

/// A seed replays exactly: the same events at the same virtual times, run after run.
#[test]
#[ignore = "seed 2 does not replay exactly yet (see the module docs)"]
fn a_seed_replays_exactly() {
    for seed in 0..4 {
        let first = run_seed(seed).unwrap();
        let second = run_seed(seed).unwrap();
        assert!(first.trace.len() > 10, "seed {seed}: too few events");
        if let Some(difference) = first_difference(&first.trace, &second.trace) {
            panic!("seed {seed} did not replay: {difference}");
        }
    }
}

#[test]
fn in_memory_is_checked() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(Redlock::builder().in_memory(0).build().await.is_err());
        assert!(Redlock::builder().in_memory(65).build().await.is_err());
        assert!(
            Redlock::builder()
                .in_memory(3)
                .node("redis://127.0.0.1:6379")
                .build()
                .await
                .is_err()
        );
        let redlock = Redlock::builder().in_memory(3).build().await.unwrap();
        let lock = redlock.try_acquire("k").await.unwrap();
        assert!(redlock.try_acquire("k").await.is_err());
        lock.release().await.unwrap();
        redlock
            .try_acquire("k")
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    });
}
