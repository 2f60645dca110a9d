//! Batch cache warming: a concurrency limit, one lock per item, two warmers at once.
//!
//! Two warmers (as two processes would, each with its own engine) warm the same 50 cache
//! items, at most 8 at a time each (`buffer_unordered`), one from the first item up, the other
//! from the last one down. Each item is warmed under its own lock (`with_lock`): a warmer skips
//! an item that is already warm, and checks again once it holds the lock, since the other
//! warmer may have warmed it while it waited.
//!
//! In this run every item is warmed once, and the run checks it. That comes from the
//! double-check, not from the lock alone: the lock makes the two warmers take turns on an
//! item (mutual exclusion while a lease is valid), and the check made once the lock is held
//! makes the second one find the item warm. A lock is not "exactly once": if a lease is lost
//! mid-warm (a paused process, a partition), the other warmer can take the lock and warm the
//! item again. Warming a cache is idempotent, so that costs only work; a job whose second run
//! does harm needs a check-and-set or fencing token in the store it writes to (see `cron`).
//!
//! ```text
//! cargo run --example batch --features testkit
//! ```

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BoxError, Nodes};
use futures_util::{StreamExt, TryStreamExt, stream};
use redis::AsyncTypedCommands;
use redis::aio::MultiplexedConnection;
use tower_redlock::{Redlock, RetryPolicy};

const ITEMS: usize = 50;
const CONCURRENCY: usize = 8;
const WARM_TIME: Duration = Duration::from_millis(40);
const CACHE_TTL_SECS: u64 = 300;
/// Bound on the whole run.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a warmer did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Warmed,
    /// Warm at the first look: no lock taken.
    AlreadyWarm,
    /// Warm at the check under the lock: the other warmer did it while we waited.
    WarmedByOther,
}

/// State both warmers share (in a real deployment: the cache itself).
struct Items {
    conn: MultiplexedConnection,
    run: String,
    /// How often each item was warmed.
    warm_calls: Vec<AtomicUsize>,
}

impl Items {
    fn key(&self, item: usize) -> String {
        format!("example:batch:{}:item:{item}", self.run)
    }

    async fn is_warm(&self, item: usize) -> Result<bool, BoxError> {
        Ok(self.conn.clone().exists(self.key(item)).await?)
    }

    /// The expensive part: compute the item and store it.
    async fn warm(&self, item: usize, by: &str) -> Result<(), BoxError> {
        self.warm_calls[item].fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(WARM_TIME).await;
        let value = format!("item {item}, warmed by {by}");
        self.conn
            .clone()
            .set_ex(self.key(item), value, CACHE_TTL_SECS)
            .await?;
        Ok(())
    }
}

struct Warmer {
    name: &'static str,
    redlock: Redlock,
    items: Arc<Items>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// One warmer's counts.
#[derive(Debug, Default)]
struct Stats {
    warmed: usize,
    already_warm: usize,
    warmed_by_other: usize,
    max_in_flight: usize,
}

impl Warmer {
    /// Warms every item of `order`, at most `CONCURRENCY` at a time.
    async fn run(&self, order: Vec<usize>) -> Result<Stats, BoxError> {
        let steps: Vec<Step> = stream::iter(order)
            .map(|item| self.warm_item(item))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let count = |kind| steps.iter().filter(|s| **s == kind).count();
        Ok(Stats {
            warmed: count(Step::Warmed),
            already_warm: count(Step::AlreadyWarm),
            warmed_by_other: count(Step::WarmedByOther),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
        })
    }

    async fn warm_item(&self, item: usize) -> Result<Step, BoxError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let step = self.warm_item_locked(item).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        step
    }

    async fn warm_item_locked(&self, item: usize) -> Result<Step, BoxError> {
        if self.items.is_warm(item).await? {
            return Ok(Step::AlreadyWarm);
        }
        let items = &self.items;
        self.redlock
            .with_lock(format!("warm:item:{item}"), async |_lock| {
                if items.is_warm(item).await? {
                    return Ok(Step::WarmedByOther);
                }
                items.warm(item, self.name).await?;
                Ok(Step::Warmed)
            })
            .await
            .map_err(|e| format!("{}: lock for item {item}: {e}", self.name))?
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    let builder = nodes.builder()?.retry(
        RetryPolicy::until(Duration::from_secs(10))
            .base_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(25)),
    );
    let items = Arc::new(Items {
        conn: nodes.data_connection().await?,
        run: common::run_id(),
        warm_calls: (0..ITEMS).map(|_| AtomicUsize::new(0)).collect(),
    });
    let mut warmers = Vec::new();
    for name in ["warmer-1", "warmer-2"] {
        warmers.push(Warmer {
            name,
            redlock: builder.clone().build().await?,
            items: items.clone(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
    }

    println!(
        "2 warmers, {ITEMS} items, at most {CONCURRENCY} at a time per warmer, {} ms per item; \
         warmer-1 goes up from item 0, warmer-2 down from item {}",
        WARM_TIME.as_millis(),
        ITEMS - 1
    );
    let started = Instant::now();
    let both = async {
        tokio::try_join!(
            warmers[0].run((0..ITEMS).collect()),
            warmers[1].run((0..ITEMS).rev().collect()),
        )
    };
    let outcome = tokio::time::timeout(DEADLINE, both).await;
    let elapsed = started.elapsed();
    let keys: Vec<String> = (0..ITEMS).map(|i| items.key(i)).collect();
    // EXISTS with many keys counts those present.
    let stored: Result<usize, _> = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut items.conn.clone())
        .await;
    let _ = items.conn.clone().del(&keys).await;
    let (first, second) = match outcome {
        Ok(stats) => stats?,
        Err(_) => return Err(format!("warming did not finish within {DEADLINE:?}").into()),
    };
    let stored = stored?;

    println!("warmer    warmed  already warm  warmed by other while waiting  max in flight");
    for (warmer, stats) in warmers.iter().zip([&first, &second]) {
        println!(
            "{:<8}  {:>6}  {:>12}  {:>29}  {:>13}",
            warmer.name,
            stats.warmed,
            stats.already_warm,
            stats.warmed_by_other,
            stats.max_in_flight
        );
    }
    let calls: Vec<usize> = items
        .warm_calls
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    let warmed_once = calls.iter().filter(|c| **c == 1).count();
    println!(
        "items warmed exactly once: {warmed_once} of {ITEMS}; in the cache: {stored}; {:.2} s",
        elapsed.as_secs_f64()
    );

    let mut problems = Vec::new();
    for (item, count) in calls.iter().enumerate().filter(|(_, c)| **c != 1) {
        problems.push(format!("item {item} warmed {count} times"));
    }
    if stored != ITEMS {
        problems.push(format!("{stored} of {ITEMS} items in the cache"));
    }
    if let Some(stats) = [&first, &second]
        .iter()
        .find(|s| s.max_in_flight > CONCURRENCY)
    {
        problems.push(format!("{} items in flight at once", stats.max_in_flight));
    }
    if !problems.is_empty() {
        return Err(format!("invariant violated: {}", problems.join("; ")).into());
    }
    println!(
        "OK: every item warmed exactly once in this run (lock + double-check), never more than \
         {CONCURRENCY} in flight per warmer"
    );
    Ok(())
}
