//! The figures of one run, printed for people and as JSON lines.

use std::collections::BTreeMap;

use crate::common::{Samples, json_line, us, verdict};
use crate::{HEAP_TARGET_BYTES, LATENCY_TOLERANCE, SAMPLES, tick};

/// The figures of one run with `held` leases.
pub struct Figures {
    pub held: usize,
    pub fill_secs: f64,
    /// Acquire attempts refused while filling (each tried again).
    pub fill_failures: usize,
    /// New-key cycles that failed while the leases were held.
    pub sample_failures: usize,
    pub first_error: Option<String>,
    /// Leases no longer held right after the tick window.
    pub lost_after_tick: usize,
    /// Live heap per held lease right after acquiring (before any watchdog is due).
    pub heap_fresh: f64,
    /// Live heap per held lease once every lease has been extended at least once.
    pub heap_steady: f64,
    pub rss_steady: f64,
    pub tasks_per_lease: f64,
    /// Tasks per lease right after acquiring (watchdogs of leases already due).
    pub tasks_fresh: f64,
    /// Per node, during one tick.
    pub calls: Vec<u64>,
    pub pexpires: Vec<u64>,
    pub reads: Vec<u64>,
    pub acquire: Samples,
    pub cycle: Samples,
    pub lost: usize,
    pub not_released: usize,
    pub release_ends: BTreeMap<String, usize>,
    pub heap_after_release: f64,
    pub keys_left: Vec<u64>,
}

impl Figures {
    pub fn calls_per_node(&self) -> f64 {
        self.calls.iter().sum::<u64>() as f64 / self.calls.len() as f64
    }
}

fn list(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn report(f: &Figures) {
    let n = f.held;
    println!(
        "\n   {n} leases held (acquired in {:.2} s; {} attempts refused and tried again)",
        f.fill_secs, f.fill_failures
    );
    println!(
        "   memory per held lease: live heap {:.0} B right after acquiring, {:.0} B after the \
         first extension ({}: ≤ {HEAP_TARGET_BYTES:.0} B); RSS {:.0} B; tasks per lease {:.2} \
         right after acquiring, {:.2} after the first extension",
        f.heap_fresh,
        f.heap_steady,
        if f.lost_after_tick == 0 {
            verdict(f.heap_steady <= HEAP_TARGET_BYTES)
        } else {
            // A lost lease's watchdog has ended: the figure understates a held one's cost.
            "not comparable, leases were lost"
        },
        f.rss_steady,
        f.tasks_fresh,
        f.tasks_per_lease
    );
    let per_node = f.calls_per_node();
    println!(
        "   one tick ({:?}), per node: {} script calls ({:.3} per lease), {} keys extended, \
         {} reads by the node",
        tick(),
        list(&f.calls),
        per_node / n as f64,
        list(&f.pexpires),
        list(&f.reads)
    );
    println!(
        "   extension traffic: {per_node:.0} calls per node per tick, each its own request \
         ({}: one pipelined round trip per node per tick, counted as ≤ {} calls of ≤ 1,000 \
         leases)",
        verdict(per_node <= traffic_target(n)),
        traffic_target(n)
    );
    println!(
        "   new key while held: acquire p50 {:.1} µs p99 {:.1} µs; acquire+release p50 {:.1} µs \
         p99 {:.1} µs",
        us(f.acquire.p50()),
        us(f.acquire.p99()),
        us(f.cycle.p50()),
        us(f.cycle.p99())
    );
    println!(
        "   new-key cycles that failed: {} of {SAMPLES}{}",
        f.sample_failures,
        f.first_error
            .as_ref()
            .map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    println!(
        "   leases still held: {} of {n} after the tick window, {} at the end ({} for all)",
        n - f.lost_after_tick,
        n - f.lost,
        verdict(f.lost == 0)
    );
    println!(
        "   lost while held: {}; releases not `Released`: {} ({}); keys left per node: {}; \
         live heap after releasing: {:+.1} KiB",
        f.lost,
        f.not_released,
        f.release_ends
            .iter()
            .map(|(end, count)| format!("{end} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        list(&f.keys_left),
        f.heap_after_release
    );
}

/// Calls per node per tick that one pipelined round trip of batches of ≤ 1,000 leases gives.
fn traffic_target(n: usize) -> f64 {
    n.div_ceil(1000).max(1) as f64
}

pub fn compare(small: &Figures, large: &Figures) {
    let ratio =
        |a: std::time::Duration, b: std::time::Duration| us(b) / us(a).max(f64::MIN_POSITIVE);
    let p50 = ratio(small.acquire.p50(), large.acquire.p50());
    let p99 = ratio(small.acquire.p99(), large.acquire.p99());
    let comparable = [small, large]
        .iter()
        .all(|f| f.lost == 0 && f.sample_failures == 0);
    println!(
        "\n   {} vs {} held: heap per lease {:.0} vs {:.0} B; calls per node per tick {:.0} vs \
         {:.0}; acquire p50 ×{p50:.2}, p99 ×{p99:.2} ({} for ≤ ×{LATENCY_TOLERANCE})",
        large.held,
        small.held,
        large.heap_steady,
        small.heap_steady,
        large.calls_per_node(),
        small.calls_per_node(),
        verdict(p50 <= LATENCY_TOLERANCE && p99 <= LATENCY_TOLERANCE && comparable)
    );
    if !comparable {
        println!(
            "   (latency not comparable: leases were lost or new-key cycles failed, so the \
             engine was not doing the work of holding them)"
        );
    }
    for f in [small, large] {
        let mut fields = vec![
            ("held", f.held as f64),
            ("fill_s", f.fill_secs),
            ("heap_per_lease_fresh_b", f.heap_fresh),
            ("heap_per_lease_b", f.heap_steady),
            ("rss_per_lease_b", f.rss_steady),
            ("tasks_per_lease_fresh", f.tasks_fresh),
            ("tasks_per_lease", f.tasks_per_lease),
            ("calls_per_node_per_tick", f.calls_per_node()),
            (
                "calls_per_lease_per_tick",
                f.calls_per_node() / f.held as f64,
            ),
            ("acquire_p50_us", us(f.acquire.p50())),
            ("acquire_p99_us", us(f.acquire.p99())),
            ("cycle_p50_us", us(f.cycle.p50())),
            ("cycle_p99_us", us(f.cycle.p99())),
            ("fill_failures", f.fill_failures as f64),
            ("sample_failures", f.sample_failures as f64),
            ("lost_after_tick", f.lost_after_tick as f64),
            ("lost", f.lost as f64),
            ("not_released", f.not_released as f64),
            ("keys_left", f.keys_left.iter().sum::<u64>() as f64),
        ];
        if std::ptr::eq(f, large) {
            fields.push(("acquire_p50_ratio", p50));
            fields.push(("acquire_p99_ratio", p99));
        }
        json_line("held_many", &fields);
    }
}
