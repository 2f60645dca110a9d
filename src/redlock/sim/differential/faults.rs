//! The faults, differentially: a paused, partitioned or restarted `redis-server` (the test
//! kit's `SIGSTOP`, `FaultProxy::blackhole` and restart) and a [`SimNode`] with the same
//! fault must answer, lose, queue and break the same requests.
//!
//! Calls run as tasks that are never dropped (a request whose caller left may not be
//! written by redis-rs at all), and "not answered" is read after a window while the fault
//! makes an answer impossible, so a slow machine cannot turn one outcome into another.
//!
//! Not compared: a connection made during a partition (the proxy accepts it and stays
//! silent; the model fails it at once, as the engine's bounded connect would), and a
//! restart with data (the test kit restarts nodes empty).

use std::time::Duration;

use redis::Value;
use tokio::task::JoinHandle;

use super::WAIT;
use crate::redlock::node::{self, Call, NodeError};
use crate::redlock::sim::{SimConnection, SimNode};
use crate::testkit::{FaultProxy, LocalCluster};

/// How long a request the fault holds back is watched for an answer.
const WINDOW: Duration = Duration::from_millis(300);

#[derive(Debug, PartialEq)]
enum Outcome {
    Reply(Value),
    /// An error reply, by its code.
    Error(String),
    /// The connection failed (reset, refused, closed).
    Unreachable,
    /// No answer within the window.
    Pending,
    /// Its answer was read at an earlier step.
    AnsweredBefore,
}

enum Fault {
    Real {
        cluster: LocalCluster,
        proxy: FaultProxy,
    },
    Sim(SimNode),
}

/// A connection to the real or the simulated node of a fault scenario.
#[derive(Clone)]
enum FaultConn {
    Real(node::Conn),
    Sim(SimConnection),
}

impl FaultConn {
    async fn call(self, call: Call) -> Result<Value, NodeError> {
        match self {
            FaultConn::Real(conn) => node::call_on(conn, &call).await,
            FaultConn::Sim(conn) => conn.call(&call).await,
        }
    }
}

fn command(args: &[&str]) -> Call {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    Call::Command(cmd)
}

async fn real_conn(url: String) -> FaultConn {
    let client = redis::Client::open(url).expect("a client");
    // As the engine's connections: no response timeout of redis-rs's own (its default
    // would fail a held-back request after 500 ms, which no simulated fault does).
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a connection");
    FaultConn::Real(node::Conn::standalone_redis(conn))
}

impl Fault {
    /// A connection (through the proxy, for the real node).
    async fn connect(&self) -> FaultConn {
        match self {
            Fault::Real { proxy, .. } => real_conn(proxy.url()).await,
            Fault::Sim(node) => FaultConn::Sim(node.connect()),
        }
    }

    /// `GET key` on a fresh connection that no fault touches.
    async fn peek(&self, key: &str) -> Outcome {
        let conn = match self {
            Fault::Real { cluster, .. } => real_conn(cluster.url(0)).await,
            Fault::Sim(node) => FaultConn::Sim(node.connect()),
        };
        within(&mut send(&conn, command(&["GET", key])), WAIT).await
    }

    fn pause(&self, on: bool) {
        match self {
            Fault::Real { cluster, .. } if on => cluster.pause(0).expect("paused"),
            Fault::Real { cluster, .. } => cluster.resume(0).expect("resumed"),
            Fault::Sim(node) if on => node.pause(),
            Fault::Sim(node) => node.resume(),
        }
    }

    fn partition(&self, on: bool) {
        match self {
            Fault::Real { proxy, .. } if on => proxy.blackhole(),
            Fault::Real { proxy, .. } => proxy.heal(),
            Fault::Sim(node) => node.partition(on),
        }
    }

    async fn restart_empty(&self) {
        match self {
            Fault::Real { cluster, .. } => cluster.restart(0).await.expect("restarted"),
            Fault::Sim(node) => node.restart_empty(),
        }
    }
}

/// A call running in a task of its own; `None` once its answer was read.
struct Sent(Option<JoinHandle<Result<Value, NodeError>>>);

/// Sends `call` on `conn` in a task of its own.
fn send(conn: &FaultConn, call: Call) -> Sent {
    Sent(Some(tokio::spawn(conn.clone().call(call))))
}

/// The answer to `sent` if it comes within `window` (the task is kept otherwise).
async fn within(sent: &mut Sent, window: Duration) -> Outcome {
    let Some(handle) = sent.0.as_mut() else {
        return Outcome::AnsweredBefore;
    };
    let Ok(joined) = tokio::time::timeout(window, handle).await else {
        return Outcome::Pending;
    };
    sent.0 = None;
    match joined.expect("the call's task") {
        Ok(value) => Outcome::Reply(value),
        Err(NodeError::Redis(e)) if e.code().is_some() => {
            Outcome::Error(e.code().unwrap_or_default().to_owned())
        }
        Err(e) if e.is_unresponsive() => Outcome::Unreachable,
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

async fn paused(fault: Fault) -> Vec<Outcome> {
    let conn = fault.connect().await;
    let mut out = vec![within(&mut send(&conn, command(&["PING"])), WAIT).await];
    fault.pause(true);
    let mut set = send(&conn, command(&["SET", "k", "t", "NX", "PX", "60000"]));
    let mut append = send(&conn, command(&["APPEND", "k", "+"]));
    out.push(within(&mut set, WINDOW).await);
    fault.pause(false);
    out.push(within(&mut set, WAIT).await);
    out.push(within(&mut append, WAIT).await);
    out.push(fault.peek("k").await);
    out
}

async fn partitioned(fault: Fault) -> Vec<Outcome> {
    let conn = fault.connect().await;
    let idle = fault.connect().await;
    let mut out = vec![within(&mut send(&conn, command(&["GET", "k"])), WAIT).await];
    fault.partition(true);
    let mut lost = send(&conn, command(&["SET", "k", "t"]));
    out.push(within(&mut lost, WINDOW).await);
    fault.partition(false);
    out.push(within(&mut lost, WINDOW).await);
    out.push(fault.peek("k").await);
    let mut after = send(&conn, command(&["SET", "k", "later"]));
    out.push(within(&mut after, WINDOW).await);
    out.push(fault.peek("k").await);
    out.push(within(&mut send(&idle, command(&["PING"])), WAIT).await);
    let fresh = fault.connect().await;
    out.push(within(&mut send(&fresh, command(&["PING"])), WAIT).await);
    out
}

async fn restarted(fault: Fault) -> Vec<Outcome> {
    let conn = fault.connect().await;
    let set = command(&["SET", "k", "t", "PX", "60000"]);
    let mut out = vec![within(&mut send(&conn, set), WAIT).await];
    fault.restart_empty().await;
    out.push(within(&mut send(&conn, command(&["GET", "k"])), WAIT).await);
    let fresh = fault.connect().await;
    out.push(within(&mut send(&fresh, command(&["GET", "k"])), WAIT).await);
    out
}

/// Runs `scenario` on a real node behind a proxy and on a simulated one (paused time).
fn check<F, Fut>(scenario: F)
where
    F: Fn(Fault) -> Fut,
    Fut: Future<Output = Vec<Outcome>>,
{
    let real = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let cluster = LocalCluster::start(1).await.expect("a redis-server");
            let proxy = FaultProxy::start(cluster.addr(0)).await.expect("a proxy");
            scenario(Fault::Real { cluster, proxy }).await
        });
    let sim = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused runtime")
        .block_on(scenario(Fault::Sim(SimNode::new())));
    assert_eq!(
        real, sim,
        "redis-server (left) and the simulated node (right)"
    );
}

#[test]
fn a_pause_queues_requests_and_applies_them_in_order() {
    check(paused);
}

#[test]
fn a_partition_loses_requests_and_silences_their_connection() {
    check(partitioned);
}

#[test]
fn a_restart_breaks_connections_and_loses_data() {
    check(restarted);
}
