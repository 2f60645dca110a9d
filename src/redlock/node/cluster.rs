//! A Redis Cluster as ONE node (one vote): each call goes to the primary owning its keys'
//! slot, through redis-rs's async cluster client.
//!
//! # Routing
//!
//! A script call is routed by its first key (`EVALSHA sha n key..`): every script's keys
//! share one hash tag (see `core/keys.rs`), so one slot and one primary; a lock whose keys
//! span several slots is refused before anything is sent (`LockKeys::one_slot`), and the
//! batched extension groups leases by slot (`lease/batch/send.rs`). The client follows
//! `MOVED` (refreshing its slot map) and `ASK` (with `ASKING`), and retries a few times
//! while a shard has no primary (`CLUSTERDOWN`, `TRYAGAIN`), all within the node timeout.
//! `PING` goes to every primary (the node answers when the whole cluster does); `INFO`
//! goes to one. So a primary that stops answering gets the whole node skipped (see
//! [`super`]) until the recovery probe's `PING` is answered by every primary: once its
//! replica took over, or it is back.
//!
//! # Timeouts
//!
//! The client is built with the node timeout as its connect timeout, its per-reply timeout
//! and its overall timeout (retries and redirections included); the connection itself is
//! made lazily, on the first call, bounded by the node timeout. Any error is a "no" vote.
//!
//! # Scripts
//!
//! Scripts go by SHA. The script cache is per server: on connect every script is loaded on
//! every node (`SCRIPT LOAD` goes to all of them, replicas included, so a promoted replica
//! has them), best effort; a primary that does not know a script (a new node after a
//! reshard, a restart) answers `NOSCRIPT` and the call is sent again as `EVAL`. A call sent
//! without waiting for its reply (a release to a node passed by) is still awaited here, in a
//! task of its own, with the same fallback: a `NOSCRIPT` there must not lose it.
//!
//! # Order of calls
//!
//! The seam promises that calls on one handle reach the node in order. The cluster client
//! has one handle for the whole cluster: every request goes through one channel to one task,
//! which starts them in the order received; each takes the slot map (a read lock, FIFO
//! behind a refresh) and queues onto the slot owner's one multiplexed connection (FIFO,
//! pipelined). So in steady state, calls on one lock (one slot, one primary) reach it in
//! the order they were made, as on a standalone node (`tests/cluster` cancels acquisitions
//! at every point and finds no key left). The order can break only around a topology
//! change: a request redirected by `MOVED`/`ASK`, or retried after a reconnect, is sent
//! again after requests made later, and a handle marked broken (an I/O error, an
//! unanswered probe) is replaced by a new cluster connection. That is safe for every call
//! the engine makes:
//! - a release that overtakes the acquisition it undoes finds nothing, and the key expires
//!   by its ttl: the lock is blocked for up to one ttl, never doubly held (the attempt did
//!   not count that vote, so nobody believes they hold it);
//! - an acquisition run late is compare-first (`EXISTS`): it takes a key only if nobody
//!   holds it, as any acquisition; an extension is compare-only: run late it finds the key
//!   gone or someone else's and changes nothing, or extends our own key past what the
//!   engine counted (which counts validity from the call's start);
//! - a fencing write-back only raises counters.
//!
//! # While a slot migrates
//!
//! Redis answers `TRYAGAIN` to a script some of whose keys are missing on the node asked
//! (the client retries within the node timeout, then it is a "no" vote). The engine's
//! scripts declare only stored keys (wake-up channels are arguments), so releases,
//! extensions and fresh keys work (`ASK` for a key already moved); an acquisition whose
//! fencing counter exists while its lock key does not (one moved, the other not yet) fails
//! on this node until the migration ends, and so does a reader's call while its keys are
//! split.
//!
//! The client, like the multiplexed connection, drops a queued request whose caller went
//! away; the engine's cleanups run in tasks of their own (see [`super`]), and the unanswered
//! sends here do too.
//!
//! # Not here
//!
//! Wake-on-release (pub/sub) is off for cluster nodes: waiters of other processes are woken
//! by their fallback timer (their own process's releases still wake them at once).
//!
//! [`super`]: super

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionInfo, ErrorKind, RedisError, ServerErrorKind, Value};

use self::primaries::Primaries;
use super::call::Call;
use super::error::NodeError;
use super::transport::{Connection, Transport};
use crate::redlock::core::scripts;

mod primaries;

/// How often the client retries one request (redirections, a shard without a primary),
/// all within the node timeout.
const RETRIES: u32 = 4;

/// A handle on the node's cluster connection (one for the whole cluster).
#[derive(Clone)]
pub(crate) struct ClusterConn {
    conn: ClusterConnection,
    broken: Arc<AtomicBool>,
    timeout: Duration,
}

/// The node's cluster connection, made on first use and replaced once marked broken.
pub(crate) struct ClusterLink {
    /// Boxed: the client is large, and the link sits beside the others in an enum.
    client: Box<ClusterClient>,
    timeout: Duration,
    current: RwLock<Option<ClusterConn>>,
    setup: tokio::sync::Mutex<()>,
    primaries: Arc<Primaries>,
}

impl ClusterLink {
    /// The node's link, without connecting: `seeds` (with the data nodes' credentials and
    /// TLS mode) are where the client first learns the cluster's layout.
    pub(crate) fn new(
        seeds: &[ConnectionInfo],
        timeout: Duration,
        tls_root: Option<&[u8]>,
    ) -> Result<ClusterLink, RedisError> {
        let max_wait = u64::try_from((timeout / 4).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let builder = ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout))
            .retries(RETRIES)
            .min_retry_wait(1)
            .max_retry_wait(max_wait);
        #[cfg(feature = "tls")]
        let builder = match tls_root {
            Some(root) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            }),
            None => builder,
        };
        #[cfg(not(feature = "tls"))]
        let _ = tls_root;
        Ok(ClusterLink {
            client: Box::new(builder.build()?),
            timeout,
            current: RwLock::default(),
            setup: tokio::sync::Mutex::default(),
            primaries: Arc::default(),
        })
    }

    /// The current primaries, as `host:port` in slot order, when known (last looked up
    /// when the connection was made or, since, at the previous call of this).
    pub(crate) fn primary(&self) -> Option<String> {
        if let Some(conn) = self.healthy_current() {
            self.primaries.refresh(conn.conn, self.timeout);
        }
        self.primaries.get()
    }

    fn healthy_current(&self) -> Option<ClusterConn> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| !c.is_broken()).cloned()
    }

    /// Makes the next connection (one caller at a time, FIFO; everyone uses it), bounded
    /// by the node timeout.
    async fn replace_connection(&self) -> Result<ClusterConn, NodeError> {
        let _setup = self.setup.lock().await;
        if let Some(current) = self.healthy_current() {
            return Ok(current);
        }
        let mut conn = tokio::time::timeout(self.timeout, self.client.get_async_connection())
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))??;
        // Best effort: a node that misses them answers NOSCRIPT, and the call goes as EVAL.
        let mut load = redis::pipe();
        for script in scripts::ALL.iter() {
            load.cmd("SCRIPT").arg("LOAD").arg(script.body).ignore();
        }
        let _ = tokio::time::timeout(self.timeout, load.exec_async(&mut conn)).await;
        let fresh = ClusterConn {
            conn,
            broken: Arc::default(),
            timeout: self.timeout,
        };
        self.primaries.refresh(fresh.conn.clone(), self.timeout);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }
}

impl Transport for ClusterLink {
    type Conn = ClusterConn;

    async fn connection(&self, _call: &Call) -> Result<ClusterConn, NodeError> {
        match self.healthy_current() {
            Some(current) => Ok(current),
            // Boxed: large and rarely needed.
            None => Box::pin(self.replace_connection()).await,
        }
    }

    fn current(&self, _call: &Call) -> Option<ClusterConn> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn warm_up(&self) {
        let _ = self.connection(&Call::Command(redis::cmd("PING"))).await;
    }

    fn is_current(&self, conn: &ClusterConn) -> bool {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(&current.broken, &conn.broken))
    }
}

impl Connection for ClusterConn {
    async fn send(mut self, call: &Call) -> Result<Value, NodeError> {
        let reply = match call {
            Call::Command(cmd) if cmd.is_no_response() => {
                self.send_unanswered(cmd);
                Ok(Value::Nil)
            }
            Call::Command(cmd) => send_on(&mut self.conn, cmd).await,
            Call::Script(call) => {
                run_script(&mut self.conn, call.evalsha(), || Some(call.eval())).await
            }
        };
        reply.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.mark_broken();
            }
            NodeError::Redis(e)
        })
    }

    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

impl ClusterConn {
    /// Sends `cmd` (sent without waiting for its reply on a standalone node) and awaits its
    /// reply in a task of its own, bounded by the node timeout: the client would drop a
    /// request nobody waits for, and a script that the primary does not know must go again
    /// as `EVAL`. Queued on the connection now, before this returns, so it keeps its place
    /// in the order of calls.
    fn send_unanswered(&self, cmd: &Cmd) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut cmd = cmd.clone();
        cmd.set_no_response(false);
        let (mut conn, timeout) = (self.conn.clone(), self.timeout);
        let mut send = Box::pin(async move {
            let eval = || eval_of(&cmd);
            let _ = tokio::time::timeout(timeout, run_script(&mut conn, &cmd, eval)).await;
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if send.as_mut().poll(&mut cx).is_pending() {
            drop(runtime.spawn(send));
        }
    }
}

/// Sends one command, routed by redis-rs (a script by its first key), and reads its reply
/// (a server error reply becomes an error). `INFO` goes to one node, not to each.
async fn send_on(conn: &mut ClusterConnection, cmd: &Cmd) -> Result<Value, RedisError> {
    let name = cmd.args_iter().next();
    let reply = if matches!(name, Some(redis::Arg::Simple(b"INFO" | b"info"))) {
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        Box::pin(conn.route_command(cmd.clone(), random)).await?
    } else {
        Box::pin(redis::aio::ConnectionLike::req_packed_command(conn, cmd)).await?
    };
    reply.extract_error()
}

/// Runs a script by SHA (`evalsha`), sending it again as `EVAL` (`eval()`) when the
/// primary does not know it.
async fn run_script(
    conn: &mut ClusterConnection,
    evalsha: &Cmd,
    eval: impl FnOnce() -> Option<Cmd>,
) -> Result<Value, RedisError> {
    match send_on(conn, evalsha).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => match eval() {
            Some(eval) => send_on(conn, &eval).await,
            None => Err(e),
        },
        other => other,
    }
}

/// The `EVAL` form of an `EVALSHA` command of one of the engine's scripts (found by SHA).
fn eval_of(evalsha: &Cmd) -> Option<Cmd> {
    let mut args = evalsha.args_iter();
    let (Some(redis::Arg::Simple(b"EVALSHA")), Some(redis::Arg::Simple(sha))) =
        (args.next(), args.next())
    else {
        return None;
    };
    let script = scripts::ALL.iter().find(|s| s.sha.as_bytes() == sha)?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(script.body);
    for arg in args {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    Some(eval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redlock::core::scripts::RELEASE_ONE;

    #[test]
    fn an_unanswered_script_call_has_its_eval_form() {
        let call = Call::script(&RELEASE_ONE, 1, |cmd| {
            cmd.arg("p:{a}:lock").arg("token").arg("p:{a}:released");
        });
        let Call::Command(unanswered) = call.unanswered().expect("a release must reach") else {
            panic!("a command")
        };
        let Call::Script(script) = &call else {
            panic!("a script call")
        };
        let eval = eval_of(&unanswered).expect("one of the engine's scripts");
        assert_eq!(
            eval.get_packed_command(),
            script.eval().get_packed_command()
        );
        // Anything else has none.
        assert!(eval_of(&redis::cmd("PING")).is_none());
        let mut unknown = redis::cmd("EVALSHA");
        unknown.arg("0000").arg(0);
        assert!(eval_of(&unknown).is_none());
    }
}
