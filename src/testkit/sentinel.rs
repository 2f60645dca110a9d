//! [`SentinelGroup`]: a Sentinel-managed primary, its replica and three Sentinels, on
//! loopback ports.

use std::{
    fs::{self, File},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use redis::Value;

use super::cluster::{
    LOG_FILE, Proc, START_ATTEMPTS, TempDir, free_port, kill_and_reap, loopback, reset_dir,
    send_signal, wait_proc_stopped, wait_ready,
};
use super::{ClusterOptions, FaultProxy, LocalCluster, TestkitError, find_redis_server};

/// How many Sentinels a group runs; two of them make the quorum.
const SENTINELS: usize = 3;
/// How long a Sentinel takes to call a silent primary down.
const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Sentinel's failover timeout. Long on purpose: Sentinel "fixes" a replica that
/// replicates from another address than the primary's (ours goes through a proxy) once
/// this has passed, and a test group lives for less.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the group may take to start, or a failover to complete.
const SETTLE: Duration = Duration::from_secs(30);
/// Bound on one question to a server.
const ASK: Duration = Duration::from_millis(500);

/// A Sentinel-managed master for tests: a primary (data node 0 at the start), one replica
/// (data node 1) replicating through a [`FaultProxy`], and three `redis-server --sentinel`
/// processes monitoring it under one master name (quorum 2, down after 1 s), all on free
/// loopback ports.
///
/// [`start`](Self::start) returns once the replica is in sync and every Sentinel knows the
/// primary, the replica and the other Sentinels. Dropping the group kills every process
/// (Sentinels first) and removes its directories.
///
/// - [`url`](Self::url): the node URL, `redis+sentinel://h:p,h:p,h:p/master`;
/// - [`failover`](Self::failover) (`SENTINEL FAILOVER`), [`kill_primary`](Self::kill_primary)
///   and [`wait_new_primary`](Self::wait_new_primary) move the primary;
/// - [`cut_replication`](Self::cut_replication) partitions the replica from the primary (it
///   still believes itself in sync), so that writes made since are lost on promotion.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_redlock::testkit::TestkitError> {
/// use tower_redlock::testkit::SentinelGroup;
///
/// let group = SentinelGroup::start("orders").await?;
/// let url = group.url(); // redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/orders
/// let old = group.primary().await?;
/// let new = group.failover().await?;
/// assert_ne!(old, new);
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SentinelGroup {
    // Field order matters: Sentinels die first (no failover while the rest stops), the
    // directory last.
    sentinels: Vec<Sentinel>,
    replication: FaultProxy,
    data: LocalCluster,
    master: String,
    _root: TempDir,
}

#[derive(Debug)]
struct Sentinel {
    port: u16,
    proc: Proc,
}

impl SentinelGroup {
    /// Starts a primary, a replica and three Sentinels monitoring master `master`, and waits
    /// (bounded) until all of them know each other.
    pub async fn start(master: &str) -> Result<Self, TestkitError> {
        let bin = find_redis_server()?;
        let options = ClusterOptions::new().args(["--repl-diskless-sync-delay", "0"]);
        let data = LocalCluster::start_with(2, options).await?;
        let replication = FaultProxy::start(data.addr(0)).await?;
        let replicaof = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(replication.addr().port())
            .clone();
        ask(data.addr(1), &replicaof)
            .await
            .ok_or_else(|| failed("the replica refused REPLICAOF"))?;
        let in_sync = wait_for(SETTLE, || async {
            info_says(data.addr(1), "replication", "master_link_status:up").await
        });
        if !in_sync.await {
            return Err(failed("the replica did not sync with the primary"));
        }

        let root = TempDir::create()?;
        let mut sentinels = Vec::with_capacity(SENTINELS);
        for i in 0..SENTINELS {
            let dir = root.0.join(format!("sentinel-{i}"));
            sentinels.push(launch_sentinel(&bin, &dir, master, data.port(0)).await?);
        }
        let group = SentinelGroup {
            sentinels,
            replication,
            data,
            master: master.to_owned(),
            _root: root,
        };
        if !wait_for(SETTLE, || group.settled()).await {
            return Err(failed(
                "the Sentinels did not learn the replica and each other",
            ));
        }
        Ok(group)
    }

    /// The master name.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// The Sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(|s| loopback(s.port)).collect()
    }

    /// The node URL: `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/master`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    /// The data nodes (0: the first primary, 1: its replica), to kill, pause or query one
    /// directly.
    pub fn data(&self) -> &LocalCluster {
        &self.data
    }

    /// `SIGSTOP`s Sentinel `i` (its port stays open, nothing is answered) or, with
    /// `frozen == false`, `SIGCONT`s it.
    ///
    /// # Panics
    /// If `i` is not a Sentinel's index.
    pub fn freeze_sentinel(&self, i: usize, frozen: bool) -> Result<(), TestkitError> {
        let pid = self.sentinels[i].proc.pid();
        send_signal(pid, if frozen { "STOP" } else { "CONT" })?;
        wait_proc_stopped(pid, frozen);
        Ok(())
    }

    /// The primary's address, as the first Sentinel that answers gives it.
    pub async fn primary(&self) -> Result<SocketAddr, TestkitError> {
        for sentinel in self.sentinel_addrs() {
            if let Some(primary) = self.primary_per(sentinel).await {
                return Ok(primary);
            }
        }
        Err(failed("no Sentinel gave the primary's address"))
    }

    /// Waits (bounded: 5 s) until a replica has every write the primary took so
    /// far (its replication offset reached the primary's); `false` when none did in time
    /// (e.g. replication is cut).
    pub async fn wait_replicated(&self) -> bool {
        let Ok(primary) = self.primary().await else {
            return false;
        };
        let Some(target) = offset(primary, "master_repl_offset").await else {
            return false;
        };
        let replicas: Vec<SocketAddr> = (0..self.data.len())
            .map(|i| self.data.addr(i))
            .filter(|&addr| addr != primary)
            .collect();
        wait_for(Duration::from_secs(5), || async {
            for &replica in &replicas {
                if offset(replica, "slave_repl_offset")
                    .await
                    .is_some_and(|at| at >= target)
                {
                    return true;
                }
            }
            false
        })
        .await
    }

    /// Cuts the replica off the primary: nothing written from now on reaches it, while it
    /// still reports its link up (for a minute, the replication timeout), so Sentinel would
    /// still promote it.
    pub fn cut_replication(&self) {
        self.replication.blackhole();
    }

    /// `SENTINEL FAILOVER` (forced, with the primary up), then waits (bounded) until every
    /// Sentinel names a new primary and it says it is one; returns it. The old primary
    /// keeps taking writes until Sentinel reconfigures it as a replica (seconds later).
    pub async fn failover(&self) -> Result<SocketAddr, TestkitError> {
        let old = self.primary().await?;
        let failover = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.master)
            .clone();
        match ask(self.sentinel_addrs()[0], &failover).await {
            Some(Value::Okay) => self.wait_new_primary(old).await,
            other => Err(failed(&format!("SENTINEL FAILOVER said {other:?}"))),
        }
    }

    /// `SIGKILL`s the current primary; returns its address (for
    /// [`wait_new_primary`](Self::wait_new_primary)).
    pub async fn kill_primary(&self) -> Result<SocketAddr, TestkitError> {
        let primary = self.primary().await?;
        let index = (0..self.data.len())
            .find(|&i| self.data.addr(i) == primary)
            .ok_or_else(|| failed("the primary is none of the data nodes"))?;
        self.data.kill(index).await?;
        Ok(primary)
    }

    /// Waits (bounded) until every Sentinel names the same primary other than `old`, and
    /// that server's `ROLE` says `master`; returns it.
    pub async fn wait_new_primary(&self, old: SocketAddr) -> Result<SocketAddr, TestkitError> {
        let end = tokio::time::Instant::now() + SETTLE;
        for _ in 0..1_000 {
            if let Some(primary) = self.agreed_primary().await
                && primary != old
                && is_master(primary).await
            {
                return Ok(primary);
            }
            if tokio::time::Instant::now() >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(failed("no new primary in time"))
    }

    /// The primary every Sentinel names, if they agree.
    async fn agreed_primary(&self) -> Option<SocketAddr> {
        let mut agreed = None;
        for sentinel in self.sentinel_addrs() {
            let named = self.primary_per(sentinel).await?;
            if agreed.is_some_and(|a| a != named) {
                return None;
            }
            agreed = Some(named);
        }
        agreed
    }

    /// The primary's address per the Sentinel at `sentinel`.
    async fn primary_per(&self, sentinel: SocketAddr) -> Option<SocketAddr> {
        let cmd = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .clone();
        let Value::Array(parts) = ask(sentinel, &cmd).await? else {
            return None;
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        let host = text(parts.first()?)?;
        let port = text(parts.get(1)?)?;
        format!("{host}:{port}").parse().ok()
    }

    /// Whether every Sentinel knows the replica (and sees it up) and the other Sentinels.
    async fn settled(&self) -> bool {
        for sentinel in self.sentinel_addrs() {
            let replicas = ask(sentinel, &self.sentinel_cmd("REPLICAS")).await;
            let others = ask(sentinel, &self.sentinel_cmd("SENTINELS")).await;
            let (Some(Value::Array(replicas)), Some(Value::Array(others))) = (replicas, others)
            else {
                return false;
            };
            let replica_up = replicas
                .iter()
                .any(|r| field(r, "flags").as_deref() == Some("slave"));
            if !replica_up || others.len() < SENTINELS - 1 {
                return false;
            }
        }
        true
    }

    fn sentinel_cmd(&self, sub: &str) -> redis::Cmd {
        redis::cmd("SENTINEL").arg(sub).arg(&self.master).clone()
    }
}

/// Starts one Sentinel monitoring `master` at `primary_port`, on a fresh port (retried a
/// few times when the port was taken meanwhile).
async fn launch_sentinel(
    bin: &Path,
    dir: &Path,
    master: &str,
    primary_port: u16,
) -> Result<Sentinel, TestkitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        reset_dir(dir)?;
        let port = free_port()?;
        let config = dir.join("sentinel.conf");
        let ms = |d: Duration| d.as_millis().to_string();
        fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {master} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {master} {down}\n\
                 sentinel failover-timeout {master} {failover}\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.display(),
                down = ms(DOWN_AFTER),
                failover = ms(FAILOVER_TIMEOUT),
            ),
        )?;
        let log = File::create(dir.join(LOG_FILE))?;
        let mut cmd = Command::new(bin);
        cmd.arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut proc = Proc(cmd.spawn().map_err(TestkitError::Spawn)?);
        match wait_ready(&mut proc, port, Duration::from_secs(10), dir).await {
            Ok(()) => return Ok(Sentinel { port, proc }),
            Err(TestkitError::Exited { .. }) if attempt < START_ATTEMPTS => {
                kill_and_reap(proc).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn failed(what: &str) -> TestkitError {
    TestkitError::Sentinel(what.to_owned())
}

/// Polls `check` every 50 ms until it holds: at most 1 000 times and within `deadline`.
async fn wait_for<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    for _ in 0..1_000 {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Sends `cmd` to the server at `addr` on a fresh connection, bounded by [`ASK`]; `None`
/// on any failure or error reply.
async fn ask(addr: SocketAddr, cmd: &redis::Cmd) -> Option<Value> {
    let run = async {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ASK))
            .set_response_timeout(Some(ASK));
        let client = redis::Client::open(format!("redis://{addr}")).ok()?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .ok()?;
        cmd.query_async::<Value>(&mut conn).await.ok()
    };
    tokio::time::timeout(2 * ASK, run).await.ok().flatten()
}

/// Field `name` of `INFO replication` on the server at `addr`, as a number.
async fn offset(addr: SocketAddr, name: &str) -> Option<u64> {
    let text = info(addr, "replication").await?;
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}

/// `INFO section` of the server at `addr`.
async fn info(addr: SocketAddr, section: &str) -> Option<String> {
    match ask(addr, redis::cmd("INFO").arg(section)).await? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// Whether `INFO section` of the server at `addr` holds the line `line`.
async fn info_says(addr: SocketAddr, section: &str, line: &str) -> bool {
    info(addr, section)
        .await
        .is_some_and(|text| text.lines().any(|l| l.trim() == line))
}

/// Whether the server at `addr` says `ROLE` `master`.
async fn is_master(addr: SocketAddr) -> bool {
    match ask(addr, &redis::cmd("ROLE")).await {
        Some(Value::Array(parts)) => {
            matches!(parts.first(), Some(Value::BulkString(role)) if role == b"master")
        }
        _ => false,
    }
}

/// Field `name` of a Sentinel instance reply (a flat key/value array, or a map).
fn field(instance: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match instance {
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| pair.get(1).and_then(text)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}
