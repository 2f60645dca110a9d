//! Safety checker: several OS processes take one lock over 5 nodes, record their critical
//! sections on one clock, and a checker verifies the history.
//!
//! - `history`: the record of each critical section and the checker (mutual exclusion
//!   within validity windows, strictly increasing fencing tokens, no lost update of a
//!   counter kept in a separate Redis server and updated non-atomically under the lock).
//! - `worker`: the worker processes (this binary re-executed in worker mode).
//! - `chaos`: a seeded fault schedule over a minority of the nodes (crash + delayed empty
//!   restart, pause/resume, proxy latency).
//! - `harness`: one run: nodes, workers, faults, history, verdict.
//! - `shared`: shared-lease runs (read/write: no writer overlaps anything; permits: never
//!   more than `N` at once) and the broken majority-quorum permit counter they must catch.
//!
//! CI runs bounded versions (a clean run, a faulty run, a run with a Redis Cluster as one of
//! the five nodes, and a deliberately broken lock that the checker must catch). The soak is ignored by default:
//!
//! ```sh
//! SAFETY_SOAK_SECS=600 cargo test --all-features --test safety -- --ignored soak --nocapture
//! ```
//!
//! A faulty run prints its seed; `SAFETY_SEED=<seed>` replays the same fault schedule.
#![cfg(feature = "testkit")]

mod chaos;
mod harness;
mod history;
mod shared;
mod worker;

use std::time::Duration;

use harness::{Scenario, run};
use shared::Lease;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_is_safe() {
    let outcome = run(Scenario::new("clean", Duration::from_secs(8))).await;
    println!("{}", outcome.summary());
    assert!(outcome.verdict.is_safe(), "{}", outcome.summary());
    // Not vacuous (a count, not a speed: a loaded machine writes far fewer).
    assert!(outcome.verdict.writes >= 20, "{}", outcome.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_faults_run_is_safe() {
    let mut scenario = Scenario::new("minority-faults", Duration::from_secs(15));
    scenario.faults = true;
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    assert!(outcome.verdict.is_safe(), "{}", outcome.summary());
    let chaos = outcome.chaos.as_ref().unwrap();
    assert!(
        chaos.crashes + chaos.pauses + chaos.slowdowns >= 5,
        "{}",
        outcome.summary()
    );
    assert!(chaos.max_faulty <= chaos::MAX_FAULTY);
    assert!(outcome.verdict.writes >= 10, "{}", outcome.summary());
}

/// One of the five nodes is a Redis Cluster (3 primaries, one vote): the lock stays safe
/// (each worker's lock key lives on one of its shards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_cluster_node_is_safe() {
    let mut scenario = Scenario::new("cluster-node", Duration::from_secs(8));
    scenario.cluster_nodes = 1;
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    assert!(outcome.verdict.is_safe(), "{}", outcome.summary());
    assert!(outcome.verdict.writes >= 20, "{}", outcome.summary());
}

/// The checker is not vacuous: with a lock that does not exclude (each process locks on a
/// different single node, "a quorum of 1 out of 5"), it reports overlaps and lost updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_a_broken_lock() {
    let mut scenario = Scenario::new("broken-lock", Duration::from_secs(3));
    scenario.broken = true;
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    let verdict = &outcome.verdict;
    assert!(
        !verdict.is_safe(),
        "the checker missed a broken lock: {verdict}"
    );
    assert!(verdict.overlap_count > 0, "{verdict}");
    assert!(
        verdict.lost_updates() > 0 || verdict.stale_reads > 0,
        "{verdict}"
    );
}

/// Read/write leases under minority faults: no writer section overlaps any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_run_is_safe() {
    let mut scenario = Scenario::new("read-write", Duration::from_secs(8));
    scenario.faults = true;
    scenario.lease = Some(Lease::ReadWrite);
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    let shared = outcome.shared.as_ref().unwrap();
    assert!(shared.is_safe(), "{}", outcome.summary());
    // Not vacuous: readers shared, and writers ran.
    assert!(
        shared.writers >= 5 && shared.most_at_once >= 2,
        "{}",
        outcome.summary()
    );
}

/// Two permits under minority faults: never more than two holders at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_run_is_safe() {
    let mut scenario = Scenario::new("permits", Duration::from_secs(8));
    scenario.faults = true;
    scenario.lease = Some(Lease::Permits(2));
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    let shared = outcome.shared.as_ref().unwrap();
    assert!(shared.is_safe(), "{}", outcome.summary());
    assert_eq!(shared.most_at_once, 2, "{}", outcome.summary());
}

/// The checker catches the majority-quorum permit counter (see `shared`): three holders of
/// two permits, though no node ever admitted more than two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_a_majority_quorum_permit_counter() {
    let mut scenario = Scenario::new("broken-permits", Duration::from_secs(3));
    scenario.tasks_per_process = 1;
    scenario.lease = Some(Lease::BrokenPermits(2));
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    let shared = outcome.shared.as_ref().unwrap();
    assert!(
        !shared.is_safe(),
        "the checker missed the broken permits: {shared}"
    );
    assert_eq!(shared.most_at_once, 3, "{shared}");
}

/// Long run under faults; duration from `SAFETY_SOAK_SECS` (default 600).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with --ignored soak"]
async fn soak() {
    let secs = std::env::var("SAFETY_SOAK_SECS")
        .ok()
        .map(|s| s.parse().expect("SAFETY_SOAK_SECS: whole seconds"))
        .unwrap_or(600);
    let mut scenario = Scenario::new("soak", Duration::from_secs(secs));
    scenario.faults = true;
    let outcome = run(scenario).await;
    println!("{}", outcome.summary());
    assert!(outcome.verdict.is_safe(), "{}", outcome.summary());
}
