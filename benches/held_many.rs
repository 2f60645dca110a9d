//! Scenario 7: many leases held at once (issue #15, item 6). For 1,000 and then
//! `BENCH_HELD_MANY` (default 100,000) leases held by one engine on 3 local nodes: live heap
//! and RSS per held lease, extension calls per node per watchdog tick, acquire latency of a
//! new key while they are held, and that the nodes are empty after releasing them all.
//!
//! Run: `cargo bench --all-features --bench held_many`

mod common;
#[path = "held_many/probe.rs"]
mod probe;
#[path = "held_many/report.rs"]
mod report;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use probe::{NodeStats, Probe};
use report::{Figures, compare, report};
use tokio::time::{Instant, MissedTickBehavior, sleep};
use tower_redlock::{CircuitBreaker, HeldLock, Redlock};

/// Three nodes: the per-node figures do not depend on the count, and fewer `redis-server`s
/// leave more of the two cores to the client.
const NODES: usize = 3;
/// Long, so that the watchdog ticks every ~10 s (ttl/3) and a tick can be watched whole.
const TTL: Duration = Duration::from_secs(30);
/// Generous for a loaded 2-core machine: a slow reply must not end a lease.
const NODE_TIMEOUT: Duration = Duration::from_millis(500);
/// Concurrent acquires (and releases) while filling (and emptying) the engine.
const TASKS: usize = 64;
/// Acquire+release cycles of fresh keys, spread over one tick, while the leases are held.
const SAMPLES: u32 = 2000;
/// Targets of the issue.
const HEAP_TARGET_BYTES: f64 = 2048.0;
/// Latency "does not grow": the big figure within this factor of the small one (the
/// machine's own noise between two windows is ±10 %; see README.md).
const LATENCY_TOLERANCE: f64 = 1.25;
/// Attempts per key while filling.
const FILL_ATTEMPTS: usize = 20;

/// The system allocator, counting the bytes currently allocated (live heap).
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is kept.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets background work (late replies, each bounded by the node timeout) finish.
async fn settle() {
    sleep(NODE_TIMEOUT + Duration::from_millis(100)).await;
}

/// One watchdog tick: a held lease is extended every ~ttl/3.
fn tick() -> Duration {
    TTL / 3
}

fn main() {
    on_worker(bench());
}

async fn bench() {
    let big: usize = std::env::var("BENCH_HELD_MANY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cluster = LocalCluster::start(NODES)
        .await
        .unwrap_or_else(|e| panic!("cannot start {NODES} local redis-server nodes: {e}"));
    let urls = cluster.urls();
    let redlock = Redlock::builder()
        .nodes(urls.clone())
        .ttl(TTL)
        .node_timeout(NODE_TIMEOUT)
        .circuit_breaker(CircuitBreaker::new(1000, Duration::from_millis(10)))
        .build()
        .await
        .expect("build redlock");
    let probe = Probe::connect(&urls).await;
    // Warm up: connections, buffers and the runtime's pools reach their working size.
    for i in 0..2000 {
        lock_cycle(&redlock, format!("warm:{i}")).await;
    }
    settle().await;
    println!(
        "\n7. held leases: {NODES} nodes, ttl {TTL:?} (watchdog tick ~{:?}), node timeout \
         {NODE_TIMEOUT:?}, {TASKS} tasks acquiring distinct keys; {SAMPLES} acquire+release \
         cycles of fresh keys spread over one tick",
        tick()
    );
    let small = held(&redlock, &probe, 1000, "s").await;
    report(&small);
    let large = held(&redlock, &probe, big, "b").await;
    report(&large);
    compare(&small, &large);
    drop(redlock);
    // The test kit stops its nodes (by PID) when the cluster drops.
    drop(cluster);
}

/// Holds `n` leases and measures; releases them all at the end.
async fn held(redlock: &Redlock, probe: &Probe, n: usize, tag: &str) -> Figures {
    let mut leases: Vec<HeldLock> = Vec::with_capacity(n);
    settle().await;
    let (heap0, rss0, tasks0) = (live_heap(), rss(), alive_tasks());
    let fill_start = Instant::now();
    let per_task = n.div_ceil(TASKS);
    let fillers: Vec<_> = (0..TASKS)
        .map(|t| {
            let (redlock, tag) = (redlock.clone(), tag.to_owned());
            tokio::spawn(async move {
                let range = (t * per_task).min(n)..((t + 1) * per_task).min(n);
                let mut mine = Vec::with_capacity(range.len());
                let mut failed = 0;
                for i in range {
                    let key = format!("held:{tag}:{i}");
                    // A refused attempt is counted and tried again (bounded).
                    for _ in 0..FILL_ATTEMPTS {
                        match redlock.acquire(key.as_str()).await {
                            Ok(lease) => {
                                mine.push(lease);
                                break;
                            }
                            Err(_) => {
                                failed += 1;
                                sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                (mine, failed)
            })
        })
        .collect();
    let mut fill_failures = 0;
    for filler in fillers {
        let (mine, failed) = filler.await.expect("filler");
        leases.extend(mine);
        fill_failures += failed;
    }
    let fill_secs = fill_start.elapsed().as_secs_f64();
    // Per lease actually held (a key refused `FILL_ATTEMPTS` times is left out).
    let n = leases.len();
    let tasks_fresh = (alive_tasks() as f64 - tasks0 as f64) / n.max(1) as f64;
    settle().await;
    let heap_fresh = (live_heap() - heap0) as f64 / n as f64;

    // One whole tick: every lease held since before the window is extended once in it.
    let before = probe.stats().await;
    sleep(tick()).await;
    let after = probe.stats().await;
    let delta = |f: fn(&NodeStats) -> u64| -> Vec<u64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a).saturating_sub(f(b)))
            .collect()
    };
    let (calls, pexpires, reads) = (
        delta(|s| s.script_calls),
        delta(|s| s.pexpire_calls),
        delta(|s| s.reads),
    );
    let lost_after_tick = leases.iter().filter(|l| !l.is_held()).count();
    settle().await;
    let heap_steady = (live_heap() - heap0) as f64 / n as f64;
    let rss_steady = (rss() - rss0) as f64 / n as f64;
    let tasks_per_lease = (alive_tasks() as f64 - tasks0 as f64) / n as f64;

    // New keys while the leases are held, paced over one tick (its quiet and busy parts).
    let (mut acquire, mut cycle) = (Samples::default(), Samples::default());
    let (mut sample_failures, mut first_error) = (0, None);
    let mut pace = tokio::time::interval(tick() / SAMPLES);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for i in 0..SAMPLES {
        pace.tick().await;
        let start = Instant::now();
        match redlock.acquire(format!("new:{tag}:{i}")).await {
            Ok(lock) => {
                acquire.push(start.elapsed());
                if lock.release().await.is_err() {
                    sample_failures += 1;
                }
                cycle.push(start.elapsed());
            }
            Err(error) => {
                sample_failures += 1;
                first_error.get_or_insert_with(|| format!("{error}"));
            }
        }
    }

    let lost = leases.iter().filter(|l| !l.is_held()).count();
    let release_ends = release_all(leases).await;
    let not_released = release_ends
        .iter()
        .filter(|(end, _)| end.as_str() != "Released")
        .map(|(_, count)| count)
        .sum();
    let keys_left = probe.wait_empty().await;
    settle().await;
    Figures {
        held: n,
        fill_secs,
        fill_failures,
        sample_failures,
        first_error,
        lost_after_tick,
        heap_fresh,
        heap_steady,
        rss_steady,
        tasks_per_lease,
        tasks_fresh,
        calls,
        pexpires,
        reads,
        acquire,
        cycle,
        lost,
        not_released,
        release_ends,
        heap_after_release: (live_heap() - heap0) as f64 / 1024.0,
        keys_left,
    }
}

/// Releases every lease with [`TASKS`] tasks; returns how many ended each way (an outcome,
/// or an error's kind).
async fn release_all(mut leases: Vec<HeldLock>) -> BTreeMap<String, usize> {
    let per_task = leases.len().div_ceil(TASKS).max(1);
    let mut releasers = Vec::new();
    while !leases.is_empty() {
        let chunk = leases.split_off(leases.len().saturating_sub(per_task));
        releasers.push(tokio::spawn(async move {
            let mut ends = BTreeMap::<String, usize>::new();
            for lease in chunk {
                let end = match lease.release().await {
                    Ok(outcome) => format!("{outcome:?}"),
                    Err(error) => kind(&format!("{error:?}")),
                };
                *ends.entry(end).or_default() += 1;
            }
            ends
        }));
    }
    let mut ends = BTreeMap::new();
    for releaser in releasers {
        for (end, count) in releaser.await.expect("releaser") {
            *ends.entry(end).or_default() += count;
        }
    }
    ends
}

/// The variant name of a `Debug` text (`Unavailable { .. }` → `Unavailable`).
fn kind(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}
