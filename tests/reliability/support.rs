//! Shared helpers: a cluster behind fault proxies, engines on it, raw node access, an axum
//! app under the layer, and child processes that are always killed.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
pub use tower_redlock::testkit::eventually;
use tower_redlock::testkit::{FaultProxy, LocalCluster};
use tower_redlock::{Redlock, RedlockBuilder, RetryPolicy};

pub const PREFIX: &str = "rel:";

/// How long a test waits for an event that should come at once before it gives up: a bound
/// against hanging, not a speed requirement (a loaded 2-core machine must pass too).
pub const NO_HANG: Duration = Duration::from_secs(30);

/// Five nodes, each behind its own fault proxy.
pub struct Proxied {
    // Proxies first: they are dropped (closing their sockets) before the nodes.
    pub proxies: Vec<FaultProxy>,
    pub cluster: LocalCluster,
}

impl Proxied {
    pub async fn start(n: usize) -> Proxied {
        let cluster = LocalCluster::start(n)
            .await
            .expect("start redis-server nodes");
        let proxies = cluster.proxies().await.expect("start fault proxies");
        Proxied { proxies, cluster }
    }

    /// URLs of the proxies (what the engine under test talks to).
    pub fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(FaultProxy::url).collect()
    }

    pub fn blackhole(&self, nodes: impl IntoIterator<Item = usize>) {
        for i in nodes {
            self.proxies[i].blackhole();
        }
    }

    pub fn heal_all(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }
}

/// Test defaults: our prefix, 2 s ttl, 200 ms node timeout, one attempt, no breaker.
pub fn builder(urls: Vec<String>) -> RedlockBuilder {
    Redlock::builder()
        .nodes(urls)
        .key_prefix(PREFIX)
        .ttl(Duration::from_secs(2))
        .node_timeout(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .no_circuit_breaker()
}

/// Retry for up to `deadline` with short, fast-growing pauses.
pub fn retry_for(deadline: Duration) -> RetryPolicy {
    RetryPolicy::until(deadline)
        .base_delay(Duration::from_millis(2))
        .max_delay(Duration::from_millis(20))
}

/// The engine's drift allowance for `ttl` at the default factor 0.01 (`0.01·ttl + 2 ms`).
pub fn default_drift(ttl: Duration) -> Duration {
    Duration::try_from_secs_f64(ttl.as_secs_f64() * 0.01).unwrap() + Duration::from_millis(2)
}

/// On how many nodes `key`'s lock exists, asked directly (not through the proxies).
/// Nodes that do not answer within 500 ms count as not holding it.
pub async fn holders(cluster: &LocalCluster, key: &str) -> usize {
    let mut count = 0;
    for i in 0..cluster.len() {
        if lock_value(cluster, i, key).await.is_some() {
            count += 1;
        }
    }
    count
}

/// A direct connection to node `i` as the default user; `None` when the node does not
/// accept one within 500 ms.
pub async fn raw(cluster: &LocalCluster, i: usize) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(cluster.url(i)).ok()?;
    tokio::time::timeout(RAW_BOUND, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()
}

/// How long a direct question to a node may take.
pub const RAW_BOUND: Duration = Duration::from_millis(500);

/// The value (token) of `key`'s lock on node `i`, asked directly; `None` when absent or
/// when the node does not answer within [`RAW_BOUND`].
pub async fn lock_value(cluster: &LocalCluster, i: usize, key: &str) -> Option<Vec<u8>> {
    let mut conn = raw(cluster, i).await?;
    tokio::time::timeout(RAW_BOUND, conn.get(format!("{PREFIX}lock:{key}")))
        .await
        .ok()?
        .ok()?
}

/// Sets its flag when dropped: shows that a handler's future was dropped (cancelled).
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A child process of this test binary, `SIGKILL`ed (by its PID) and reaped on drop.
pub struct ChildProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Held open while the child should live: it exits when this closes. (`Child::wait`
    /// would close it, so it is taken out of `child`.)
    _stdin: Option<ChildStdin>,
}

impl ChildProcess {
    /// Re-executes this test binary to run only the test `helper` (an `#[ignore]`d test that
    /// does nothing unless `env` is set) with the given environment.
    pub fn spawn_helper(helper: &str, env: &[(&str, String)]) -> ChildProcess {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(exe);
        command
            .args([
                helper,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // The child exits when its stdin closes: it never outlives us for long, even
            // if we are killed ourselves.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn a child test process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        ChildProcess {
            child,
            lines: BufReader::new(stdout).lines(),
            _stdin: stdin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    /// Reads stdout lines until one contains `marker` (at most 1000 lines, within
    /// `deadline`), and returns it from the marker on (the test harness may have printed
    /// `test name ... ` before it on the same line).
    pub async fn wait_for_line(&mut self, marker: &str, deadline: Duration) -> String {
        let read = async {
            for _ in 0..1_000 {
                match self.lines.next_line().await {
                    Ok(Some(line)) if line.contains(marker) => {
                        return line[line.find(marker).unwrap_or(0)..].to_owned();
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("child exited before printing {marker:?}"),
                    Err(e) => panic!("reading the child's output: {e}"),
                }
            }
            panic!("child never printed {marker:?}")
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or_else(|_| panic!("child did not print {marker:?} within {deadline:?}"))
    }

    /// `SIGKILL`s the child (`Child::start_kill` signals its PID) and reaps it (bounded).
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the child");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the killed child is reaped")
            .expect("wait for the child");
        assert!(!status.success(), "the child was killed, not exited");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // kill_on_drop signals it; also try to reap it here (bounded, no runtime needed).
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// In a child helper: exit as soon as the parent closes our stdin (or dies).
pub fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// An axum app with one locked route, `POST /orders/{id}`, whose handler waits until told
/// to finish (or 30 s at most), and records whether it started, completed or was dropped.
pub mod app {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::routing;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use tokio::sync::Notify;
    use tower::ServiceExt;
    use tower_redlock::layer::{RedlockLayer, key};
    use tower_redlock::{HeldLock, Redlock};

    use super::DropFlag;

    #[derive(Default)]
    pub struct Probe {
        pub started: Notify,
        pub finish: Notify,
        pub ran: AtomicBool,
        pub completed: AtomicBool,
        pub dropped: Arc<AtomicBool>,
    }

    async fn handler(State(probe): State<Arc<Probe>>, _lock: HeldLock) -> &'static str {
        let _guard = DropFlag(probe.dropped.clone());
        probe.ran.store(true, Ordering::SeqCst);
        probe.started.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(30), probe.finish.notified()).await;
        probe.completed.store(true, Ordering::SeqCst);
        "done"
    }

    pub fn router(redlock: Redlock, ttl: Duration, probe: Arc<Probe>) -> Router {
        Router::new()
            .route("/orders/{id}", routing::post(handler))
            .route_layer(
                RedlockLayer::new(redlock, key::prefixed("order:", key::param("id"))).ttl(ttl),
            )
            .with_state(probe)
    }

    pub fn post(path: &str) -> Request<Body> {
        Request::post(path).body(Body::empty()).unwrap()
    }

    /// Sends one request and collects the response (bounded by 20 s).
    pub async fn send(app: Router, request: Request<Body>) -> (Response<()>, String) {
        let run = async {
            let response = app.oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            (
                Response::from_parts(parts, ()),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        };
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the request must not hang")
    }

    /// `Retry-After` in whole seconds, when present and numeric.
    pub fn retry_after(response: &Response<()>) -> Option<u64> {
        response
            .headers()
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
}
