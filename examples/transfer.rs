//! Money transfers under a two-key lock.
//!
//! 8 workers make 50 random transfers each between 5 accounts whose balances live in Redis
//! (node 0, under their own key prefix). A transfer locks both accounts at once with
//! `acquire_many([from, to])`, given in random order: the engine sorts the keys, so `[a, b]`
//! and `[b, a]` are the same lock and cannot deadlock. It then reads both balances, yields,
//! and writes both back. That read-modify-write is only correct because of the lock: at the
//! end the total is unchanged and no balance is negative.
//!
//! ```text
//! cargo run --example transfer --features testkit
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{BoxError, Nodes};
use redis::AsyncTypedCommands;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;
use tower_redlock::{Redlock, RetryPolicy};

const ACCOUNTS: usize = 5;
const WORKERS: usize = 8;
const TRANSFERS_PER_WORKER: usize = 50;
const INITIAL_BALANCE: i64 = 1_000;
const MAX_AMOUNT: i64 = 300;
/// Bound on the whole run.
const DEADLINE: Duration = Duration::from_secs(60);

/// Redis keys: lock keys for the engine, and this run's data keys on node 0.
#[derive(Clone)]
struct Keys {
    run: String,
}

impl Keys {
    fn lock(&self, account: usize) -> String {
        format!("account:{account}")
    }

    fn balance(&self, account: usize) -> String {
        format!("example:transfer:{}:balance:{account}", self.run)
    }

    fn balances(&self) -> Vec<String> {
        (0..ACCOUNTS).map(|a| self.balance(a)).collect()
    }
}

/// What one worker did.
#[derive(Default)]
struct Tally {
    done: usize,
    rejected: usize,
    reversed: usize,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes
        .builder()?
        .ttl(Duration::from_secs(5))
        .retry(
            RetryPolicy::until(Duration::from_secs(20))
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(20)),
        )
        .build()
        .await?;
    let mut conn = nodes.data_connection().await?;
    let keys = Keys {
        run: common::run_id(),
    };

    let initial: Vec<(String, i64)> = keys
        .balances()
        .into_iter()
        .map(|k| (k, INITIAL_BALANCE))
        .collect();
    conn.mset(&initial).await?;

    // The key order does not matter: both orders name the same, sorted lock.
    let lock = redlock.acquire_many([keys.lock(3), keys.lock(1)]).await?;
    println!(
        "acquire_many([account 3, account 1]) holds {:?} (sorted)",
        lock.keys()
    );
    lock.release().await?;

    println!(
        "{WORKERS} workers x {TRANSFERS_PER_WORKER} random transfers between {ACCOUNTS} accounts \
         of {INITIAL_BALANCE} each ..."
    );
    let started = Instant::now();
    let outcome = tokio::time::timeout(DEADLINE, run_workers(&redlock, &conn, &keys)).await;
    let elapsed = started.elapsed();

    // Read the final state, then remove the run's data whatever happened.
    let balances = read_balances(&mut conn, &keys).await;
    let _ = conn.del(keys.balances()).await;

    let tally = match outcome {
        Ok(tally) => tally?,
        Err(_) => return Err(format!("transfers did not finish within {DEADLINE:?}").into()),
    };
    let balances = balances?;

    println!(
        "done {} transfers, {} rejected (insufficient funds); keys given as [to, from] in {} \
         of {} ({:.2} s)",
        tally.done,
        tally.rejected,
        tally.reversed,
        WORKERS * TRANSFERS_PER_WORKER,
        elapsed.as_secs_f64()
    );
    println!("account  balance");
    for (account, balance) in balances.iter().enumerate() {
        println!("{account:>7}  {balance:>7}");
    }
    let total: i64 = balances.iter().sum();
    let expected = INITIAL_BALANCE * ACCOUNTS as i64;
    println!("  total  {total:>7}  (expected {expected})");

    if total != expected {
        return Err(format!("total not conserved: {total} != {expected}").into());
    }
    if let Some(negative) = balances.iter().position(|b| *b < 0) {
        return Err(format!("account {negative} went negative").into());
    }
    println!("OK: total conserved, no balance negative");
    Ok(())
}

async fn run_workers(
    redlock: &Redlock,
    conn: &MultiplexedConnection,
    keys: &Keys,
) -> Result<Tally, BoxError> {
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let (redlock, mut conn, keys) = (redlock.clone(), conn.clone(), keys.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..TRANSFERS_PER_WORKER {
                let from = rand::random_range(0..ACCOUNTS);
                let to = (from + rand::random_range(1..ACCOUNTS)) % ACCOUNTS;
                let amount = rand::random_range(1..=MAX_AMOUNT);
                let reversed = rand::random_bool(0.5);
                tally.reversed += usize::from(reversed);
                if transfer(&redlock, &mut conn, &keys, from, to, amount, reversed).await? {
                    tally.done += 1;
                } else {
                    tally.rejected += 1;
                }
            }
            Ok::<_, BoxError>(tally)
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined.map_err(|e| format!("a worker failed: {e}"))??;
        total.done += tally.done;
        total.rejected += tally.rejected;
        total.reversed += tally.reversed;
    }
    Ok(total)
}

/// Moves `amount` from `from` to `to` under a lock on both; `false` when funds are short.
async fn transfer(
    redlock: &Redlock,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    from: usize,
    to: usize,
    amount: i64,
    reversed: bool,
) -> Result<bool, BoxError> {
    let order = if reversed { [to, from] } else { [from, to] };
    let lock = redlock
        .acquire_many(order.map(|a| keys.lock(a)))
        .await
        .map_err(|e| format!("locking accounts {from} and {to}: {e}"))?;

    let read = conn.mget(&[keys.balance(from), keys.balance(to)]).await?;
    let [from_balance, to_balance] = [parse(&read[0])?, parse(&read[1])?];
    // Give other workers every chance to interleave: only the lock keeps them out.
    tokio::time::sleep(Duration::from_millis(1)).await;

    let moved = from_balance >= amount;
    if moved {
        if !lock.is_held() {
            return Err("the lease ran out before the write".into());
        }
        conn.mset(&[
            (keys.balance(from), from_balance - amount),
            (keys.balance(to), to_balance + amount),
        ])
        .await?;
    }
    lock.release().await?;
    Ok(moved)
}

async fn read_balances(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<Vec<i64>, BoxError> {
    conn.mget(keys.balances())
        .await?
        .iter()
        .map(parse)
        .collect()
}

fn parse(value: &Option<String>) -> Result<i64, BoxError> {
    let value = value.as_deref().ok_or("a balance key is missing")?;
    Ok(value.parse()?)
}
