//! One seeded run: nodes, engines, workers and faults, then the checks.

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tower_redlock::CircuitBreaker;
use tower_redlock::sim::SimCluster;

use crate::faults::{self, Baseline};
use crate::record::Log;
use crate::rng::Rng;
use crate::worker::Worker;
use crate::{FAULTS_FOR, NODE_TIMEOUT, TTL, WORK_FOR, checks};

/// What one run found.
pub struct Outcome {
    /// Grants checked.
    pub grants: usize,
    /// Violations, one a line (empty: none).
    pub violations: String,
    /// Every event, in order (see [`Log::event`]).
    pub trace: Vec<String>,
}

pub async fn run(seed: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let nodes = if rng.one_in(2) { 3 } else { 5 };
    let cluster = SimCluster::new(nodes, seed);
    let baseline_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let log = Log::new();
    let baselines: Vec<Baseline> = (0..nodes).map(|_| Baseline::draw(&mut rng)).collect();
    for (node, baseline) in baselines.iter().enumerate() {
        baseline.heal(&cluster, node);
    }
    let mut engines = Vec::new();
    for _ in 0..2 + rng.below(2) {
        let engine = cluster
            .builder()
            .ttl(TTL)
            .node_timeout(NODE_TIMEOUT)
            .circuit_breaker(CircuitBreaker::new(5, Duration::from_millis(200)))
            .build()
            .await
            .map_err(|e| format!("build: {e}"))?;
        engines.push(engine);
    }
    let start = Instant::now();
    let mut fault_tasks: Vec<_> = baselines
        .iter()
        .enumerate()
        .map(|(node, baseline)| {
            tokio::spawn(faults::node_faults(
                cluster.clone(),
                node,
                *baseline,
                rng.fork(),
                start + FAULTS_FOR,
                log.clone(),
            ))
        })
        .collect();
    fault_tasks.push(tokio::spawn(faults::majority_pauses(
        cluster.clone(),
        rng.fork(),
        start + FAULTS_FOR,
        log.clone(),
    )));
    let workers: Vec<_> = (0..3 + rng.below(2) as usize)
        .map(|id| {
            let worker = Worker {
                id,
                engine: engines[id % engines.len()].clone(),
                cluster: cluster.clone(),
                log: log.clone(),
                rng: rng.fork(),
                until: start + WORK_FOR,
            };
            tokio::spawn(worker.run())
        })
        .collect();
    for task in workers.into_iter().chain(fault_tasks) {
        task.await.map_err(|e| format!("a task panicked: {e}"))?;
    }
    for engine in &engines {
        engine.shutdown().await;
    }
    drop(engines);
    // (d): every lock key gone a ttl (plus the node timeouts) after everything ended.
    sleep(TTL + NODE_TIMEOUT * 4).await;
    for node in 0..nodes {
        for key in cluster.keys(node) {
            let key = String::from_utf8_lossy(&key).into_owned();
            if key.ends_with(":lock") {
                log.violation(format!("node {node} still holds {key}"));
            }
        }
    }
    // (e): tasks back to the baseline (bounded wait).
    let mut alive = 0;
    for _ in 0..50 {
        alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive <= baseline_tasks {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    if alive > baseline_tasks {
        log.violation(format!(
            "{alive} tasks alive after shutdown, {baseline_tasks} before"
        ));
    }
    let mut record = std::mem::take(&mut *log.record.lock().unwrap());
    checks::grants(&mut record, nodes, log.start);
    checks::releases(&mut record, log.start);
    Ok(Outcome {
        grants: record.grants.len(),
        violations: record.violations.join("\n"),
        trace: record.trace,
    })
}
