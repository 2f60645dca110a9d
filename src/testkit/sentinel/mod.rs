//! [`SentinelGroup`]: a Sentinel-managed primary, its replica and three Sentinels, on
//! loopback ports.

use std::{net::SocketAddr, time::Duration};

use redis::Value;

use self::process::launch_sentinel;
use self::query::{ask, field, info_says, is_master, offset, wait_for};
use super::cluster::{Proc, TempDir, loopback, send_signal, wait_proc_stopped};
use super::{ClusterOptions, FaultProxy, LocalCluster, TestkitError, find_redis_server};

mod process;
mod query;

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

fn failed(what: &str) -> TestkitError {
    TestkitError::Sentinel(what.to_owned())
}
