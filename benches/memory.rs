//! Scenario 6: resident memory before and after many lock cycles: flat within 5 %, because
//! no per-lock state outlives its lease. 200k cycles by default, `BENCH_MEMORY_CYCLES=1000000`
//! for the long run.
//!
//! Run: `cargo bench --bench memory`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use common::*;

const TASKS: u64 = 16;

/// The system allocator, counting the bytes currently allocated: live heap, which (unlike
/// RSS) does not keep the allocator's high-water marks.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
/// The most ever allocated at once: in-flight work at the busiest moment.
static PEAK: AtomicI64 = AtomicI64::new(0);

fn grew(by: i64) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only a counter is kept.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1048576.0
}

fn peak_heap() -> f64 {
    PEAK.load(Ordering::Relaxed) as f64 / 1048576.0
}

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Lets background work (late replies, releases; each bounded by the 200 ms node timeout)
/// finish before a measurement.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

/// glibc's `M_ARENA_MAX`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_ARENA_MAX: i32 = -8;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
    fn malloc_trim(pad: usize) -> i32;
}

/// RSS after handing the allocator's free pages back to the OS (glibc's `malloc_trim`):
/// what the process holds, without the allocator's high-water marks.
fn trimmed_rss() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the OS.
    #[allow(unsafe_code)]
    unsafe {
        malloc_trim(0);
    }
    rss()
}

/// Caps glibc's malloc arenas (`BENCH_MEMORY_ARENAS`, default 2: one per runtime worker;
/// 0 leaves glibc's default of up to 8 per core). glibc makes a new arena whenever threads
/// contend for one, at random moments, and each costs RSS that is never given back: with the
/// default, RSS steps up by ~1 MiB once or twice per run (a high-water mark of the allocator,
/// not state of ours; the live heap below does not move). Returns the cap in effect.
fn cap_arenas() -> Option<i32> {
    let arenas: i32 = std::env::var("BENCH_MEMORY_ARENAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if arenas > 0 {
        // SAFETY: `mallopt` only sets an allocator parameter; called before any thread starts.
        #[allow(unsafe_code)]
        let ok = unsafe { mallopt(M_ARENA_MAX, arenas) } == 1;
        return ok.then_some(arenas);
    }
    let _ = arenas;
    None
}

fn main() {
    let arenas = cap_arenas();
    on_worker(bench(arenas));
}

async fn bench(arenas: Option<i32>) {
    let cycles: u64 = std::env::var("BENCH_MEMORY_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let cluster = cluster().await;
    let redlock = redlock(&cluster.urls()).await;

    let run = |total: u64, base: u64| {
        let redlock = redlock.clone();
        async move {
            let next = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (redlock, next) = (redlock.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= total {
                                return;
                            }
                            // Every cycle on a fresh key: any per-key state that leaked would show.
                            let lock = redlock.acquire(format!("mem:{}", base + n)).await.unwrap();
                            lock.release().await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Warm up first: connections, buffers and the allocator's pools grow to their working
    // size (a high-water mark, reached at the busiest moment, which can come late: 20k
    // cycles were not enough here). Half as many cycles as the measured run.
    let cold = rss();
    let cold_heap = live_heap();
    let warm_up = (cycles / 2).max(1);
    run(warm_up, u64::MAX / 2).await;
    settle().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let before = rss();
    let heap_before = live_heap();
    let start = tokio::time::Instant::now();
    // In chunks, so a leak (linear growth) can be told from a high-water mark (flat).
    let chunk = (cycles / 8).max(1);
    let (mut curve, mut heap_curve, mut peak_curve, mut trimmed_curve) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < cycles {
        let n = chunk.min(cycles - done);
        run(n, done).await;
        done += n;
        settle().await;
        curve.push(format!("{:.2}", rss() as f64 / 1048576.0));
        heap_curve.push(format!("{:.2}", live_heap()));
        peak_curve.push(format!("{:.2}", peak_heap()));
    }
    let took = start.elapsed();
    let after = rss();
    let growth = after as f64 / before.max(1) as f64 - 1.0;
    // The same again, reading RSS after handing free pages back (malloc_trim): the memory
    // the process holds, without the allocator's high-water marks.
    let trimmed_before = trimmed_rss();
    let mut done = 0;
    while done < cycles {
        let n = chunk.min(cycles - done);
        run(n, cycles + done).await;
        done += n;
        settle().await;
        trimmed_curve.push(format!("{:.2}", trimmed_rss() as f64 / 1048576.0));
    }
    let trimmed_after = trimmed_rss();
    let trimmed_growth = trimmed_after as f64 / trimmed_before.max(1) as f64 - 1.0;
    let tasks_after = metrics.num_alive_tasks();
    let heap_after = live_heap();
    let heap_growth = heap_after / heap_before.max(f64::MIN_POSITIVE) - 1.0;
    println!(
        "\n6. memory: {cycles} cycles ({TASKS} tasks, distinct keys) in {took:.1?}, then {cycles} more read after malloc_trim"
    );
    println!(
        "   malloc arenas: {}",
        arenas.map_or_else(
            || "glibc default".to_owned(),
            |n| format!("capped at {n} (BENCH_MEMORY_ARENAS=0 for glibc's default)")
        )
    );
    println!(
        "   cold start: RSS {:.1} MiB, live heap {cold_heap:.2} MiB; after {warm_up} warm-up cycles: RSS {:.1} MiB",
        cold as f64 / 1048576.0,
        before as f64 / 1048576.0,
    );
    println!(
        "   RSS before {:.1} MiB, after {:.1} MiB, growth {:+.2} % (target within 5 %: {})",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth * 100.0,
        verdict(growth.abs() <= 0.05)
    );
    println!("   RSS (MiB) after each eighth: {}", curve.join(" "));
    println!(
        "   {cycles} more cycles, RSS read after malloc_trim: before {:.2} MiB, after {:.2} MiB, growth {:+.2} % (target within 5 %: {})",
        trimmed_before as f64 / 1048576.0,
        trimmed_after as f64 / 1048576.0,
        trimmed_growth * 100.0,
        verdict(trimmed_growth.abs() <= 0.05)
    );
    println!(
        "   RSS after malloc_trim (MiB) after each eighth: {}",
        trimmed_curve.join(" ")
    );
    // Capacity of buffers and maps can still step up at a busy moment (tens of KiB); a leak
    // grows with the cycles: one 64-byte allocation per cycle would be 64 bytes/cycle.
    let per_cycle = (heap_after - heap_before) * 1048576.0 / (2 * cycles) as f64;
    println!(
        "   live heap before {heap_before:.2} MiB, after both runs {heap_after:.2} MiB (background work finished), growth {:+.2} % = {per_cycle:.2} bytes/cycle ({} for < 1 byte/cycle)",
        heap_growth * 100.0,
        verdict(per_cycle < 1.0)
    );
    println!(
        "   live heap (MiB) after each eighth of the first run: {}",
        heap_curve.join(" ")
    );
    println!(
        "   peak live heap so far (MiB) after each eighth: {} (RSS steps coincide with new \
         peaks of in-flight allocations; the allocator keeps those pages)",
        peak_curve.join(" ")
    );
    println!(
        "   live tasks before {tasks_before}, after {tasks_after} (no per-lock task outlives its lease)"
    );
    json_line(
        "memory",
        &[
            ("tasks_before", tasks_before as f64),
            ("tasks_after", tasks_after as f64),
            ("cycles", cycles as f64),
            ("warm_up_cycles", warm_up as f64),
            ("rss_cold_mib", cold as f64 / 1048576.0),
            ("rss_before_mib", before as f64 / 1048576.0),
            ("rss_after_mib", after as f64 / 1048576.0),
            ("growth_pct", growth * 100.0),
            ("trimmed_rss_before_mib", trimmed_before as f64 / 1048576.0),
            ("trimmed_rss_after_mib", trimmed_after as f64 / 1048576.0),
            ("trimmed_growth_pct", trimmed_growth * 100.0),
            ("heap_before_mib", heap_before),
            ("heap_after_mib", heap_after),
            ("heap_growth_pct", heap_growth * 100.0),
            ("heap_bytes_per_cycle", per_cycle),
        ],
    );
}
