//! Runs one scenario: nodes, worker processes, optional faults, then the checker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tower_redlock::testkit::{FaultProxy, LocalCluster, RedisCluster};

use crate::chaos::{self, ChaosLog};
use crate::history::{self, Section, Verdict, mono_now};
use crate::shared::{self, LEASE_VAR, Lease, SharedVerdict};
use crate::worker::{self, Stats};

/// One run of the workers.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// How long the workers take locks.
    pub duration: Duration,
    pub processes: usize,
    pub tasks_per_process: usize,
    pub ttl: Duration,
    /// Inject faults on a minority of nodes (seeded).
    pub faults: bool,
    /// Each worker process locks on a single, different node: no mutual exclusion.
    pub broken: bool,
    /// How many of the five nodes are Redis Clusters (3 primaries each, one vote each);
    /// the others are standalone servers behind fault proxies.
    pub cluster_nodes: usize,
    /// A shared lease instead of the exclusive one (see `shared`).
    pub lease: Option<Lease>,
}

impl Scenario {
    pub fn new(name: &'static str, duration: Duration) -> Scenario {
        Scenario {
            name,
            duration,
            processes: 3,
            tasks_per_process: 3,
            ttl: Duration::from_secs(1),
            faults: false,
            broken: false,
            cluster_nodes: 0,
            lease: None,
        }
    }
}

/// What a run produced.
pub struct Outcome {
    pub scenario: Scenario,
    pub verdict: Verdict,
    /// The shared-lease checker's verdict, for a shared-lease run.
    pub shared: Option<SharedVerdict>,
    pub stats: Stats,
    pub chaos: Option<ChaosLog>,
    pub took: Duration,
    /// Hand-over times (ms): median, p99, max.
    pub handovers: (f64, f64, f64),
}

impl Outcome {
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut text = format!(
            "safety [{}]: {} processes × {} tasks for {:?} (run took {:.1} s): {}; acquisitions: \
             {} ok, {} unavailable, {} contended, {} other, {} writes skipped (validity low)",
            self.scenario.name,
            self.scenario.processes,
            self.scenario.tasks_per_process,
            self.scenario.duration,
            self.took.as_secs_f64(),
            // A shared-lease run is judged by its own checker (below).
            match &self.shared {
                Some(_) => "see the shared-lease verdict".to_owned(),
                None => self.verdict.to_string(),
            },
            s.acquired,
            s.unavailable,
            s.contended,
            s.other,
            s.skipped_writes
        );
        if let Some(shared) = &self.shared {
            text.push_str(&format!("\n  shared leases: {shared}"));
        }
        let (p50, p99, max) = self.handovers;
        text.push_str(&format!(
            "\n  hand-over between holders: median {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        ));
        if let Some(chaos) = &self.chaos {
            text.push_str(&format!(
                "\n  faults: {} (replay: {}={} cargo test --all-features --test safety)\n  last faults:\n{}",
                chaos.summary(),
                chaos::SEED_VAR,
                chaos.seed,
                chaos.tail(10)
            ));
        }
        text
    }
}

/// The heavy scenarios run one at a time (each starts 6 servers and 3 processes that keep
/// the CPU busy); the checker's own tests run alongside.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "tower-redlock-safety-{name}-{}-{}",
            std::process::id(),
            mono_now()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A worker process, `SIGKILL`ed (by its PID) and reaped when dropped.
struct Worker {
    child: Child,
    id: usize,
    /// Held open until the worker is done: it exits when this closes. (`Child::wait`
    /// would close it, so it is taken out of `child`.)
    _stdin: Option<tokio::process::ChildStdin>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn spawn_worker(
    id: usize,
    nodes: &[String],
    counter: &str,
    dir: &Path,
    until_ns: u64,
    scenario: &Scenario,
) -> Worker {
    let exe = std::env::current_exe().expect("path of the test binary");
    let log = |suffix: &str| {
        std::fs::File::create(dir.join(format!("worker-{id}.{suffix}"))).expect("worker log")
    };
    let mut child = Command::new(exe)
        .args([
            "worker::worker_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(worker::WORKER_VAR, id.to_string())
        // Space-separated: a cluster node's URL has commas.
        .env(worker::NODES_VAR, nodes.join(" "))
        .env(worker::COUNTER_VAR, counter)
        .env(worker::OUT_VAR, dir.join(format!("history-{id}.txt")))
        .env(worker::UNTIL_VAR, until_ns.to_string())
        .env(worker::TASKS_VAR, scenario.tasks_per_process.to_string())
        .env(worker::TTL_VAR, scenario.ttl.as_millis().to_string())
        .env(
            LEASE_VAR,
            scenario.lease.map(Lease::to_var).unwrap_or_default(),
        )
        // The worker exits when this pipe closes, even if we are killed.
        .stdin(Stdio::piped())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a worker process");
    let stdin = child.stdin.take();
    Worker {
        child,
        id,
        _stdin: stdin,
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for a worker to exit successfully (bounded), with its output on failure.
async fn finish(mut worker: Worker, dir: &Path, bound: Duration) {
    let status = tokio::time::timeout(bound, worker.child.wait()).await;
    let id = worker.id;
    let ok = matches!(&status, Ok(Ok(s)) if s.success());
    if !ok {
        drop(worker); // kill it before reading its logs
        panic!(
            "worker {id} failed ({status:?});\nstdout:\n{}\nstderr:\n{}",
            tail(&dir.join(format!("worker-{id}.stdout")), 20),
            tail(&dir.join(format!("worker-{id}.stderr")), 40)
        );
    }
}

/// Reads every worker's history file.
fn collect(dir: &Path, processes: usize) -> (Vec<Section>, Stats) {
    let mut sections = Vec::new();
    let mut stats = Stats::default();
    for id in 0..processes {
        let path = dir.join(format!("history-{id}.txt"));
        let text = std::fs::read_to_string(&path).expect("a worker's history");
        assert!(
            text.ends_with("DONE\n"),
            "worker {id}'s history is incomplete"
        );
        for line in text.lines() {
            if let Some(section) = Section::parse(line) {
                sections.push(section);
            } else if let Some(s) = Stats::parse(line) {
                stats.add(&s);
            } else {
                assert_eq!(line, "DONE", "worker {id}: unexpected line");
            }
        }
    }
    (sections, stats)
}

/// Runs `scenario` (after any other scenario of this binary) and checks its history.
pub async fn run(scenario: Scenario) -> Outcome {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let standalone = 5 - scenario.cluster_nodes;
    let clusters = futures_util::future::join_all(
        (0..scenario.cluster_nodes).map(|_| RedisCluster::start(3, 0)),
    );
    let (nodes, counter_node, clusters) = tokio::join!(
        LocalCluster::start(standalone),
        LocalCluster::start(1),
        clusters
    );
    let nodes = nodes.expect("start the standalone lock nodes");
    let counter_node = counter_node.expect("start the counter server");
    let clusters: Vec<RedisCluster> = clusters
        .into_iter()
        .map(|c| c.expect("start a redis cluster"))
        .collect();
    let proxies: Vec<FaultProxy> = nodes.proxies().await.expect("fault proxies");
    let mut urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    urls.extend(clusters.iter().map(RedisCluster::url));
    let dir = TempDir::new(scenario.name);

    // Workers start taking locks at once and stop at one shared deadline (startup of a
    // process takes well under a second; a late one just runs shorter).
    let run_for = scenario.duration;
    let until = Instant::now() + Duration::from_secs(1) + run_for;
    let until_ns = mono_now() + u64::try_from((until - Instant::now()).as_nanos()).unwrap();
    let workers: Vec<Worker> = (0..scenario.processes)
        .map(|id| {
            let nodes = if scenario.broken {
                // "Quorum of 1 out of 5": each process locks on its own single node.
                vec![urls[id % urls.len()].clone()]
            } else {
                urls.clone()
            };
            spawn_worker(
                id,
                &nodes,
                &counter_node.url(0),
                &dir.0,
                until_ns,
                &scenario,
            )
        })
        .collect();

    let chaos = async {
        if scenario.faults {
            Some(chaos::run(&nodes, &proxies, scenario.ttl, chaos::seed(), until).await)
        } else {
            None
        }
    };
    let wait = async {
        for worker in workers {
            finish(worker, &dir.0, run_for + Duration::from_secs(60)).await;
        }
    };
    let (chaos, ()) = tokio::join!(chaos, wait);

    let (sections, stats) = collect(&dir.0, scenario.processes);
    let mut conn = worker::counter_connection(&counter_node.url(0)).await;
    let counter: Option<i64> = conn.get(worker::COUNTER_KEY).await.unwrap();
    let verdict = history::check(&sections, counter.unwrap_or(0));
    let shared = scenario.lease.map(|lease| shared::check(&sections, lease));
    Outcome {
        shared,
        handovers: history::handovers(&sections),
        scenario,
        verdict,
        stats,
        chaos,
        took: started.elapsed(),
    }
}
