//! [`LocalCluster`]: throw-away `redis-server` processes on loopback ports.

use std::{
    fs::{self, File},
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{TestkitError, exchange, find_redis_server, first_line, ping, proxy::FaultProxy};

/// How often a node is re-spawned on a fresh port when it exits during start-up.
pub(super) const START_ATTEMPTS: usize = 5;
/// Upper bound on readiness polls, on top of the time limit.
const MAX_POLLS: usize = 5_000;
/// Time limit for one readiness probe (connect + request + reply).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a killed process may take to be reaped before we stop waiting.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Name of the combined stdout/stderr log inside each node directory.
pub(super) const LOG_FILE: &str = "redis.log";

/// Options for [`LocalCluster::start_with`].
///
/// ```
/// use std::time::Duration;
/// use tower_redlock::testkit::ClusterOptions;
///
/// let opts = ClusterOptions::new()
///     .args(["--appendonly", "yes", "--appendfsync", "always"])
///     .ready_timeout(Duration::from_secs(20));
/// assert_eq!(opts.extra_args.len(), 4);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Extra `redis-server` arguments, passed after the defaults
    /// (`--port`, `--bind 127.0.0.1`, `--daemonize no`, `--save ""`,
    /// `--appendonly no`, `--dir`), so they override them. Do not pass
    /// `--port`, `--bind` or `--dir`.
    pub extra_args: Vec<String>,
    /// How long each node may take to answer after being spawned (default 10 s).
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterOptions {
    /// Default options: no extra arguments, 10 s readiness timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one argument, e.g. `.arg("--requirepass").arg("secret")`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets how long each node may take to become ready.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

/// Lifecycle state of one node of a [`LocalCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// The process is running and answering.
    Running,
    /// The process is stopped with `SIGSTOP`: connections open, nothing answered.
    Paused,
    /// The process was killed; its port is closed.
    Killed,
}

/// A set of independent `redis-server` processes for tests.
///
/// Every node listens on its own free `127.0.0.1` port, has no persistence
/// (unless [`ClusterOptions`] say otherwise) and its own temporary data
/// directory. Dropping the cluster `SIGKILL`s every process, reaps it and
/// removes the directories; this also happens while a panicking test unwinds
/// and does not need a Tokio runtime. (Processes do outlive a test binary
/// that is itself killed with `SIGKILL`.)
///
/// Node methods take `&self`, so the cluster can be shared (`Arc`) with a
/// chaos task. Accessors that take an index (`port`, `url`, ...) panic when
/// it is out of range; fault methods return [`TestkitError::InvalidIndex`].
///
/// Do not use it under a paused Tokio clock (`start_paused`): readiness
/// checks use real sockets with timeouts.
#[derive(Debug)]
pub struct LocalCluster {
    // Field order matters: nodes (processes) are dropped before the directory.
    nodes: Vec<Mutex<Node>>,
    bin: PathBuf,
    options: ClusterOptions,
    root: TempDir,
}

#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    state: NodeState,
}

impl LocalCluster {
    /// Starts `n` nodes concurrently with default [`ClusterOptions`] and
    /// waits until each answers.
    pub async fn start(n: usize) -> Result<Self, TestkitError> {
        Self::start_with(n, ClusterOptions::default()).await
    }

    /// Starts `n` nodes concurrently with the given options.
    ///
    /// A node that exits during start-up (typically: its port was taken in
    /// the meantime) is retried on a fresh port a few times.
    pub async fn start_with(n: usize, options: ClusterOptions) -> Result<Self, TestkitError> {
        let bin = find_redis_server()?;
        let root = TempDir::create()?;
        let launches =
            (0..n).map(|i| launch_fresh(&bin, &options, root.0.join(format!("node-{i}"))));
        let nodes = futures_util::future::try_join_all(launches).await?;
        tracing::debug!(n, dir = %root.0.display(), "local redis cluster started");
        Ok(Self {
            nodes: nodes.into_iter().map(Mutex::new).collect(),
            bin,
            options,
            root,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Port of node `i` (stable across [`restart`](Self::restart)).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn port(&self, i: usize) -> u16 {
        self.expect_node(i).port
    }

    /// Socket address (`127.0.0.1:PORT`) of node `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        loopback(self.port(i))
    }

    /// `redis://127.0.0.1:PORT` URL of node `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.port(i))
    }

    /// URLs of all nodes, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// Process id of node `i`, or `None` while it is killed.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.expect_node(i).proc.as_ref().map(Proc::pid)
    }

    /// Current state of node `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn state(&self, i: usize) -> NodeState {
        self.expect_node(i).state
    }

    /// Data directory (`--dir`) of node `i`; emptied by [`restart`](Self::restart).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.expect_node(i).dir.clone()
    }

    /// Whether node `i` answers a raw `PING` with `+PONG` within `timeout`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub async fn ping(&self, i: usize, timeout: Duration) -> bool {
        ping(self.addr(i), timeout).await
    }

    /// `SIGKILL`s node `i` and waits until it is gone (port closed).
    /// Does nothing if it is already killed. Works on a paused node.
    pub async fn kill(&self, i: usize) -> Result<(), TestkitError> {
        let old = {
            let mut node = self.node(i)?;
            node.state = NodeState::Killed;
            node.proc.take()
        };
        if let Some(proc) = old {
            kill_and_reap(proc).await;
        }
        Ok(())
    }

    /// `SIGSTOP`s node `i`: its port stays open (connects succeed) but no
    /// command is answered until [`resume`](Self::resume).
    /// Does nothing if it is already paused.
    pub fn pause(&self, i: usize) -> Result<(), TestkitError> {
        self.signal_node(i, "STOP", NodeState::Paused)
    }

    /// `SIGCONT`s a paused node `i`. Does nothing if it is running.
    pub fn resume(&self, i: usize) -> Result<(), TestkitError> {
        self.signal_node(i, "CONT", NodeState::Running)
    }

    /// Kills node `i` (if alive) and starts a new, empty `redis-server` on
    /// the same port, waiting until it answers. Binding is retried for up to
    /// [`ClusterOptions::ready_timeout`] in case the port is briefly busy.
    pub async fn restart(&self, i: usize) -> Result<(), TestkitError> {
        let (port, dir, old) = {
            let mut node = self.node(i)?;
            node.state = NodeState::Killed;
            (node.port, node.dir.clone(), node.proc.take())
        };
        if let Some(proc) = old {
            kill_and_reap(proc).await;
        }
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut attempt = 0;
        let proc = loop {
            attempt += 1;
            reset_dir(&dir)?;
            let mut proc = spawn(&self.bin, port, &dir, &self.options)?;
            match wait_ready(&mut proc, port, self.options.ready_timeout, &dir).await {
                Ok(()) => break proc,
                Err(TestkitError::Exited { .. }) if attempt < 100 && Instant::now() < deadline => {
                    drop(proc);
                    // The port may still be held for a moment; back off and retry.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut node = self.node(i)?;
        // A concurrent restart may have won; its process is killed on drop.
        drop(node.proc.replace(proc));
        node.state = NodeState::Running;
        Ok(())
    }

    /// Starts one [`FaultProxy`] in front of each node, in index order.
    ///
    /// Proxies target the node's port, so they keep working across
    /// [`restart`](Self::restart). Use `proxies[i].url()` instead of
    /// [`url(i)`](Self::url) to route a client through the proxy.
    pub async fn proxies(&self) -> Result<Vec<FaultProxy>, TestkitError> {
        let mut proxies = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            proxies.push(FaultProxy::start(self.addr(i)).await?);
        }
        Ok(proxies)
    }

    fn signal_node(
        &self,
        i: usize,
        signal: &'static str,
        target: NodeState,
    ) -> Result<(), TestkitError> {
        let mut node = self.node(i)?;
        if node.state == NodeState::Killed {
            return Err(TestkitError::NodeDown { index: i });
        }
        if node.state == target {
            return Ok(());
        }
        let Some(pid) = node.proc.as_ref().map(Proc::pid) else {
            return Err(TestkitError::NodeDown { index: i });
        };
        send_signal(pid, signal)?;
        wait_proc_stopped(pid, target == NodeState::Paused);
        node.state = target;
        Ok(())
    }

    fn node(&self, i: usize) -> Result<MutexGuard<'_, Node>, TestkitError> {
        let len = self.nodes.len();
        self.nodes
            .get(i)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
            .ok_or(TestkitError::InvalidIndex { index: i, len })
    }

    fn expect_node(&self, i: usize) -> MutexGuard<'_, Node> {
        match self.node(i) {
            Ok(node) => node,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Signal everything first so the processes die in parallel; the
        // fields' own drops then reap them and remove the directory.
        for node in &mut self.nodes {
            let node = node.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(proc) = node.proc.as_mut() {
                let _ = proc.0.kill();
            }
        }
        tracing::debug!(dir = %self.root.0.display(), "local redis cluster stopped");
    }
}

/// Outcome of a readiness probe.
enum Probe {
    /// `INFO server` answered with this `process_id`.
    Pid(u32),
    /// An error reply line.
    Error(String),
}

/// Asks `INFO server` so we can check that *our* process answers.
async fn probe(addr: SocketAddr, timeout: Duration) -> Option<Probe> {
    exchange(addr, b"INFO server\r\n", timeout, |buf| {
        let line = first_line(buf)?;
        if line.starts_with(b"-") {
            return Some(Probe::Error(String::from_utf8_lossy(line).into_owned()));
        }
        const KEY: &str = "\r\nprocess_id:";
        let text = String::from_utf8_lossy(buf);
        let rest = &text[text.find(KEY)? + KEY.len()..];
        let pid = rest[..rest.find("\r\n")?].trim().parse().ok()?;
        Some(Probe::Pid(pid))
    })
    .await
}

/// Polls until `proc` answers on `port`, it exits, or `timeout` passes.
pub(super) async fn wait_ready(
    proc: &mut Proc,
    port: u16,
    timeout: Duration,
    dir: &Path,
) -> Result<(), TestkitError> {
    let addr = loopback(port);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = Duration::from_millis(5);
    for _ in 0..MAX_POLLS {
        if let Some(status) = proc.0.try_wait()? {
            return Err(TestkitError::Exited {
                port,
                status: status.to_string(),
                log: log_tail(dir),
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let ready = match probe(addr, remaining.min(PROBE_TIMEOUT)).await {
            Some(Probe::Pid(pid)) => pid == proc.pid(),
            // Authentication/ACL configured: we cannot read the pid, but the
            // server is serving commands.
            Some(Probe::Error(e)) => e.starts_with("-NOAUTH") || e.starts_with("-NOPERM"),
            None => false,
        };
        if ready && proc.0.try_wait()?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(backoff.min(remaining)).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
    Err(TestkitError::NotReady {
        port,
        waited: started.elapsed(),
    })
}

/// Spawns nodes on fresh ports until one comes up (bounded attempts).
async fn launch_fresh(
    bin: &Path,
    options: &ClusterOptions,
    dir: PathBuf,
) -> Result<Node, TestkitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        reset_dir(&dir)?;
        let port = free_port()?;
        let mut proc = spawn(bin, port, &dir, options)?;
        match wait_ready(&mut proc, port, options.ready_timeout, &dir).await {
            Ok(()) => {
                return Ok(Node {
                    port,
                    dir,
                    proc: Some(proc),
                    state: NodeState::Running,
                });
            }
            Err(e @ TestkitError::Exited { .. }) if attempt < START_ATTEMPTS => {
                tracing::debug!(error = %e, "redis-server exited during start-up; retrying");
            }
            Err(e) => return Err(e),
        }
    }
}

fn spawn(
    bin: &Path,
    port: u16,
    dir: &Path,
    options: &ClusterOptions,
) -> Result<Proc, TestkitError> {
    let log = File::create(dir.join(LOG_FILE))?;
    let log_err = log.try_clone()?;
    let mut cmd = Command::new(bin);
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--daemonize", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(&options.extra_args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    cmd.spawn().map(Proc).map_err(TestkitError::Spawn)
}

/// A child process that is `SIGKILL`ed and reaped (bounded) on drop.
#[derive(Debug)]
pub(super) struct Proc(pub(super) Child);

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // `kill` is a no-op once the child has been reaped.
        let _ = self.0.kill();
        let deadline = Instant::now() + REAP_TIMEOUT;
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `SIGKILL`s and reaps without blocking the runtime (bounded).
pub(super) async fn kill_and_reap(mut proc: Proc) {
    let _ = proc.0.kill();
    let deadline = Instant::now() + REAP_TIMEOUT;
    for _ in 0..5_000 {
        if !matches!(proc.0.try_wait(), Ok(None)) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Drop finishes the job if the loop gave up.
}

/// Sends `SIG<signal>` with the `kill` utility (no `unsafe` needed).
pub(super) fn send_signal(pid: u32, signal: &'static str) -> Result<(), TestkitError> {
    let run = |program: &str, args: &[String]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let direct = ["-s".to_owned(), signal.to_owned(), pid.to_string()];
    let output = match run("kill", &direct) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            run("sh", &["-c".to_owned(), format!("kill -s {signal} {pid}")])
        }
        other => other,
    };
    let err = |detail: String| TestkitError::Signal {
        signal,
        pid,
        detail,
    };
    let output = output.map_err(|e| err(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Waits (bounded, Linux only) until `/proc/<pid>/stat` shows the process
/// stopped (`stopped == true`) or not stopped, so pause/resume take effect
/// before they return. Elsewhere it returns at once.
pub(super) fn wait_proc_stopped(pid: u32, stopped: bool) {
    let path = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(1);
    for _ in 0..1_000 {
        let Ok(stat) = fs::read_to_string(&path) else {
            return;
        };
        // The state letter follows the parenthesised command name.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        let is_stopped = matches!(state, Some('T' | 't'));
        if state.is_none() || is_stopped == stopped || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Picks a currently free loopback port (bind to port 0, then release it).
pub(super) fn free_port() -> io::Result<u16> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

pub(super) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Empties (or creates) a node directory.
pub(super) fn reset_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(dir)
}

/// Last lines of a node's output, for error messages.
fn log_tail(dir: &Path) -> String {
    match fs::read_to_string(dir.join(LOG_FILE)) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        }
        Err(e) => format!("<no log: {e}>"),
    }
}

/// A uniquely named directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn create() -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last_err = None;
        for _ in 0..16 {
            let name = format!(
                "tower-redlock-testkit-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temp dir")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
