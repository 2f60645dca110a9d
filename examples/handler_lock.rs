//! Handler-level locking with axum: what a handler can do with its lock.
//!
//! ```text
//! cargo run --example handler_lock --all-features
//! ```
//!
//! - `POST /reports/{id}/publish` (under `RedlockLayer`): the handler takes the `HeldLock`,
//!   reads its key, fencing token and remaining validity, releases it as soon as the critical
//!   part is done (`lock.release()`), then notifies subscribers unlocked: the next publish of
//!   the same report can start meanwhile.
//! - `POST /imports` with `x-tenant: NAME`: the `Locked<TenantImport>` extractor takes
//!   `import:NAME` itself, with the `Redlock` of the router state. A concurrent import for the
//!   same tenant gets `423 Locked`, a request without the header `400`.
//! - `POST /jobs/{name}?steps=N`: a long job (N steps of 100 ms) that races every step against
//!   `lock.lost()` and stops cleanly with `503` when its lease is lost. Jobs hold their lease
//!   for at most 1.5 s (`max_hold`), so a long one loses it, as it would if the nodes became
//!   unreachable.
//! - `POST /settlements/{day}`: `redlock.acquire(..).await?` in the handler; a `LockError`
//!   becomes the same `423`/`503` problem+json response as the layer's.
//! - `POST /orders/{id}/pay` with `idempotency-key: K` (`?slow=1`: the provider confirms too
//!   slowly): under the layer's default `OnLost::Cancel`, a handler whose lease is lost is
//!   dropped wherever it is — maybe after charging the card — and the client gets `503`. Its
//!   retry is safe: the charge is idempotent by the client's key, so the retry finds the
//!   first charge instead of making a second, and the ledger write carries the lease's
//!   fencing token, so that a holder that lost its lease (on another instance, or paused)
//!   cannot overwrite a newer holder's entry.
//!
//! The router state is the application's own (`AppState`); `Locked<K>` and `State<Redlock>`
//! find the `Redlock` in it through axum's `FromRef`.
//!
//! Nodes come from `REDLOCK_NODES` (comma-separated `redis://` URLs); when it is unset, five
//! local `redis-server` processes are started (and stopped on exit). The server listens on
//! `127.0.0.1:3001`, or `HOST`/`PORT` (`PORT=0` picks a free port). With
//! `EXAMPLE_SELF_TEST=1` it sends requests to itself, prints the statuses, and exits 0 when
//! they are as expected.

#[path = "common/mod.rs"]
mod common;
#[path = "common/server.rs"]
mod server;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{BoxError, Nodes};
use tower_redlock::extract::{LockKey, Locked};
use tower_redlock::layer::OnLost;
use tower_redlock::layer::RedlockLayer;
use tower_redlock::layer::key::{self, KeyError, KeyExtractor};
use tower_redlock::{HeldLock, LockError, Redlock, RetryPolicy};

/// The part of a publish that must not overlap with another publish of the same report.
const CRITICAL: Duration = Duration::from_millis(300);
/// The unlocked rest of a publish.
const TAIL: Duration = Duration::from_millis(1500);
/// How long an import or a settlement holds its lock.
const WORK: Duration = Duration::from_secs(1);
/// One step of a job.
const STEP: Duration = Duration::from_millis(100);
const DEFAULT_STEPS: u32 = 10;
const MAX_STEPS: u32 = 100;
/// A job's lease: ttl, and the longest it is extended for.
const JOB_TTL: Duration = Duration::from_secs(1);
const JOB_MAX_HOLD: Duration = Duration::from_millis(1500);
/// How long `redlock.acquire` waits for a held lock (the engine's default retry policy).
const ACQUIRE_WAIT: Duration = Duration::from_millis(300);
/// How long the payment provider takes to confirm a charge: usually, and with `?slow=1`
/// (longer than a payment's lease lasts: `JOB_MAX_HOLD` plus a ttl).
const CONFIRM: Duration = Duration::from_millis(200);
const SLOW_CONFIRM: Duration = Duration::from_secs(5);

/// The router state: the engine and the payment side of the application.
#[derive(Clone)]
struct AppState {
    redlock: Redlock,
    payments: Arc<Payments>,
}

/// `Locked<K>` and `State<Redlock>` take the engine from the state.
impl FromRef<AppState> for Redlock {
    fn from_ref(state: &AppState) -> Redlock {
        state.redlock.clone()
    }
}

impl FromRef<AppState> for Arc<Payments> {
    fn from_ref(state: &AppState) -> Arc<Payments> {
        state.payments.clone()
    }
}

/// (a) Under `RedlockLayer`: use the lease, release it early, finish unlocked.
async fn publish(Path(id): Path<u32>, lock: HeldLock) -> String {
    let (key, token, remaining) = (
        lock.key().to_owned(),
        lock.fencing_token(),
        lock.remaining(),
    );
    // Critical part: write the report, passing the fencing token to the store so that it can
    // refuse a stale holder's writes.
    tokio::time::sleep(CRITICAL).await;
    let released = release(lock).await;
    // Unlocked tail: the next publish of this report may already run.
    tokio::time::sleep(TAIL).await;
    format!(
        "report {id} published under {key:?} with fencing token {token:?} ({} ms of lease \
         left at the start), lock released early ({released}), subscribers notified\n",
        remaining.as_millis()
    )
}

/// (b) The lock key of an import: one import per tenant, named by the `x-tenant` header.
struct TenantImport;

impl LockKey for TenantImport {
    fn key(parts: &Parts) -> Result<String, KeyError> {
        match key::header("x-tenant").extract(parts)? {
            Some(tenant) if !tenant.is_empty() => Ok(format!("import:{tenant}")),
            _ => Err(KeyError::new("send the tenant in the `x-tenant` header")),
        }
    }
}

/// (b) Extracting `Locked<TenantImport>` acquires the lock (one attempt: `423` if held).
async fn import(lock: Locked<TenantImport>) -> String {
    tokio::time::sleep(WORK).await;
    let key = lock.key().to_owned();
    // Release before answering, so that the tenant's next import finds the lock free.
    let released = release(lock.into_inner()).await;
    format!("import done under {key:?} ({released})\n")
}

/// (c) A long job that stops cleanly when its lease is lost. The layer runs with
/// `OnLost::Continue`, so the handler decides how to stop rather than being dropped.
async fn run_job(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    lock: HeldLock,
) -> Result<String, (StatusCode, String)> {
    let steps = match query.get("steps") {
        None => DEFAULT_STEPS,
        Some(steps) => steps
            .parse()
            .ok()
            .filter(|n| (1..=MAX_STEPS).contains(n))
            .ok_or_else(|| {
                let message = format!("steps must be a number from 1 to {MAX_STEPS}\n");
                (StatusCode::BAD_REQUEST, message)
            })?,
    };
    let lost = lock.lost();
    tokio::pin!(lost);
    for step in 1..=steps {
        tokio::select! {
            () = &mut lost => {
                let done = step - 1;
                tracing::warn!(job = %name, done, steps, "lease lost: job stopped");
                let message =
                    format!("job {name} stopped after {done} of {steps} steps: lease lost\n");
                return Err((StatusCode::SERVICE_UNAVAILABLE, message));
            }
            () = tokio::time::sleep(STEP) => {}
        }
    }
    Ok(format!("job {name}: {steps} steps done\n"))
}

/// (d) Locking by hand: `?` turns a `LockError` into a `423`/`503` response.
async fn settle(
    State(redlock): State<Redlock>,
    Path(day): Path<String>,
) -> Result<String, LockError> {
    // Waits per the engine's retry policy (up to `ACQUIRE_WAIT` here).
    let lock = redlock.acquire(format!("settlement:{day}")).await?;
    let token = lock.fencing_token();
    tokio::time::sleep(WORK).await;
    let released = release(lock).await;
    Ok(format!(
        "day {day} settled with fencing token {token:?} ({released})\n"
    ))
}

/// (e) A payment provider and a ledger, in memory here (a real service and a database in
/// production).
#[derive(Default)]
struct Payments {
    /// The provider's charges by idempotency key: charging twice with one key returns the
    /// first charge (as Stripe's `Idempotency-Key` does).
    charges: Mutex<HashMap<String, u32>>,
    /// The ledger: per order, the highest fencing token seen and the charge that paid it.
    ledger: Mutex<HashMap<u32, LedgerEntry>>,
}

#[derive(Default)]
struct LedgerEntry {
    fence: u64,
    paid_by: Option<u32>,
}

impl Payments {
    /// Charges once per idempotency key; returns the charge and how many charges the
    /// provider has made in all.
    fn charge(&self, idempotency_key: &str) -> (u32, usize) {
        let mut charges = self.charges.lock().unwrap();
        let next = u32::try_from(charges.len()).map_or(u32::MAX, |n| n.saturating_add(1));
        let charge = *charges.entry(idempotency_key.to_owned()).or_insert(next);
        (charge, charges.len())
    }

    /// The charge that paid `order`, if it is paid.
    fn paid(&self, order: u32) -> Option<u32> {
        self.ledger.lock().unwrap().get(&order)?.paid_by
    }

    /// Records `order` as paid by `charge`, unless a holder with a newer fencing token wrote
    /// first: in a database, `UPDATE ... WHERE fence <= $token` in one statement.
    fn record(&self, order: u32, fence: u64, charge: u32) -> Result<(), u64> {
        let mut ledger = self.ledger.lock().unwrap();
        let entry = ledger.entry(order).or_default();
        if fence < entry.fence {
            return Err(entry.fence);
        }
        entry.fence = fence;
        entry.paid_by = Some(charge);
        Ok(())
    }
}

/// (e) Pays an order under `RedlockLayer` with `OnLost::Cancel`: safe to retry after a `503`.
async fn pay(
    Path(order): Path<u32>,
    Query(query): Query<HashMap<String, String>>,
    State(payments): State<Arc<Payments>>,
    headers: HeaderMap,
    lock: HeldLock,
) -> Result<String, (StatusCode, String)> {
    let Some(idempotency_key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        let message = "send an idempotency-key header: a retry must not pay twice\n";
        return Err((StatusCode::BAD_REQUEST, message.to_owned()));
    };
    // A retry of a payment that went through: answer as the first time.
    if let Some(charge) = payments.paid(order) {
        return Ok(format!(
            "order {order} paid with charge {charge} (replayed)\n"
        ));
    }
    let fence = lock
        .fencing_token()
        .expect("the engine is built with fencing");
    // The side effect. If the lease is lost from here on, the layer drops this handler at
    // its next `.await` and answers `503`: the card is charged, the ledger not written. The
    // client's retry, with the same key, gets this very charge back.
    let (charge, charges_in_all) = payments.charge(idempotency_key);
    let confirm = if query.contains_key("slow") {
        SLOW_CONFIRM
    } else {
        CONFIRM
    };
    tokio::time::sleep(confirm).await;
    // Fenced write: a holder whose lease was lost without noticing (paused, on another
    // instance) carries an older token and is refused.
    payments.record(order, fence, charge).map_err(|newer| {
        let message = format!("a newer holder (fencing token {newer}) paid order {order}\n");
        (StatusCode::CONFLICT, message)
    })?;
    Ok(format!(
        "order {order} paid with charge {charge} (charges made in all: {charges_in_all}), \
         fencing token {fence}\n"
    ))
}

/// Releases `lock` now. A failure is only logged: the lease then runs out on its own.
async fn release(lock: HeldLock) -> String {
    match lock.release().await {
        Ok(outcome) => format!("{outcome:?}"),
        Err(e) => {
            tracing::warn!("release failed, the lease will run out on its own: {e}");
            "release failed".to_owned()
        }
    }
}

fn app(redlock: Redlock) -> Router {
    let reports = RedlockLayer::new(
        redlock.clone(),
        key::prefixed("report:", key::param_as::<u32>("id")),
    );
    // Still one attempt (the layer's default): `423` at once when the job runs already.
    let jobs = RedlockLayer::new(redlock.clone(), key::prefixed("job:", key::param("name")))
        .ttl(JOB_TTL)
        .max_hold(JOB_MAX_HOLD)
        .on_lost(OnLost::Continue);
    // `OnLost::Cancel`, the default: the handler is made safe to run again instead.
    let payments = RedlockLayer::new(
        redlock.clone(),
        key::prefixed("payment:", key::param_as::<u32>("id")),
    )
    .ttl(JOB_TTL)
    .max_hold(JOB_MAX_HOLD);
    Router::new()
        .route("/reports/{id}/publish", post(publish).layer(reports))
        .route("/imports", post(import))
        .route("/jobs/{name}", post(run_job).layer(jobs))
        .route("/settlements/{day}", post(settle))
        .route("/orders/{id}/pay", post(pay).layer(payments))
        // For `Locked<K>`, `State<Redlock>` and `State<Arc<Payments>>`.
        .with_state(AppState {
            redlock,
            payments: Arc::default(),
        })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes
        .builder()?
        .fencing(true)
        .retry(RetryPolicy::until(ACQUIRE_WAIT))
        .build()
        .await?;

    let listener = server::listen(3001).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("listening on {url}");
    println!("try it:");
    println!("  curl -X POST {url}/reports/7/publish");
    println!("  curl -X POST -H 'x-tenant: acme' {url}/imports");
    println!("  curl -i -X POST '{url}/jobs/reindex?steps=40'   # loses its lease: 503");
    println!("  curl -X POST {url}/settlements/2024-06-01");
    println!("  curl -i -X POST -H 'idempotency-key: k1' '{url}/orders/7/pay?slow=1'   # 503");
    println!("  curl -X POST -H 'idempotency-key: k1' {url}/orders/7/pay   # the same charge");

    let outcome = server::serve(listener, app(redlock), self_test).await;
    if let Some(cluster) = nodes.local {
        println!("stopping the local nodes");
        drop(cluster);
    }
    outcome
}

/// Sends requests to the server at `addr` and checks their statuses.
async fn self_test(addr: SocketAddr) -> Result<(), BoxError> {
    let mut failures = Vec::new();

    // (a) The second publish starts once the first released early, while its tail still runs.
    let first = tokio::spawn(server::post(addr, "/reports/7/publish", &[]));
    tokio::time::sleep(CRITICAL + Duration::from_millis(400)).await;
    let first_still_running = !first.is_finished();
    let second = server::post(addr, "/reports/7/publish", &[]).await?;
    let first = first.await??;
    println!(
        "self-test: (a) early release (the first publish was {} when the second was sent):",
        if first_still_running {
            "still running"
        } else {
            "done"
        }
    );
    println!("  first publish:  {} {}", first.status, first.summary());
    println!("  second publish: {} {}", second.status, second.summary());
    check(
        &mut failures,
        "(a) publishes",
        &[first.status, second.status],
        &[200, 200],
    );
    if !first_still_running {
        failures.push("(a) the first publish had ended before the second started".to_owned());
    }

    // (b) Locked<K>: one import per tenant at a time; the key comes from a header.
    let tenant = [("x-tenant", "acme")];
    let (a, b) = tokio::join!(
        server::post(addr, "/imports", &tenant),
        server::post(addr, "/imports", &tenant)
    );
    let (a, b) = (a?, b?);
    let no_tenant = server::post(addr, "/imports", &[]).await?;
    println!("self-test: (b) Locked<TenantImport>:");
    for reply in [&a, &b, &no_tenant] {
        print_reply(reply);
    }
    check(
        &mut failures,
        "(b) concurrent imports",
        &sorted([a.status, b.status]),
        &[200, 423],
    );
    check(
        &mut failures,
        "(b) import without x-tenant",
        &[no_tenant.status],
        &[400],
    );

    // (c) A short job completes; a long one loses its lease (max_hold) and stops cleanly.
    let short = server::post(addr, "/jobs/reindex?steps=5", &[]).await?;
    let long = server::post(addr, "/jobs/reindex?steps=50", &[]).await?;
    println!("self-test: (c) jobs watching lock.lost():");
    println!("  5 steps:  {} {}", short.status, short.summary());
    println!("  50 steps: {} {}", long.status, long.summary());
    check(
        &mut failures,
        "(c) jobs",
        &[short.status, long.status],
        &[200, 503],
    );

    // (d) redlock.acquire(..).await? in the handler.
    let (a, b) = tokio::join!(
        server::post(addr, "/settlements/2024-06-01", &[]),
        server::post(addr, "/settlements/2024-06-01", &[])
    );
    let (a, b) = (a?, b?);
    println!("self-test: (d) acquire()? in a handler:");
    for reply in [&a, &b] {
        print_reply(reply);
    }
    check(
        &mut failures,
        "(d) concurrent settlements",
        &sorted([a.status, b.status]),
        &[200, 423],
    );

    // (e) OnLost::Cancel: the first try loses its lease after charging (503); the retry with
    // the same idempotency key gets that charge, not a second one; a replay answers as well.
    let key = [("idempotency-key", "order-7-attempt-1")];
    let lost = server::post(addr, "/orders/7/pay?slow=1", &key).await?;
    // A client retries as `Retry-After` says: the lost lease's keys may outlive its
    // validity on the nodes for a moment (the clock drift allowance).
    let mut retry = server::post(addr, "/orders/7/pay", &key).await?;
    for _ in 0..3 {
        if retry.status != 423 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        retry = server::post(addr, "/orders/7/pay", &key).await?;
    }
    let replay = server::post(addr, "/orders/7/pay", &key).await?;
    println!("self-test: (e) retry after a cancelled payment:");
    for reply in [&lost, &retry, &replay] {
        print_reply(reply);
    }
    check(
        &mut failures,
        "(e) payment, retry, replay",
        &[lost.status, retry.status, replay.status],
        &[503, 200, 200],
    );
    if !retry.body.contains("charge 1 (charges made in all: 1)") {
        failures.push(format!("(e) the retry charged again: {}", retry.summary()));
    }

    if failures.is_empty() {
        println!("self-test passed");
        Ok(())
    } else {
        Err(format!("self-test failed: {}", failures.join("; ")).into())
    }
}

fn print_reply(reply: &server::Reply) {
    match &reply.retry_after {
        Some(after) => println!(
            "  {} (Retry-After: {after}) {}",
            reply.status,
            reply.summary()
        ),
        None => println!("  {} {}", reply.status, reply.summary()),
    }
}

fn sorted<const N: usize>(mut statuses: [u16; N]) -> [u16; N] {
    statuses.sort_unstable();
    statuses
}

fn check(failures: &mut Vec<String>, what: &str, got: &[u16], want: &[u16]) {
    if got != want {
        failures.push(format!("{what}: expected {want:?}, got {got:?}"));
    }
}
