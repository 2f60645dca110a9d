//! Single-flight cache fill: many concurrent misses, one load.
//!
//! 100 requests arrive at once for a report that is not cached yet. Each one checks the cache
//! (a Redis key with a ttl on node 0), misses, and takes the report's lock, waiting for it.
//! The first holder double-checks the cache, still misses, loads the report (200 ms) and
//! stores it; every later holder finds it in the cache on its double-check and loads nothing.
//! In this run the loader is called once, and the run checks it.
//!
//! That comes from the double-check, not from the lock alone: the lock makes the loads take
//! turns (mutual exclusion while a lease is valid), and the check made once the lock is held
//! makes every later holder find the report. A lock is not "exactly once": a holder whose
//! lease is lost mid-load (a paused process, a partition) can overlap with the next one, and
//! both load. Filling a cache is idempotent, so that costs only a second load; work whose
//! second run does harm needs a check-and-set or fencing token (see `cron`).
//!
//! ```text
//! cargo run --example cache --features testkit
//! ```

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BoxError, Nodes};
use redis::AsyncTypedCommands;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;
use tower_redlock::{LockOptions, Redlock, RetryPolicy};

const REQUESTS: usize = 100;
const LOAD_TIME: Duration = Duration::from_millis(200);
const CACHE_TTL_SECS: u64 = 60;
/// How long a request waits for the lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Bound on the whole run.
const DEADLINE: Duration = Duration::from_secs(60);

/// How a request got its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Served {
    /// In the cache at the first look.
    Hit,
    /// In the cache at the double-check, after waiting for the lock.
    FilledWhileWaiting,
    /// Loaded by this request.
    Loaded,
}

struct Cache {
    redlock: Redlock,
    conn: MultiplexedConnection,
    cache_key: String,
    loader_calls: AtomicUsize,
}

impl Cache {
    /// Check, lock, double-check, load, store, release.
    async fn get(&self) -> Result<(String, Served), BoxError> {
        let mut conn = self.conn.clone();
        if let Some(value) = conn.get(&self.cache_key).await? {
            return Ok((value, Served::Hit));
        }
        let wait = RetryPolicy::until(LOCK_WAIT)
            .base_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(20));
        let lock = self
            .redlock
            .acquire_with("report:monthly", LockOptions::new().retry(wait))
            .await
            .map_err(|e| format!("waiting for the fill lock: {e}"))?;
        // Whoever held the lock before us may have filled the cache meanwhile.
        let served = match conn.get(&self.cache_key).await? {
            Some(value) => (value, Served::FilledWhileWaiting),
            None => {
                let value = self.load().await;
                conn.set_ex(&self.cache_key, &value, CACHE_TTL_SECS).await?;
                (value, Served::Loaded)
            }
        };
        lock.release().await?;
        Ok(served)
    }

    /// The expensive load (a slow query, a remote call, ...).
    async fn load(&self) -> String {
        let call = self.loader_calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(LOAD_TIME).await;
        format!("monthly report (load #{call})")
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    let cache = Arc::new(Cache {
        redlock: nodes.builder()?.build().await?,
        conn: nodes.data_connection().await?,
        cache_key: format!("example:cache:{}:report:monthly", common::run_id()),
        loader_calls: AtomicUsize::new(0),
    });

    println!(
        "{REQUESTS} concurrent requests for an uncached report (load takes {} ms) ...",
        LOAD_TIME.as_millis()
    );
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for _ in 0..REQUESTS {
        let cache = cache.clone();
        requests.spawn(async move {
            let began = Instant::now();
            cache
                .get()
                .await
                .map(|(value, served)| (value, served, began.elapsed()))
        });
    }
    let mut results = Vec::with_capacity(REQUESTS);
    let collect = async {
        while let Some(joined) = requests.join_next().await {
            results.push(joined.map_err(|e| format!("a request failed: {e}"))?);
        }
        Ok::<_, BoxError>(())
    };
    let finished = tokio::time::timeout(DEADLINE, collect).await;
    let elapsed = started.elapsed();
    let _ = cache.conn.clone().del(&cache.cache_key).await;
    match finished {
        Ok(outcome) => outcome?,
        Err(_) => return Err(format!("requests did not finish within {DEADLINE:?}").into()),
    }
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;

    let count = |kind| results.iter().filter(|(_, s, _)| *s == kind).count();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, _, t)| *t).collect();
    latencies.sort();
    let calls = cache.loader_calls.load(Ordering::SeqCst);
    let first = &results[0].0;
    let same = results.iter().all(|(value, _, _)| value == first);
    println!(
        "served {}: {} loaded, {} filled while waiting for the lock, {} cache hits",
        results.len(),
        count(Served::Loaded),
        count(Served::FilledWhileWaiting),
        count(Served::Hit)
    );
    println!(
        "latency: min {} ms, median {} ms, max {} ms; all done in {:.2} s",
        latencies[0].as_millis(),
        latencies[latencies.len() / 2].as_millis(),
        latencies[latencies.len() - 1].as_millis(),
        elapsed.as_secs_f64()
    );
    println!(
        "every response: {:?}{}",
        first,
        if same { "" } else { " (NOT all equal)" }
    );
    println!("loader calls: {calls}");
    if calls != 1 || !same {
        return Err(
            format!("expected exactly 1 loader call and equal responses, got {calls}").into(),
        );
    }
    println!("OK: single flight, exactly 1 loader call for {REQUESTS} requests");
    Ok(())
}
