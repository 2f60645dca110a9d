//! Scenarios 1–3: uncontended cycle latency, throughput with 16 tasks, a stalled node.
//! Every number is a ratio to a baseline measured in the same run on the same nodes.
//!
//! Run: `cargo bench --bench lock_cycle`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

const ROUNDS: usize = 10;
const PER_ROUND: usize = 200;
const THROUGHPUT_FOR: Duration = Duration::from_millis(200);
const THROUGHPUT_ROUNDS: usize = 40;
/// The engine's node timeout (see `common::redlock`).
const NODE_TIMEOUT: Duration = Duration::from_millis(200);
const TASKS: usize = 16;

fn main() {
    on_worker(bench());
}

async fn bench() {
    let cluster = cluster().await;
    let urls = cluster.urls();
    let raw = Arc::new(Raw::connect(&urls).await);
    let redlock = redlock(&urls).await;

    // Warm up both paths.
    for i in 0..200 {
        raw.cycle(&format!("warm:{i}"), "t").await;
        lock_cycle(&redlock, format!("warm:{i}")).await;
    }

    // 1. Uncontended cycle, one task; interleaved rounds so drift hits both alike.
    let (mut raw_s, mut lock_s, mut ping_s) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut raw_set, mut raw_del, mut acq, mut rel) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let key = format!("c:{round}:{i}");
            let raw_key = format!("raw:{key}");
            let ((), d1) = timed(raw.set_all(&raw_key, "token")).await;
            let ((), d2) = timed(raw.del_all(&raw_key, "token")).await;
            raw_set.push(d1);
            raw_del.push(d2);
            raw_s.push(d1 + d2);
            let (lock, d1) = timed(redlock.acquire(&key)).await;
            let (released, d2) = timed(lock.unwrap().release()).await;
            released.unwrap();
            acq.push(d1);
            rel.push(d2);
            lock_s.push(d1 + d2);
            let ((), d) = timed(raw.ping()).await;
            ping_s.push(d);
        }
    }
    let ratio = lock_s.p50().as_secs_f64() / raw_s.p50().as_secs_f64();
    println!(
        "\n1. uncontended acquire+release, 1 task, {} cycles each",
        ROUNDS * PER_ROUND
    );
    println!("   {:<28} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    println!(
        "   {:<28} {:>10.1} {:>10.1}",
        "raw floor (SET NX ×5, DEL ×5)",
        us(raw_s.p50()),
        us(raw_s.p99())
    );
    println!(
        "   {:<28} {:>10.1} {:>10.1}",
        "tower-redlock",
        us(lock_s.p50()),
        us(lock_s.p99())
    );
    println!(
        "   {:<28} {:>10.1} {:>10.1}",
        "one RTT (PING ×5)",
        us(ping_s.p50()),
        us(ping_s.p99())
    );
    println!(
        "   breakdown p50: raw SET×5 {:.1} + DEL×5 {:.1}; lock acquire {:.1} + release {:.1}",
        us(raw_set.p50()),
        us(raw_del.p50()),
        us(acq.p50()),
        us(rel.p50())
    );
    println!(
        "   ratio p50 lock/raw = {ratio:.3} (target ≤ 0.9: {})",
        verdict(ratio <= 0.9)
    );
    json_line(
        "uncontended_cycle",
        &[
            ("raw_p50_us", us(raw_s.p50())),
            ("raw_p99_us", us(raw_s.p99())),
            ("lock_p50_us", us(lock_s.p50())),
            ("lock_p99_us", us(lock_s.p99())),
            ("rtt_p50_us", us(ping_s.p50())),
            ("ratio_p50", ratio),
        ],
    );
    let healthy_p50 = lock_s.p50();

    // 2. Throughput: 16 tasks on distinct keys, in interleaved round pairs (the side that
    // goes first alternates), so that the machine's drift hits both alike; the claim is the
    // median of the pairs' ratios, which one disturbed round cannot move.
    let (mut raw_cycles, mut lock_cycles, mut raw_time, mut lock_time) = (0, 0, 0.0, 0.0);
    let mut ratios = Vec::with_capacity(THROUGHPUT_ROUNDS);
    for round in 0..THROUGHPUT_ROUNDS {
        let raw_round = || {
            let raw = raw.clone();
            throughput(move |task, n| {
                let raw = raw.clone();
                async move {
                    raw.cycle(&format!("traw:{round}:{task}:{n}"), "token")
                        .await
                }
            })
        };
        let lock_round = || {
            let redlock = redlock.clone();
            throughput(move |task, n| {
                let redlock = redlock.clone();
                async move {
                    lock_cycle(&redlock, format!("t:{round}:{task}:{n}")).await;
                }
            })
        };
        let ((rn, rs), (ln, ls)) = if round % 2 == 0 {
            let r = raw_round().await;
            (r, lock_round().await)
        } else {
            let l = lock_round().await;
            (raw_round().await, l)
        };
        raw_cycles += rn;
        raw_time += rs;
        lock_cycles += ln;
        lock_time += ls;
        ratios.push((ln as f64 / ls) / (rn as f64 / rs));
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[(ratios.len() - 1) / 2] + ratios[ratios.len() / 2]) / 2.0;
    let (raw_rate, lock_rate) = (raw_cycles as f64 / raw_time, lock_cycles as f64 / lock_time);
    let ratio = lock_rate / raw_rate;
    println!(
        "\n2. throughput, {TASKS} tasks, distinct keys, {THROUGHPUT_ROUNDS} interleaved round pairs of {THROUGHPUT_FOR:?} each"
    );
    println!("   raw floor      {raw_rate:>10.0} cycles/s");
    println!("   tower-redlock  {lock_rate:>10.0} cycles/s");
    println!(
        "   ratio lock/raw per pair: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "   ratio lock/raw: median of pairs {median:.3} (target ≥ 0.95: {}), of the totals {ratio:.3}",
        verdict(median >= 0.95)
    );
    json_line(
        "throughput_16",
        &[
            ("raw_per_s", raw_rate),
            ("lock_per_s", lock_rate),
            ("ratio_of_totals", ratio),
            ("ratio", median),
        ],
    );

    // 3. One of five nodes stalled (SIGSTOP), for as many cycles as scenario 1: the first
    // node timeout (requests still go to the frozen node until one of them times out), then
    // the node skipped until it answers.
    cluster.pause(4).unwrap();
    let stalled_at = Instant::now();
    let (mut stalled, mut before_skip, mut after_skip) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..(ROUNDS * PER_ROUND) {
        let detected = stalled_at.elapsed() > NODE_TIMEOUT;
        let ((), d) = timed(lock_cycle(&redlock, format!("s:{i}"))).await;
        stalled.push(d);
        if detected {
            after_skip.push(d);
        } else {
            before_skip.push(d);
        }
    }
    cluster.resume(4).unwrap();
    let ratio = stalled.p50().as_secs_f64() / healthy_p50.as_secs_f64();
    println!(
        "\n3. one node of five stalled (SIGSTOP), node timeout {NODE_TIMEOUT:?}, {} cycles",
        stalled.0.len()
    );
    println!(
        "   healthy p50 {:>8.1} µs   stalled p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(healthy_p50),
        us(stalled.p50()),
        us(stalled.p99())
    );
    println!(
        "   within the first node timeout ({} cycles) p50 {:.1} µs; after it ({} cycles, node skipped) p50 {:.1} µs",
        before_skip.0.len(),
        us(before_skip.p50()),
        after_skip.0.len(),
        us(after_skip.p50())
    );
    println!(
        "   ratio stalled/healthy = {ratio:.3} (target ≤ 1.5: {})",
        verdict(ratio <= 1.5)
    );
    json_line(
        "stalled_node",
        &[
            ("healthy_p50_us", us(healthy_p50)),
            ("stalled_p50_us", us(stalled.p50())),
            ("stalled_p99_us", us(stalled.p99())),
            ("ratio_p50", ratio),
        ],
    );

    // 1b. Nodes are rarely equally fast. One node 1 ms slower (fault proxy in front of all
    // five, so both sides pay the proxy hop): the raw floor waits for it, a quorum does not.
    let proxies = cluster.proxies().await.expect("fault proxies");
    let proxied: Vec<String> = proxies.iter().map(|p| p.url()).collect();
    proxies[4].set_latency(Duration::from_millis(1));
    let raw_p = Raw::connect(&proxied).await;
    let lock_p = common::redlock(&proxied).await;
    let (mut raw_slow, mut lock_slow) = (Samples::default(), Samples::default());
    for i in 0..(ROUNDS * PER_ROUND / 4) {
        let key = format!("slow:{i}");
        let ((), d) = timed(raw_p.cycle(&format!("raw:{key}"), "token")).await;
        raw_slow.push(d);
        let (lock, d1) = timed(lock_p.acquire(&key)).await;
        let (released, d2) = timed(lock.unwrap().release()).await;
        released.unwrap();
        lock_slow.push(d1 + d2);
    }
    let ratio = lock_slow.p50().as_secs_f64() / raw_slow.p50().as_secs_f64();
    println!("\n1b. one node of five 1 ms slower (all through a fault proxy)");
    println!(
        "   raw floor p50 {:.1} µs   tower-redlock p50 {:.1} µs   ratio {ratio:.3} (target ≤ 0.9: {})",
        us(raw_slow.p50()),
        us(lock_slow.p50()),
        verdict(ratio <= 0.9)
    );
    json_line(
        "uncontended_cycle_one_slow_node",
        &[
            ("raw_p50_us", us(raw_slow.p50())),
            ("lock_p50_us", us(lock_slow.p50())),
            ("ratio_p50", ratio),
        ],
    );
}

/// Runs `cycle` in `TASKS` tasks for `THROUGHPUT_FOR`: (cycles done, seconds taken).
async fn throughput<F, Fut>(cycle: F) -> (u64, f64)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + THROUGHPUT_FOR;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (cycle, done) = (cycle.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < end {
                    cycle(task, n).await;
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
