//! One Redis node: a bb8 pool over our own connection manager, one shared multiplexed
//! connection, and script calls.
//!
//! `bb8-redis`'s manager has no timeouts and never reports a connection broken, so a node
//! restart would leave dead connections in the pool and a down node could cost bb8's 30 s
//! default. [`NodeManager`] bounds the connect, loads the scripts, and lets a connection be
//! marked broken (after an I/O error, or a `PING` probe that went unanswered after a
//! timeout). All calls share the node's current multiplexed connection — one socket keeps
//! commands in order and pipelines concurrent calls — and a broken one is replaced through
//! the pool's manager (`dedicated_connection`, which fails at once on a refused connection
//! instead of waiting out a checkout timeout).
//!
//! A node that stops answering (a timeout, a refused or dropped connection) is *skipped*:
//! its calls fail at once, as a "no" vote, instead of piling requests onto a socket nobody
//! reads, until a probe in the background gets an answer (see [`super::recovery`]).
//!
//! A node that answers, but slower than the others, is *passed by* once too many of its
//! replies are overdue: the engine decides at quorum and reads a slow node's replies in the
//! background, so without a bound a lagging node would make that background work grow with
//! the request rate for as long as it lags. See [`super::backlog`].
//!
//! Calls that *must reach* every node ([`Call::must_reach`]: releases and fencing
//! write-backs) still go to a node passed by or skipped, counted as a "no" vote at once,
//! nobody waiting for their replies:
//! - behind: sent on the node's connection (after what it carries), its reply not awaited;
//! - skipped: sent, in the background and bounded by the node timeout, on the node's
//!   current connection *even if it was given up on*, and never on a new one. A node that
//!   stopped answering but still reads its socket (a frozen or overloaded process, a
//!   partition that TCP rides out) runs it once it answers again, after what that socket
//!   carried before (e.g. the acquisition it undoes). A node whose connection died (killed,
//!   restarted, a reset) does not get it: it lost its keys anyway, and for fencing it counts
//!   as a node that lost its data (see [`super::acquire`]'s `sync_fence`). A skipped
//!   node's new connections are the probe's job: a call never piles a connection attempt
//!   onto a node that does not answer. Each such write is one bounded task per call; it
//!   never changes whether the node is skipped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bb8_redis::bb8;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::backlog::Availability;
use super::node_url::NodeUrl;
use super::scripts::{self, Script};

/// Why a node did not answer usefully. Counts as a "no" vote.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("unexpected reply: {0}")]
    Reply(&'static str),
    #[error("skipped: it stopped answering and has not answered a probe since")]
    Skipped,
    #[error("passed by: {0} of its replies are overdue; it is used again once it catches up")]
    Behind(usize),
}

impl NodeError {
    /// Whether the node failed to answer at all (as opposed to answering with an error):
    /// a reason to skip it until it answers again.
    pub(crate) fn is_unresponsive(&self) -> bool {
        match self {
            NodeError::Timeout(_) => true,
            NodeError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
            }
            NodeError::Reply(_) | NodeError::Skipped | NodeError::Behind(_) => false,
        }
    }
}

/// A multiplexed connection plus a flag the pool reads in `has_broken`.
pub(crate) struct NodeConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8 connection manager over `redis::Client` with timeouts and broken-connection detection.
pub(crate) struct NodeManager {
    client: Client,
    timeout: Duration,
}

impl bb8::ManageConnection for NodeManager {
    type Connection = NodeConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<NodeConnection, RedisError> {
        // Responses are bounded by the caller's own timeout: redis-rs reports its response
        // timeout as an I/O error, which would needlessly throw the connection away and
        // send the next command (e.g. a cleanup) down another socket, out of order.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Load every script once per connection (a new connection after a node restart
        // reloads them), so that EVALSHA does not need a NOSCRIPT round trip — which a
        // cleanup sent to a frozen node would not get before its timeout.
        let mut load = redis::pipe();
        for script in scripts::ALL.iter() {
            load.cmd("SCRIPT").arg("LOAD").arg(script.body);
        }
        // Bounded too: a frozen node accepts connections (the kernel does) but never answers.
        tokio::time::timeout(self.timeout, load.query_async::<()>(&mut conn))
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "loading scripts timed out",
                ))
            })??;
        Ok(NodeConnection {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, conn: &mut NodeConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut NodeConnection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// A connection and its broken flag.
pub(crate) type Shared = (MultiplexedConnection, Arc<AtomicBool>);

/// Where a call records the connection it sent its request on, so that a cleanup can follow
/// it on the same socket (and so run after it on the node, whatever happens to the node's
/// current connection meanwhile).
pub(crate) type SentOn = std::sync::Mutex<Option<Shared>>;

fn record(sent_on: Option<&SentOn>, conn: &Shared) {
    if let Some(slot) = sent_on {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    }
}

/// One node of the quorum.
pub(crate) struct Node {
    pub(crate) url: NodeUrl,
    pool: bb8::Pool<NodeManager>,
    current: RwLock<Option<Shared>>,
    setup: tokio::sync::Mutex<()>,
    /// This node's position among the engine's nodes.
    index: usize,
    /// Whether this node (and each other one) is skipped or behind: calls fail at once
    /// while this node is skipped (cleared when a probe gets an answer), or behind within
    /// the budget (see [`super::backlog`]).
    availability: Arc<Availability>,
    /// A check (and, once skipped, the probes) of this node is running.
    checking: AtomicBool,
    /// Replies of decided fan-outs still awaited in the background.
    overdue: AtomicUsize,
    backlog: usize,
    timeout: Duration,
}

impl Node {
    /// Creates the node's pool without connecting (connections are made on first use, so a
    /// node that is down at start-up does not stop the service from starting).
    /// `index` is its position among the engine's nodes, whose `availability` it shares.
    pub(crate) fn new(
        url: NodeUrl,
        index: usize,
        availability: Arc<Availability>,
        timeout: Duration,
        backlog: usize,
        tls_root: Option<&[u8]>,
    ) -> Result<Node, RedisError> {
        let client = client_for(&url, tls_root)?;
        let pool = bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(timeout)
            .retry_connection(false)
            .test_on_check_out(false)
            .build_unchecked(NodeManager { client, timeout });
        Ok(Node {
            url,
            pool,
            current: RwLock::new(None),
            setup: tokio::sync::Mutex::new(()),
            index,
            availability,
            checking: AtomicBool::new(false),
            overdue: AtomicUsize::new(0),
            backlog: backlog.max(1),
            timeout,
        })
    }

    /// A multiplexed connection. The current one is shared by every call (so concurrent
    /// calls pipeline over one socket and cost no checkout); when it breaks, a healthy one is
    /// checked out of the pool (which replaces broken ones) and becomes current.
    async fn connection(&self) -> Result<Shared, NodeError> {
        match self.healthy_current() {
            Some(current) => Ok(current),
            // Boxed: the set-up future is large (connect, script loading) and rarely needed,
            // so it stays out of every call's future (which the fan-outs allocate per node).
            None => Box::pin(self.replace_connection()).await,
        }
    }

    /// The current connection, unless there is none or it is marked broken.
    fn healthy_current(&self) -> Option<Shared> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|current| !current.1.load(Ordering::Relaxed))
            .cloned()
    }

    /// Sets up the next connection.
    async fn replace_connection(&self) -> Result<Shared, NodeError> {
        // One caller at a time (FIFO) sets up the next connection and everyone uses it, so
        // commands to a node keep the order they were issued in (a cleanup never overtakes
        // the SET it undoes on another socket).
        let _setup = self.setup.lock().await;
        if let Some(current) = self.healthy_current() {
            return Ok(current);
        }
        // Made by the pool's manager (connect timeout, scripts loaded). `dedicated_connection`
        // reports a refused connection at once, where a pool checkout would wait out its
        // whole timeout before giving up on a down node.
        let fresh = self
            .pool
            .dedicated_connection()
            .await
            .map_err(NodeError::Redis)?;
        let fresh = (fresh.conn, fresh.broken);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Whether `conn` is still the node's current connection (marked broken or not): a
    /// call made from now on goes out on it, or on a newer one, never on an older one.
    pub(crate) fn is_current(&self, conn: &Shared) -> bool {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(&current.1, &conn.1))
    }

    /// Whether calls to the node are skipped (see the module docs).
    pub(crate) fn is_skipped(&self) -> bool {
        self.availability.is_skipped(self.index)
    }

    /// Starts skipping the node. (Nodes behind are passed by again only while the budget,
    /// which this spends, allows: see [`super::backlog`].)
    pub(crate) fn skip(&self) {
        self.availability.set_skipped(self.index, true);
    }

    /// The engine's record of which nodes are skipped or behind.
    pub(crate) fn availability(&self) -> &Availability {
        &self.availability
    }

    /// Claims the node's check; `false` when one is already running.
    pub(crate) fn begin_check(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// Ends the node's check.
    pub(crate) fn end_check(&self) {
        self.checking.store(false, Ordering::Release);
    }

    /// One more reply of this node's left to the background (its fan-out was decided
    /// without it); returns how many are overdue now. See [`super::backlog`].
    pub(crate) fn add_overdue(&self) -> usize {
        self.overdue.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A reply left to the background landed or timed out; returns how many are still
    /// overdue.
    pub(crate) fn remove_overdue(&self) -> usize {
        self.overdue
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Replies of this node's overdue now.
    pub(crate) fn overdue(&self) -> usize {
        self.overdue.load(Ordering::Relaxed)
    }

    /// The overdue count at which the node may be passed by.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog
    }

    /// Flags the node behind; `false` when it already was.
    pub(crate) fn set_behind(&self) -> bool {
        self.availability.set_behind(self.index)
    }

    /// Clears the node's behind flag; `false` when it was not set.
    pub(crate) fn clear_behind(&self) -> bool {
        self.availability.clear_behind(self.index)
    }

    /// Whether the node is flagged behind, whether or not the budget lets it be passed by.
    pub(crate) fn is_flagged_behind(&self) -> bool {
        self.availability.is_flagged_behind(self.index)
    }

    /// Whether calls pass the node by (see [`super::backlog`]): it is flagged behind, its
    /// count still says so (a flag left set by a race cannot outlive the backlog: every
    /// overdue reply lands or times out within the node timeout), and the nodes skipped or
    /// behind now are no more than the quorum can spare.
    pub(crate) fn is_behind(&self) -> bool {
        self.is_flagged_behind()
            && self.overdue() > self.backlog / 2
            && self.availability.passes_by()
    }

    /// The node answered a request sent on its current connection: use it again.
    pub(crate) fn answered(&self) {
        self.availability.set_skipped(self.index, false);
    }

    /// One recovery probe: a `PING`, bounded by the node timeout, on the current connection
    /// (queued behind whatever it still carries, so an answer means those ran too) or on a
    /// new one. When it answers, the node is used again; when it does not, the connection
    /// is marked broken (a partition or a half-open socket would otherwise keep a dead
    /// connection in use until the OS gives up on it) and the next probe makes a new one.
    pub(crate) async fn probe(&self) -> bool {
        let sent = SentOn::default();
        let ping = Call::Command(redis::cmd("PING"));
        let answered = match tokio::time::timeout(self.timeout, self.send(&ping, Some(&sent))).await
        {
            Ok(Ok(_)) => true,
            // An error reply (e.g. an ACL without `ping`) is an answer too.
            Ok(Err(error)) => !error.is_unresponsive(),
            Err(_) => false,
        };
        if answered {
            self.answered();
            return true;
        }
        if let Some((_, broken)) = sent.lock().unwrap_or_else(|e| e.into_inner()).take() {
            broken.store(true, Ordering::Relaxed);
        }
        false
    }

    /// Makes the first connection (bounded by the node timeout); failures are left for the
    /// first real call to report.
    pub(crate) async fn warm_up(&self) {
        let _ = tokio::time::timeout(self.timeout, self.connection()).await;
    }

    /// Runs `call`, bounded by the node timeout (checkout included), even while the node is
    /// skipped: health checks look at the node itself.
    pub(crate) async fn query(&self, call: &Call) -> Result<Value, NodeError> {
        tokio::time::timeout(self.timeout, self.send(call, None))
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
    }

    /// Sends `call` (built once, sent as is to every node) on the node's current
    /// connection, recording that connection in `sent_on`; fails at once while the node is
    /// skipped or behind, after sending a call that [must reach](Call::must_reach) it
    /// anyway (see the module docs). Not bounded here: callers run it inside a
    /// [`Fanout`](super::fanout::Fanout) or a timeout.
    pub(crate) async fn call(
        &self,
        call: &Call,
        sent_on: Option<&SentOn>,
    ) -> Result<Value, NodeError> {
        if self.is_skipped() {
            self.reach_skipped(call);
            return Err(NodeError::Skipped);
        }
        if self.is_behind() {
            // Boxed: rare, and it would otherwise make every call's future larger.
            return Box::pin(self.pass_by(call, sent_on)).await;
        }
        self.send(call, sent_on).await
    }

    /// The call while the node is behind: a "no" vote, without sending anything, except
    /// that a call that must reach it still goes out (on the one connection, after what it
    /// undoes), its reply not awaited: nothing is kept for it on our side.
    async fn pass_by(&self, call: &Call, sent_on: Option<&SentOn>) -> Result<Value, NodeError> {
        let overdue = self.overdue();
        if let Some(unanswered) = call.unanswered() {
            self.send(&unanswered, sent_on).await?;
        }
        Err(NodeError::Behind(overdue))
    }

    /// The call while the node is skipped: a call that must reach it is sent, in the
    /// background and bounded by the node timeout, on its current connection even if that
    /// was given up on (never a new one); nobody waits for it. Whatever happens to it
    /// leaves the node's skipped state alone. See the module docs.
    fn reach_skipped(&self, call: &Call) {
        if !call.must_reach() {
            return;
        }
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (Some((mut conn, _)), Ok(runtime)) = (current, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (timeout, call) = (self.timeout, call.clone());
        // It awaits the reply (bounded), so that this handle keeps the connection open
        // meanwhile even if the node's current connection is replaced (dropping the last
        // handle of a connection closes it, and a request not yet written would be lost).
        let mut send = Box::pin(async move {
            let _ = tokio::time::timeout(timeout, call.run(&mut conn)).await;
        });
        // Polled once here, which queues the request on the connection now: requests to
        // the node keep the order of the calls (e.g. a hand-off's move, then the release
        // of the token it moved to). The rest runs in a task of its own, since a request
        // whose caller went away would never be sent.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if send.as_mut().poll(&mut cx).is_pending() {
            drop(runtime.spawn(send));
        }
    }

    /// [`call`](Self::call), skipped or not. A connection found dead is replaced and the
    /// call tried once more.
    async fn send(&self, call: &Call, sent_on: Option<&SentOn>) -> Result<Value, NodeError> {
        let mut tries = 0;
        loop {
            let used = self.connection().await?;
            record(sent_on, &used);
            let (mut conn, broken) = used;
            match call.run(&mut conn).await {
                Err(e) if retry_on_fresh_connection(&e, &mut tries) => {
                    mark_if_broken(e, &broken);
                }
                other => return other.map_err(|e| mark_if_broken(e, &broken)),
            }
        }
    }
}

/// A request built once per operation and sent, as is, to every node.
#[derive(Clone)]
pub(crate) enum Call {
    /// A plain command.
    Command(Cmd),
    /// A script, by SHA.
    Script(ScriptCall),
}

impl Call {
    /// `EVALSHA sha key_count ...`, `args` appending the keys and arguments; the `EVAL`
    /// fallback is built only for a node that does not know the script (after a restart or
    /// `SCRIPT FLUSH`).
    pub(crate) fn script(
        script: &'static Script,
        key_count: usize,
        args: impl FnOnce(&mut Cmd),
    ) -> Call {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&script.sha).arg(key_count);
        args(&mut evalsha);
        Call::Script(ScriptCall { script, evalsha })
    }

    async fn run(&self, conn: &mut MultiplexedConnection) -> Result<Value, RedisError> {
        match self {
            Call::Command(cmd) => send_on(conn, cmd).await,
            Call::Script(call) => call.run(conn).await,
        }
    }

    /// Whether this call must reach every node, even one passed by or skipped: a release
    /// (a key it leaves blocks that node until its ttl) or a fencing write-back (a counter
    /// left low could let a later token go backwards). See the module docs.
    pub(crate) fn must_reach(&self) -> bool {
        matches!(self, Call::Script(call) if call.script.must_reach)
    }

    /// For a call that [must reach](Self::must_reach) every node, the same request sent
    /// without waiting for its reply (by SHA: the scripts are loaded on every connection);
    /// `None` for anything else.
    fn unanswered(&self) -> Option<Call> {
        match self {
            Call::Script(call) if call.script.must_reach => {
                let mut cmd = call.evalsha.clone();
                cmd.set_no_response(true);
                Some(Call::Command(cmd))
            }
            _ => None,
        }
    }
}

/// Sends one command and reads its reply (a server error reply becomes an error).
///
/// redis-rs's future is over 1 KiB: boxed once here, every layer above (and the fan-outs
/// holding one call per node) moves a pointer instead of copying it at each step.
async fn send_on(conn: &mut MultiplexedConnection, cmd: &Cmd) -> Result<Value, RedisError> {
    Box::pin(conn.send_packed_command(cmd))
        .await?
        .extract_error()
}

/// A script call: `EVALSHA`, with `EVAL` as the fallback.
#[derive(Clone)]
pub(crate) struct ScriptCall {
    script: &'static Script,
    evalsha: Cmd,
}

impl ScriptCall {
    /// The `EVALSHA` request as sent (read back by the simulated nodes).
    pub(crate) fn evalsha(&self) -> &Cmd {
        &self.evalsha
    }

    /// Runs the script on `conn` by SHA, loading it with `EVAL` when the node does not
    /// know it.
    async fn run(&self, conn: &mut MultiplexedConnection) -> Result<Value, RedisError> {
        match send_on(conn, &self.evalsha).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                send_on(conn, &self.eval()).await
            }
            other => other,
        }
    }

    /// The same call as `EVAL body key_count ...`.
    fn eval(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.body);
        // After the command name and the SHA come the key count, keys and arguments.
        for arg in self.evalsha.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// Runs `call` on exactly `conn` (one try; the caller bounds it).
pub(crate) async fn call_on(conn: Shared, call: &Call) -> Result<Value, NodeError> {
    let (mut conn, broken) = conn;
    call.run(&mut conn)
        .await
        .map_err(|e| mark_if_broken(e, &broken))
}

/// A client for `url`: with TLS (`rediss://`, feature `tls`) it trusts `tls_root` (PEM)
/// when given, the system's roots otherwise.
pub(crate) fn client_for(url: &NodeUrl, tls_root: Option<&[u8]>) -> Result<Client, RedisError> {
    #[cfg(feature = "tls")]
    if let Some(root) = tls_root {
        return Client::build_with_tls(
            url.connection_info().clone(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            },
        );
    }
    let _ = tls_root;
    Client::open(url.connection_info().clone())
}

/// A connection found dead when used (e.g. the node restarted) is replaced and the call
/// retried once on the new one, so the first call after a restart does not fail needlessly.
/// Safe for every script here: a request that never reached the node is simply sent; one
/// that ran on a node that then died ran on state that died with it.
fn retry_on_fresh_connection(err: &RedisError, tries: &mut u32) -> bool {
    *tries += 1;
    *tries == 1 && err.is_connection_dropped()
}

fn mark_if_broken(err: RedisError, broken: &AtomicBool) -> NodeError {
    if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
        broken.store(true, Ordering::Relaxed);
    }
    NodeError::Redis(err)
}

/// Reads an integer reply.
pub(crate) fn int(value: &Value) -> Result<i64, NodeError> {
    match value {
        Value::Int(i) => Ok(*i),
        _ => Err(NodeError::Reply("expected an integer")),
    }
}

/// Reads a `{int, int}` reply.
pub(crate) fn int_pair(value: &Value) -> Result<(i64, i64), NodeError> {
    match value {
        Value::Array(items) if items.len() == 2 => Ok((int(&items[0])?, int(&items[1])?)),
        _ => Err(NodeError::Reply("expected a pair of integers")),
    }
}
