//! [`RedisCluster`]: a throw-away Redis Cluster (`redis-server --cluster-enabled yes`) on
//! loopback ports, for tests of a cluster node: one vote of the quorum.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{ClusterOptions, LocalCluster, NodeState, TestkitError};

/// Cluster node timeout of the test clusters: a killed primary's replica takes over after
/// about twice this.
pub const CLUSTER_NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// Time limit of one admin command to one node.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Time limit of the cluster's creation (`redis-cli --cluster create`, then agreement).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Polls of a wait, on top of its time limit.
const MAX_POLLS: usize = 2_000;
/// Keys moved per `MIGRATE`.
const MIGRATE_BATCH: usize = 100;

/// A real Redis Cluster for tests: `primaries` primaries, each with `replicas` replicas,
/// every node a `redis-server --cluster-enabled yes` of a [`LocalCluster`] (free loopback
/// ports, stopped by PID on drop), joined with `redis-cli --cluster create`.
///
/// Node indices are the [`LocalCluster`]'s; which nodes are primaries is asked of the
/// cluster ([`primaries`](Self::primaries), [`owner`](Self::owner)), since it changes with
/// failovers. The nodes run with `cluster-require-full-coverage no` (the other shards keep
/// serving while one has no primary) and a cluster node timeout of
/// [`CLUSTER_NODE_TIMEOUT`].
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_redlock::testkit::TestkitError> {
/// use tower_redlock::testkit::RedisCluster;
///
/// let cluster = RedisCluster::start(3, 1).await?;
/// let url = cluster.url(); // "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,..."
/// let slot = cluster.slot_of("redlock:{order:42}:lock").await?;
/// let owner = cluster.owner(slot).await?;
/// let replica = cluster.replicas_of(owner).await?[0];
/// cluster.failover(replica).await?; // graceful: the replica is the slot's primary now
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: LocalCluster,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    primary: bool,
    failed: bool,
    /// The primary's id, for a replica.
    primary_id: Option<String>,
    /// Slot ranges served (primaries), inclusive.
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts `primaries` primaries (at least 3 when `replicas` > 0, as `redis-cli` wants)
    /// with `replicas` replicas each, and waits until every node says the cluster is `ok`
    /// and every replica is in sync.
    pub async fn start(primaries: usize, replicas: usize) -> Result<RedisCluster, TestkitError> {
        Self::start_with(primaries, replicas, ClusterOptions::new()).await
    }

    /// [`start`](Self::start) with extra `redis-server` options (e.g. a password: pass
    /// `--masterauth` too so replicas can sync).
    pub async fn start_with(
        primaries: usize,
        replicas: usize,
        options: ClusterOptions,
    ) -> Result<RedisCluster, TestkitError> {
        let timeout = CLUSTER_NODE_TIMEOUT.as_millis().to_string();
        let mut cluster_args = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
            "--cluster-node-timeout".to_owned(),
            timeout,
            "--cluster-require-full-coverage".to_owned(),
            "no".to_owned(),
        ];
        cluster_args.extend(options.extra_args.iter().cloned());
        let options = ClusterOptions {
            extra_args: cluster_args,
            ..options
        };
        let total = primaries * (replicas + 1);
        let nodes = LocalCluster::start_with(total, options).await?;
        let cluster = RedisCluster { nodes };
        cluster.create(replicas).await?;
        Ok(cluster)
    }

    /// `redis-cli --cluster create`, then waits until every node agrees.
    async fn create(&self, replicas: usize) -> Result<(), TestkitError> {
        let mut cli = tokio::process::Command::new(find_redis_cli()?);
        cli.arg("--cluster").arg("create");
        for i in 0..self.nodes.len() {
            cli.arg(self.nodes.addr(i).to_string());
        }
        cli.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(CREATE_TIMEOUT, cli.output())
            .await
            .map_err(|_| failed("redis-cli --cluster create timed out"))??;
        if !output.status.success() {
            return Err(failed(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        self.wait_healthy(CREATE_TIMEOUT).await
    }

    /// The node URL of the whole cluster: `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = (0..self.nodes.len())
            .map(|i| self.nodes.addr(i).to_string())
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The processes (ports, kill, pause, ...).
    pub fn nodes(&self) -> &LocalCluster {
        &self.nodes
    }

    /// The hash slot of a Redis key (`CLUSTER KEYSLOT`, asked of a running node).
    pub async fn slot_of(&self, key: &str) -> Result<u16, TestkitError> {
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(key);
        let node = self
            .running()
            .next()
            .ok_or_else(|| failed("no node is running"))?;
        match self.command(node, &keyslot).await? {
            Value::Int(slot) => u16::try_from(slot).map_err(|_| failed("a slot out of range")),
            other => Err(failed(format!("CLUSTER KEYSLOT: {other:?}"))),
        }
    }

    /// The node (index) serving `slot` now, as the first running node sees it.
    pub async fn owner(&self, slot: u16) -> Result<usize, TestkitError> {
        let view = self.view().await?;
        let owner = view
            .iter()
            .find(|n| n.primary && !n.failed && serves(n, slot))
            .ok_or_else(|| failed(format!("no primary serves slot {slot}")))?;
        self.index_of(owner.port)
    }

    /// The nodes (indices) that are primaries now and serve slots.
    pub async fn primaries(&self) -> Result<Vec<usize>, TestkitError> {
        let view = self.view().await?;
        view.iter()
            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
            .map(|n| self.index_of(n.port))
            .collect()
    }

    /// The replicas (indices) of node `primary` now.
    pub async fn replicas_of(&self, primary: usize) -> Result<Vec<usize>, TestkitError> {
        let view = self.view().await?;
        let port = self.nodes.port(primary);
        let id = view
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.id.clone())
            .ok_or_else(|| failed(format!("node {primary} is not in the cluster")))?;
        view.iter()
            .filter(|n| n.primary_id.as_deref() == Some(id.as_str()) && !n.failed)
            .map(|n| self.index_of(n.port))
            .collect()
    }

    /// A graceful failover (`CLUSTER FAILOVER` on `replica`: its primary stops writes,
    /// the replica catches up, then takes over); returns once every running node sees
    /// `replica` as a primary and the cluster is `ok`.
    pub async fn failover(&self, replica: usize) -> Result<(), TestkitError> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        self.command(replica, &cmd).await?;
        self.wait_primary(replica, CREATE_TIMEOUT).await
    }

    /// Kills node `i` (`SIGKILL`): with replicas, one of them takes over after about
    /// twice [`CLUSTER_NODE_TIMEOUT`] (see [`wait_primary`](Self::wait_primary)).
    pub async fn kill(&self, i: usize) -> Result<(), TestkitError> {
        self.nodes.kill(i).await
    }

    /// Waits (bounded by `limit`) until every running node sees node `i` as a primary
    /// serving slots, and says the cluster is `ok`.
    pub async fn wait_primary(&self, i: usize, limit: Duration) -> Result<(), TestkitError> {
        let port = self.nodes.port(i);
        let done = self
            .poll(limit, async || {
                for node in self.running() {
                    let Ok(view) = self.view_of(node).await else {
                        return false;
                    };
                    let promoted = view
                        .iter()
                        .any(|n| n.port == port && n.primary && !n.slots.is_empty());
                    if !promoted || !self.is_ok(node).await {
                        return false;
                    }
                }
                true
            })
            .await;
        done.then_some(())
            .ok_or_else(|| failed(format!("node {i} did not become a primary in {limit:?}")))
    }

    /// Moves `slot`, with its keys, to node `to` (a primary): `IMPORTING`/`MIGRATING`,
    /// `MIGRATE` of every key, then `SETSLOT NODE` on every primary. Returns once every
    /// running node sees `to` as its owner.
    pub async fn migrate_slot(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        self.begin_migration(slot, to).await?;
        self.finish_migration(slot, to).await
    }

    /// The first half of [`migrate_slot`](Self::migrate_slot): `to` imports `slot` and its
    /// owner migrates it, but no key moved yet (a key still at the owner is served there;
    /// a missing one is redirected with `ASK` to `to`).
    pub async fn begin_migration(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        let from = self.owner(slot).await?;
        let (from_id, to_id) = (self.id_of(from).await?, self.id_of(to).await?);
        self.command(to, &setslot(slot, "IMPORTING", &from_id))
            .await?;
        self.command(from, &setslot(slot, "MIGRATING", &to_id))
            .await?;
        Ok(())
    }

    /// The second half of [`migrate_slot`](Self::migrate_slot): moves the keys, then gives
    /// the slot to `to` everywhere.
    pub async fn finish_migration(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        let from = self.owner(slot).await?;
        let to_id = self.id_of(to).await?;
        let to_port = self.nodes.port(to);
        let deadline = Instant::now() + CREATE_TIMEOUT;
        for _ in 0..MAX_POLLS {
            let mut keys_cmd = redis::cmd("CLUSTER");
            keys_cmd.arg("GETKEYSINSLOT").arg(slot).arg(MIGRATE_BATCH);
            let keys = match self.command(from, &keys_cmd).await? {
                Value::Array(keys) => keys,
                other => return Err(failed(format!("GETKEYSINSLOT: {other:?}"))),
            };
            if keys.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(failed(format!("slot {slot}: keys still at the old owner")));
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(COMMAND_TIMEOUT.as_millis() as u64)
                .arg("KEYS");
            for key in keys {
                if let Value::BulkString(key) = key {
                    migrate.arg(key);
                }
            }
            self.command(from, &migrate).await?;
        }
        // The new owner first, then the old one, then everyone else (Redis's own order).
        let set = setslot(slot, "NODE", &to_id);
        self.command(to, &set).await?;
        self.command(from, &set).await?;
        for node in self.primaries().await? {
            if node != to && node != from {
                let _ = self.command(node, &set).await;
            }
        }
        let done = self
            .poll(CREATE_TIMEOUT, async || {
                for node in self.running() {
                    match self.view_of(node).await {
                        Ok(view) => {
                            let owner = view.iter().find(|n| n.primary && serves(n, slot));
                            if owner.map(|n| n.port) != Some(to_port) {
                                return false;
                            }
                        }
                        Err(_) => return false,
                    }
                }
                true
            })
            .await;
        done.then_some(())
            .ok_or_else(|| failed(format!("slot {slot} is not at node {to} everywhere")))
    }

    /// Sends `cmd` to node `i` (bounded) and returns its reply; an error reply is an error.
    pub async fn command(&self, i: usize, cmd: &redis::Cmd) -> Result<Value, TestkitError> {
        let url = self.nodes.url(i);
        let run = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            cmd.query_async::<Value>(&mut conn).await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failed(format!("node {i}: {e}"))),
            Err(_) => Err(failed(format!("node {i}: no reply in {COMMAND_TIMEOUT:?}"))),
        }
    }

    /// Waits until every running node says `cluster_state:ok`, knows every node and
    /// every replica's link to its primary is up.
    async fn wait_healthy(&self, limit: Duration) -> Result<(), TestkitError> {
        let total = self.nodes.len();
        let done = self
            .poll(limit, async || {
                for node in self.running() {
                    let Ok(info) = self.text(node, &cluster_info()).await else {
                        return false;
                    };
                    let known = field(&info, "cluster_known_nodes");
                    if field(&info, "cluster_state") != Some("ok")
                        || known != Some(total.to_string().as_str())
                    {
                        return false;
                    }
                    let mut replication = redis::cmd("INFO");
                    replication.arg("replication");
                    let Ok(info) = self.text(node, &replication).await else {
                        return false;
                    };
                    let replica = field(&info, "role") == Some("slave");
                    if replica && field(&info, "master_link_status") != Some("up") {
                        return false;
                    }
                }
                true
            })
            .await;
        done.then_some(())
            .ok_or_else(|| failed(format!("the cluster did not become ok in {limit:?}")))
    }

    async fn is_ok(&self, node: usize) -> bool {
        let info = self.text(node, &cluster_info()).await;
        info.is_ok_and(|info| field(&info, "cluster_state") == Some("ok"))
    }

    /// Polls `check` every 50 ms until it holds: at most [`MAX_POLLS`] times, within
    /// `limit`.
    async fn poll(&self, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        for _ in 0..MAX_POLLS {
            if check().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes.state(i) == NodeState::Running)
    }

    async fn text(&self, i: usize, cmd: &redis::Cmd) -> Result<String, TestkitError> {
        match self.command(i, cmd).await? {
            Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Value::VerbatimString { text, .. } => Ok(text),
            other => Err(failed(format!("node {i}: unexpected reply {other:?}"))),
        }
    }

    /// `CLUSTER NODES` as the first running node that answers sees it.
    async fn view(&self) -> Result<Vec<NodeLine>, TestkitError> {
        let mut last = None;
        for node in self.running() {
            match self.view_of(node).await {
                Ok(view) => return Ok(view),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| failed("no node is running")))
    }

    async fn view_of(&self, i: usize) -> Result<Vec<NodeLine>, TestkitError> {
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        let text = self.text(i, &nodes).await?;
        Ok(text.lines().filter_map(parse_line).collect())
    }

    async fn id_of(&self, i: usize) -> Result<String, TestkitError> {
        let mut myid = redis::cmd("CLUSTER");
        myid.arg("MYID");
        self.text(i, &myid).await
    }

    fn index_of(&self, port: u16) -> Result<usize, TestkitError> {
        (0..self.nodes.len())
            .find(|&i| self.nodes.port(i) == port)
            .ok_or_else(|| failed(format!("no node on port {port}")))
    }
}

fn cluster_info() -> redis::Cmd {
    let mut info = redis::cmd("CLUSTER");
    info.arg("INFO");
    info
}

fn setslot(slot: u16, state: &str, id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
    cmd
}

fn serves(node: &NodeLine, slot: u16) -> bool {
    node.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
}

/// `field:value` of an `INFO`-style reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// One `CLUSTER NODES` line: `id ip:port@cport[,host] flags primary ping pong epoch link
/// slot..`.
fn parse_line(line: &str) -> Option<NodeLine> {
    let mut parts = line.split_whitespace();
    let id = parts.next()?.to_owned();
    let addr = parts.next()?;
    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let flags = parts.next()?;
    let primary_id = parts.next()?;
    let slots = parts
        .skip(4)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    let flag = |f: &str| flags.split(',').any(|x| x == f);
    Some(NodeLine {
        id,
        port,
        primary: flag("master"),
        failed: flag("fail") || flag("noaddr"),
        primary_id: (primary_id != "-").then(|| primary_id.to_owned()),
        slots,
    })
}

fn failed(detail: impl Into<String>) -> TestkitError {
    TestkitError::Cluster {
        detail: detail.into(),
    }
}

/// `redis-cli`: from `REDIS_CLI`, else beside `redis-server`, else on `PATH`.
fn find_redis_cli() -> Result<PathBuf, TestkitError> {
    if let Some(value) = std::env::var_os("REDIS_CLI").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(value));
    }
    let beside = super::find_redis_server()
        .ok()
        .and_then(|server| server.parent().map(|dir| dir.join("redis-cli")))
        .filter(|cli| cli.is_file());
    if let Some(cli) = beside {
        return Ok(cli);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|p| Path::is_file(p))
        .ok_or_else(|| failed("redis-cli not found: set REDIS_CLI or put it on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let primary = parse_line(
            "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 myself,master - 0 \
             1426238316232 4 connected 0-5460 5462 [5461->-abc]",
        )
        .unwrap();
        assert_eq!(primary.port, 30004);
        assert!(primary.primary && !primary.failed);
        assert_eq!(primary.slots, [(0, 5460), (5462, 5462)]);
        assert!(serves(&primary, 5462) && !serves(&primary, 5461));
        let replica = parse_line(
            "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001,host slave,fail \
             07c37dfeb235213a872192d90877d0cd55635b91 0 1426238317741 1 connected",
        )
        .unwrap();
        assert!(!replica.primary && replica.failed);
        assert_eq!(
            replica.primary_id.as_deref(),
            Some("07c37dfeb235213a872192d90877d0cd55635b91")
        );
        assert_eq!(
            field("a:1\r\ncluster_state:ok\r\n", "cluster_state"),
            Some("ok")
        );
    }
}
