//! Worker processes: this test binary re-executed in worker mode.
//!
//! Each worker process has its own `Redlock` (fencing on) over the nodes it is given and
//! runs several client tasks. Each task loops until the shared deadline: acquire the key
//! `safety` (with retries), read a counter from a separate Redis server, yield, write the
//! counter + 1 back (only while enough validity is left), record the section, release.
//! At the end the worker writes its sections (and a `STATS` and a `DONE` line) to a file.

use std::io::Write as _;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tower_redlock::{LockError, Redlock, RetryPolicy};

use crate::history::{Section, mono_now, to_mono};

pub const WORKER_VAR: &str = "TOWER_REDLOCK_SAFETY_WORKER";
pub const NODES_VAR: &str = "SAFETY_NODES";
pub const COUNTER_VAR: &str = "SAFETY_COUNTER";
pub const OUT_VAR: &str = "SAFETY_OUT";
pub const UNTIL_VAR: &str = "SAFETY_UNTIL_NS";
pub const TASKS_VAR: &str = "SAFETY_TASKS";
pub const TTL_VAR: &str = "SAFETY_TTL_MS";

/// The lock key and the Redis names around it.
pub const KEY: &str = "safety";
pub const PREFIX: &str = "safety:";
/// The counter's key on the counter server.
pub const COUNTER_KEY: &str = "counter";
/// Node timeout of the workers' engines.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(100);
/// Validity that must be left to write the counter back.
pub const WRITE_GUARD: Duration = Duration::from_millis(300);
/// Bound on the loop of one task, on top of the deadline.
const MAX_SECTIONS_PER_TASK: usize = 200_000;
/// Bound on one call to the counter server (never faulted: a timeout is a test failure).
const COUNTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the counter server whose calls may take [`COUNTER_TIMEOUT`] (redis-rs
/// gives up after 500 ms by default: too soon on a loaded machine, and the counter server
/// is never faulted).
pub async fn counter_connection(url: &str) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COUNTER_TIMEOUT))
        .set_response_timeout(Some(COUNTER_TIMEOUT));
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("counter connection")
}

/// Worker mode; does nothing unless started by `harness::run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper, run in a child process"]
async fn worker_process() {
    let Ok(id) = std::env::var(WORKER_VAR) else {
        return;
    };
    exit_when_parent_goes();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let nodes: Vec<String> = var(NODES_VAR)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let until: u64 = var(UNTIL_VAR).parse().unwrap();
    let tasks: usize = var(TASKS_VAR).parse().unwrap();
    let ttl = Duration::from_millis(var(TTL_VAR).parse().unwrap());
    let lease = crate::shared::Lease::from_env();

    let redlock = Redlock::builder()
        .nodes(nodes)
        .key_prefix(PREFIX)
        .ttl(ttl)
        .node_timeout(NODE_TIMEOUT)
        // Readers and permits carry no fencing token.
        .fencing(lease.is_none())
        .retry(RetryPolicy::until(Duration::from_secs(3)))
        .build()
        .await
        .expect("worker engine");
    let counter = counter_connection(&var(COUNTER_VAR)).await;

    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = format!("p{id}t{t}");
            match lease {
                Some(lease) => tokio::spawn(crate::shared::client_task(
                    client,
                    redlock.clone(),
                    lease,
                    until,
                    id.parse().unwrap(),
                )),
                None => tokio::spawn(client_task(client, redlock.clone(), counter.clone(), until)),
            }
        })
        .collect();
    let mut out = String::new();
    let mut stats = Stats::default();
    for handle in handles {
        let (sections, task_stats) = handle.await.expect("client task");
        for section in sections {
            out.push_str(&section.to_line());
            out.push('\n');
        }
        stats.add(&task_stats);
    }
    out.push_str(&format!("STATS {}\nDONE\n", stats.to_fields()));
    let mut file = std::fs::File::create(var(OUT_VAR)).expect("history file");
    file.write_all(out.as_bytes()).expect("write history");
    file.sync_all().expect("sync history");
}

/// Outcomes of one task's acquisitions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub acquired: u64,
    pub unavailable: u64,
    pub contended: u64,
    pub other: u64,
    /// Sections that skipped the write: too little validity left.
    pub skipped_writes: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.acquired += other.acquired;
        self.unavailable += other.unavailable;
        self.contended += other.contended;
        self.other += other.other;
        self.skipped_writes += other.skipped_writes;
    }

    pub fn to_fields(self) -> String {
        format!(
            "{} {} {} {} {}",
            self.acquired, self.unavailable, self.contended, self.other, self.skipped_writes
        )
    }

    pub fn parse(line: &str) -> Option<Stats> {
        let fields: Vec<u64> = line
            .strip_prefix("STATS ")?
            .split(' ')
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [acquired, unavailable, contended, other, skipped_writes] = fields[..] else {
            return None;
        };
        Some(Stats {
            acquired,
            unavailable,
            contended,
            other,
            skipped_writes,
        })
    }
}

async fn client_task(
    client: String,
    redlock: Redlock,
    mut counter: MultiplexedConnection,
    until: u64,
) -> (Vec<Section>, Stats) {
    let mut sections = Vec::new();
    let mut stats = Stats::default();
    for _ in 0..MAX_SECTIONS_PER_TASK {
        if mono_now() >= until {
            break;
        }
        // The engine's own retry deadline (2 s) bounds this; the timeout is a backstop.
        let lock = match tokio::time::timeout(Duration::from_secs(30), redlock.acquire(KEY)).await {
            Ok(Ok(lock)) => lock,
            Ok(Err(LockError::Unavailable { .. })) => {
                stats.unavailable += 1;
                continue;
            }
            Ok(Err(LockError::Contended { .. })) => {
                stats.contended += 1;
                continue;
            }
            Ok(Err(_)) => {
                stats.other += 1;
                continue;
            }
            Err(_) => panic!("{client}: acquire hung for 30 s"),
        };
        let acquired = mono_now();
        stats.acquired += 1;
        let token = lock.fencing_token().expect("fencing is on");

        // The critical section: a non-atomic read-modify-write.
        let read: Option<i64> = tokio::time::timeout(COUNTER_TIMEOUT, counter.get(COUNTER_KEY))
            .await
            .expect("counter GET timed out")
            .expect("counter GET");
        let read = read.unwrap_or(0);
        let pause = rand::random_range(0..=2_000u64);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        let wrote = lock.remaining() >= WRITE_GUARD;
        if wrote {
            tokio::time::timeout(
                COUNTER_TIMEOUT,
                counter.set::<_, _, ()>(COUNTER_KEY, read + 1),
            )
            .await
            .expect("counter SET timed out")
            .expect("counter SET");
        } else {
            stats.skipped_writes += 1;
        }
        let valid_until = to_mono(lock.valid_until());
        let released = mono_now();
        sections.push(Section {
            client: client.clone(),
            acquired,
            valid_until,
            released,
            token,
            read,
            wrote,
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), lock.release()).await;
    }
    (sections, stats)
}

/// In a child process: exit as soon as the parent closes our stdin (or dies).
fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}
