//! Shared leases: read-lease throughput with 16 readers on one key vs exclusive leases on
//! 16 distinct keys, and permit acquisition latency vs an exclusive acquisition. Every
//! number is a ratio to a baseline measured in the same run on the same nodes, in
//! interleaved rounds (the side that goes first alternates).
//!
//! Run: `cargo bench --bench shared`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tower_redlock::Redlock;

const TASKS: usize = 16;
const ROUND_FOR: Duration = Duration::from_millis(200);
const ROUNDS: usize = 20;
const LATENCY_ROUNDS: usize = 10;
const PER_ROUND: usize = 100;
const PERMITS: u32 = 4;

fn main() {
    on_worker(bench());
}

async fn bench() {
    let cluster = cluster().await;
    let redlock = redlock(&cluster.urls()).await;
    for i in 0..100 {
        lock_cycle(&redlock, format!("warm:{i}")).await;
        read_cycle(&redlock, "warm-read").await;
    }

    // 1. Throughput: 16 readers of one key vs 16 exclusive holders of 16 keys.
    let (mut reads, mut exclusive, mut ratios) = (0, 0, Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        let read_round = || {
            throughput(redlock.clone(), move |redlock, _task, _n| async move {
                read_cycle(&redlock, "hot-report").await;
            })
        };
        let exclusive_round = || {
            throughput(redlock.clone(), move |redlock, task, _n| async move {
                lock_cycle(&redlock, format!("x:{round}:{task}")).await;
            })
        };
        let (r, x) = if round % 2 == 0 {
            let r = read_round().await;
            (r, exclusive_round().await)
        } else {
            let x = exclusive_round().await;
            (read_round().await, x)
        };
        reads += r.0;
        exclusive += x.0;
        ratios.push((r.0 as f64 / r.1) / (x.0 as f64 / x.1));
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    println!("\n1. throughput, {TASKS} tasks, {ROUNDS} round pairs of {ROUND_FOR:?}");
    println!("   read leases, one key:        {reads} cycles");
    println!("   exclusive leases, 16 keys:   {exclusive} cycles");
    println!("   median ratio read/exclusive = {ratio:.3}");
    json_line(
        "read_throughput",
        &[
            ("read_cycles", reads as f64),
            ("exclusive_cycles", exclusive as f64),
            ("ratio_median", ratio),
        ],
    );

    // 2. Latency of one acquisition (uncontended): a permit of 4 vs an exclusive lease.
    let (mut permit, mut lock) = (Samples::default(), Samples::default());
    for round in 0..LATENCY_ROUNDS {
        for i in 0..PER_ROUND {
            let key = format!("l:{round}:{i}");
            let (held, d) = timed(redlock.acquire(&key)).await;
            lock.push(d);
            held.unwrap().release().await.unwrap();
            let (held, d) = timed(redlock.acquire_permit(&key, PERMITS)).await;
            permit.push(d);
            held.unwrap().release().await.unwrap();
        }
    }
    let ratio = permit.p50().as_secs_f64() / lock.p50().as_secs_f64();
    println!(
        "\n2. acquisition latency, 1 task, {} each",
        LATENCY_ROUNDS * PER_ROUND
    );
    println!("   {:<28} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    for (name, s) in [("exclusive", &lock), ("permit (1 of 4, free)", &permit)] {
        println!(
            "   {:<28} {:>10.1} {:>10.1}",
            name,
            us(s.p50()),
            us(s.p99())
        );
    }
    println!("   ratio p50 permit/exclusive = {ratio:.3}");

    // 3. A permit found after busy ones: 3 of 4 held, so a rotation tries 1 to 4 permits.
    let held: Vec<_> = {
        let mut held = Vec::new();
        for _ in 0..PERMITS - 1 {
            held.push(redlock.acquire_permit("busy", PERMITS).await.unwrap());
        }
        held
    };
    let mut busy = Samples::default();
    for _ in 0..LATENCY_ROUNDS * PER_ROUND / 4 {
        let (lock, d) = timed(redlock.acquire_permit("busy", PERMITS)).await;
        busy.push(d);
        lock.unwrap().release().await.unwrap();
    }
    drop(held);
    let busy_ratio = busy.p50().as_secs_f64() / lock.p50().as_secs_f64();
    println!(
        "   {:<28} {:>10.1} {:>10.1}",
        "permit (last of 4 free)",
        us(busy.p50()),
        us(busy.p99())
    );
    println!("   ratio p50 last-permit/exclusive = {busy_ratio:.3}");
    json_line(
        "permit_latency",
        &[
            ("exclusive_p50_us", us(lock.p50())),
            ("permit_p50_us", us(permit.p50())),
            ("permit_busy_p50_us", us(busy.p50())),
            ("ratio_p50", ratio),
            ("ratio_busy_p50", busy_ratio),
        ],
    );
}

/// One read acquire + release of `key`.
async fn read_cycle(redlock: &Redlock, key: &str) {
    let lock = redlock.acquire_read(key).await.expect("read acquire");
    lock.release().await.expect("release");
}

/// Cycles completed by [`TASKS`] tasks in [`ROUND_FOR`], and the seconds it took.
async fn throughput<F, Fut>(redlock: Redlock, cycle: F) -> (u64, f64)
where
    F: Fn(Redlock, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + ROUND_FOR;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (cycle, done, redlock) = (cycle.clone(), done.clone(), redlock.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < end {
                    cycle(redlock.clone(), task, n).await;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (done.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}
