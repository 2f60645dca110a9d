//! Scenario 4: 16 tasks compete for ONE key, each holding it 1 ms.
//! Target: ≥ 70 % of 1 / (hold + 2 RTT) critical sections per second, RTT measured in the
//! same run; p99 wait ≤ 20 ms; per-task min/max share ≥ 0.5.
//!
//! Baseline in the same run: the ideal that target describes, under the same machine noise:
//! 16 tasks take turns through a fair (FIFO) in-process mutex, and each section is the hold
//! plus two raw round trips to the 5 nodes (a `PING` to each, twice), with no lock at all.
//!
//! Run: `cargo bench --bench hot_key`

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

const TASKS: usize = 16;
const HOLD: Duration = Duration::from_millis(1);
const RUN_FOR: Duration = Duration::from_secs(5);

fn main() {
    on_worker(bench());
}

async fn bench() {
    let cluster = cluster().await;
    let urls = cluster.urls();
    let raw = Raw::connect(&urls).await;
    let mut rtt = Samples::default();
    for _ in 0..500 {
        let ((), d) = timed(raw.ping()).await;
        rtt.push(d);
    }
    let rtt = rtt.p50();
    let ideal = 1.0 / (HOLD + 2 * rtt).as_secs_f64();
    println!(
        "\n4. hot key: {TASKS} tasks, one key, hold {HOLD:?}, {RUN_FOR:?}; RTT p50 {:.1} µs, ideal {ideal:.0}/s",
        us(rtt)
    );

    // The ideal model: a fair mutex, hold + 2 RTT per section.
    let model = Arc::new((tokio::sync::Mutex::new(()), raw));
    let floor = run(vec![Contender::Ideal(model); TASKS], "").await;
    report("hot_key_ideal_model", &floor, ideal, None);

    // One process (one engine): waiters queue locally.
    let engine = redlock(&urls).await;
    let one = run(vec![Contender::Lock(engine); TASKS], "hot:one").await;
    report("hot_key_one_process", &one, ideal, Some(&floor));

    // Four "processes" (engines) × 4 tasks: hand-offs across engines go through pub/sub.
    let mut engines = Vec::new();
    for _ in 0..4 {
        let engine = redlock(&urls).await;
        engines.extend(std::iter::repeat_n(Contender::Lock(engine), TASKS / 4));
    }
    let four = run(engines, "hot:four").await;
    report("hot_key_four_engines", &four, ideal, Some(&floor));
}

/// What the tasks take turns through.
#[derive(Clone)]
enum Contender {
    /// The lock under test.
    Lock(Redlock),
    /// The baseline: a fair in-process mutex, plus two raw round trips per section.
    Ideal(Arc<(tokio::sync::Mutex<()>, Raw)>),
}

struct Outcome {
    sections: u64,
    elapsed: Duration,
    waits: Samples,
    handoffs: Samples,
    /// How long the critical sections really took, as seen by the task.
    holds: Samples,
    per_task: Vec<u64>,
}

/// The critical section: keeps the holder's worker busy for exactly `d`, as CPU-bound work
/// under the lock would. tokio's timer has 1 ms granularity and a thread sleep overshoots,
/// so it sleeps for most of it and spins the rest. (Handing it to `spawn_blocking` instead
/// adds ~40 µs of thread hand-over per section, which is the bench's cost, not the lock's:
/// 15 of them are in every wait.)
fn hold_for(d: Duration) {
    let start = std::time::Instant::now();
    if let Some(sleep) = d.checked_sub(Duration::from_micros(200)) {
        std::thread::sleep(sleep);
    }
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A turn in progress.
enum Turn<'a> {
    Lock(tower_redlock::HeldLock),
    Ideal(tokio::sync::MutexGuard<'a, ()>, &'a Raw),
}

async fn run(contenders: Vec<Contender>, key: &'static str) -> Outcome {
    let start = Instant::now();
    let end = start + RUN_FOR;
    // When the last holder released (µs after start; 0: nobody yet).
    let released_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let options = LockOptions::new().retry(
        RetryPolicy::until(Duration::from_secs(5))
            .base_delay(Duration::from_millis(1))
            .max_delay(Duration::from_millis(20)),
    );
    let tasks: Vec<_> = contenders
        .into_iter()
        .map(|contender| {
            let options = options.clone();
            let released_at = released_at.clone();
            tokio::spawn(async move {
                let (mut waits, mut handoffs, mut holds, mut count) = (
                    Samples::default(),
                    Samples::default(),
                    Samples::default(),
                    0u64,
                );
                while Instant::now() < end {
                    let asked = Instant::now();
                    let turn = match &contender {
                        Contender::Lock(engine) => {
                            match engine.acquire_with(key, options.clone()).await {
                                Ok(lock) => Turn::Lock(lock),
                                Err(_) => continue,
                            }
                        }
                        Contender::Ideal(model) => Turn::Ideal(model.0.lock().await, &model.1),
                    };
                    waits.push(asked.elapsed());
                    let last = released_at.load(std::sync::atomic::Ordering::Acquire);
                    let now = start.elapsed().as_micros() as u64;
                    if last > 0 && now >= last {
                        handoffs.push(Duration::from_micros(now - last));
                    }
                    let held = Instant::now();
                    hold_for(HOLD);
                    holds.push(held.elapsed());
                    // The holder lets go: the hand-off gap runs from here.
                    released_at.store(
                        start.elapsed().as_micros() as u64,
                        std::sync::atomic::Ordering::Release,
                    );
                    match turn {
                        Turn::Lock(lock) => drop(lock.release().await.unwrap()),
                        Turn::Ideal(guard, raw) => {
                            raw.ping().await;
                            raw.ping().await;
                            drop(guard);
                        }
                    }
                    count += 1;
                }
                (waits, handoffs, holds, count)
            })
        })
        .collect();
    let mut outcome = Outcome {
        sections: 0,
        elapsed: Duration::ZERO,
        waits: Samples::default(),
        handoffs: Samples::default(),
        holds: Samples::default(),
        per_task: Vec::new(),
    };
    for task in tasks {
        let (waits, handoffs, holds, count) = task.await.unwrap();
        outcome.holds.0.extend(holds.0);
        outcome.waits.0.extend(waits.0);
        outcome.handoffs.0.extend(handoffs.0);
        outcome.sections += count;
        outcome.per_task.push(count);
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// Prints one scenario; `model` is the same run's ideal model, to compare the waits with.
fn report(name: &str, o: &Outcome, ideal: f64, model: Option<&Outcome>) {
    let rate = o.sections as f64 / o.elapsed.as_secs_f64();
    let (min, max) = (
        *o.per_task.iter().min().unwrap_or(&0),
        *o.per_task.iter().max().unwrap_or(&1),
    );
    let share = min as f64 / max.max(1) as f64;
    let of_ideal = rate / ideal;
    let p99 = o.waits.p99();
    let hp99 = o.handoffs.p99();
    println!(
        "   {name}: {rate:.0} sections/s = {:.0} % of ideal ({}), min/max share {share:.2} ({})",
        of_ideal * 100.0,
        verdict(of_ideal >= 0.7),
        verdict(share >= 0.5)
    );
    println!(
        "     wait per acquire (queueing behind {} others) p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms ({} for p99 ≤ 20 ms)",
        TASKS - 1,
        o.waits.p50().as_secs_f64() * 1e3,
        o.waits.quantile(0.9).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        o.waits.quantile(1.0).as_secs_f64() * 1e3,
        verdict(p99 <= Duration::from_millis(20))
    );
    println!(
        "     hand-off gap (holder lets go → next holder has it) p50 {:.2} ms p99 {:.2} ms ({} for p99 ≤ 20 ms)",
        o.handoffs.p50().as_secs_f64() * 1e3,
        hp99.as_secs_f64() * 1e3,
        verdict(hp99 <= Duration::from_millis(20))
    );
    // The hold is the bench's own code: a slow one is the machine (preemption), not the lock.
    let slow_holds = o.holds.0.iter().filter(|h| **h > HOLD * 13 / 10).count();
    println!(
        "     critical section as seen by the holder p50 {:.3} ms; {slow_holds} of {} took over 1.3 ms (machine noise)",
        o.holds.p50().as_secs_f64() * 1e3,
        o.holds.0.len()
    );
    let model_p99 = model.map_or(p99, |m| m.waits.p99());
    let p99_ratio = p99.as_secs_f64() / model_p99.as_secs_f64().max(f64::EPSILON);
    if model.is_some() {
        println!(
            "     p99 wait / the ideal model's p99 wait ({:.2} ms) = {p99_ratio:.3}",
            model_p99.as_secs_f64() * 1e3
        );
    }
    json_line(
        name,
        &[
            ("model_wait_p99_ms", model_p99.as_secs_f64() * 1e3),
            ("p99_ratio_to_model", p99_ratio),
            ("slow_holds", slow_holds as f64),
            ("sections_per_s", rate),
            ("ideal_per_s", ideal),
            ("of_ideal", of_ideal),
            ("wait_p50_ms", o.waits.p50().as_secs_f64() * 1e3),
            ("wait_p99_ms", p99.as_secs_f64() * 1e3),
            ("handoff_p50_ms", o.handoffs.p50().as_secs_f64() * 1e3),
            ("handoff_p99_ms", hp99.as_secs_f64() * 1e3),
            ("min_max_share", share),
            ("hold_p50_ms", o.holds.p50().as_secs_f64() * 1e3),
        ],
    );
}
