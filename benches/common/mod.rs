//! Shared bench helpers: local nodes, the raw redis-rs baseline, stats and output.
#![allow(dead_code)]

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tower_redlock::{CircuitBreaker, Redlock};

#[allow(dead_code, unused_imports, missing_docs)]
#[path = "../../src/testkit/mod.rs"]
pub mod testkit;

pub use testkit::LocalCluster;

/// The release script of the raw baseline: compare-and-delete, the classic Redlock release.
pub const RAW_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Runs `bench` on a two-worker runtime, in a task on a worker (where request handlers
/// run), not on the thread blocked in `main`, which every wake-up would have to reach
/// across threads.
pub fn on_worker(bench: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async { tokio::spawn(bench).await.expect("bench task") });
}

pub async fn cluster() -> LocalCluster {
    LocalCluster::start(5)
        .await
        .unwrap_or_else(|e| panic!("cannot start 5 local redis-server nodes: {e}"))
}

/// The engine under test; `BENCH_POOL_SIZE` sets its connections per node (default 1), to
/// compare pool sizes, and `BENCH_LOCAL_HANDOVER=0` turns local hand-over off, to compare.
pub async fn redlock(urls: &[String]) -> Redlock {
    let pool_size = std::env::var("BENCH_POOL_SIZE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let local_handover = std::env::var("BENCH_LOCAL_HANDOVER").map_or(true, |v| v != "0");
    Redlock::builder()
        .nodes(urls.to_vec())
        .pool_size(pool_size)
        .local_handover(local_handover)
        .node_timeout(Duration::from_millis(200))
        .circuit_breaker(CircuitBreaker::new(1000, Duration::from_millis(10)))
        .build()
        .await
        .expect("build redlock")
}

/// Raw multiplexed connections, one per node, with the release script loaded.
pub struct Raw {
    conns: Vec<MultiplexedConnection>,
    sha: String,
}

impl Raw {
    pub async fn connect(urls: &[String]) -> Raw {
        let mut conns = Vec::new();
        for url in urls {
            conns.push(
                redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            );
        }
        let script = redis::Script::new(RAW_RELEASE);
        for conn in &mut conns {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(RAW_RELEASE)
                .query_async(conn)
                .await
                .unwrap();
        }
        Raw {
            conns,
            sha: script.get_hash().to_owned(),
        }
    }

    /// The raw floor: parallel `SET NX PX` to all nodes, then parallel EVALSHA
    /// compare-and-DEL to all nodes, each waiting for every node.
    pub async fn cycle(&self, key: &str, token: &str) {
        self.set_all(key, token).await;
        self.del_all(key, token).await;
    }

    /// Parallel `SET NX PX` to every node, waiting for all.
    pub async fn set_all(&self, key: &str, token: &str) {
        let sets = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(10_000)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        });
        futures_util::future::join_all(sets).await;
    }

    /// Parallel EVALSHA compare-and-DEL to every node, waiting for all.
    pub async fn del_all(&self, key: &str, token: &str) {
        let dels = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let _: i64 = redis::cmd("EVALSHA")
                    .arg(&self.sha)
                    .arg(1)
                    .arg(key)
                    .arg(token)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        });
        futures_util::future::join_all(dels).await;
    }

    /// One parallel PING round: one round-trip time.
    pub async fn ping(&self) {
        let pings = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move {
                let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
            }
        });
        futures_util::future::join_all(pings).await;
    }
}

/// Latency samples.
#[derive(Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One acquire + release of `key` (panics on failure: benches run on healthy nodes).
pub async fn lock_cycle(redlock: &Redlock, key: impl AsRef<str>) {
    redlock
        .acquire(key)
        .await
        .expect("acquire")
        .release()
        .await
        .expect("release");
}

/// Times `f` once.
pub async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Prints one JSON line (`{"scenario": ..., fields...}`) for machines.
pub fn json_line(scenario: &str, fields: &[(&str, f64)]) {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "\"{k}\":{}",
                if v.is_finite() {
                    format!("{v:.3}")
                } else {
                    "null".into()
                }
            )
        })
        .collect();
    println!("{{\"scenario\":\"{scenario}\",{}}}", body.join(","));
}

/// A target check, printed next to the number.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}
