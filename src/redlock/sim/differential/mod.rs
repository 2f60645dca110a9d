//! Differential tests: one scenario runs against a real `redis-server` (a [`LocalCluster`]
//! node, through the engine's own [`node::call_on`], so the scripts run as the engine runs
//! them: `EVALSHA`, then `EVAL` on `NOSCRIPT`) and against a [`SimNode`] under paused time,
//! and every step must give the same reply.
//!
//! Replies that carry a remaining time (`PTTL`, a refused acquire's `{0, pttl}`) cannot be
//! equal to the millisecond (real time passes between steps): they are compared within
//! [`TTL_TOLERANCE`], and scenarios use expiries far enough apart that a wrong one is
//! caught. Expiry is waited for as an event (polling `PTTL`, bounded), never a sleep.

mod extend_many;
mod faults;
mod suites;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{SimConnection, SimNode};
use crate::redlock::node::{self, Call, NodeError};
use crate::testkit::LocalCluster;

/// How far a real remaining time may lag the simulated one (real time passes between
/// steps; a loaded machine may stall a test for seconds).
const TTL_TOLERANCE: i64 = 25_000;
/// How far it may be ahead (the simulation's clock only moves while waiting for an
/// expiry, by as much as needed, and Redis rounds to whole milliseconds).
const TTL_AHEAD: i64 = 50;
/// Bound on every wait for a real reply or message.
const WAIT: Duration = Duration::from_secs(10);

/// One step of a scenario.
pub(super) enum Op {
    /// A request whose reply must be identical.
    Exact(&'static str, Call),
    /// A request whose reply is a remaining time, or ends with one.
    Ttl(&'static str, Call),
    /// How many wake-ups a channel got since it was last looked at.
    Published(&'static str),
    /// Waits until a key has expired.
    Expired(&'static str),
}

impl Op {
    fn label(&self) -> &'static str {
        match self {
            Op::Exact(label, _) | Op::Ttl(label, _) => label,
            Op::Published(channel) | Op::Expired(channel) => channel,
        }
    }
}

/// What a step gave.
#[derive(Debug, PartialEq)]
enum Outcome {
    Reply(Value),
    /// An error reply, by its code (messages differ: Redis adds the script's line).
    Error(String),
    Published(usize),
    Expired(bool),
}

enum Target {
    Real {
        conn: node::Conn,
        messages: redis::aio::PubSubStream,
        unread: HashMap<String, usize>,
    },
    Sim {
        conn: SimConnection,
        subscriptions: HashMap<String, broadcast::Receiver<()>>,
    },
}

/// A message to each channel, published after a step, so that the messages before it can
/// be counted (pub/sub keeps their order).
const PROBE: &str = "probe";

impl Target {
    async fn call(&mut self, label: &str, call: &Call) -> Outcome {
        let reply = match self {
            Target::Real { conn, .. } => {
                tokio::time::timeout(WAIT, node::call_on(conn.clone(), call))
                    .await
                    .unwrap_or(Err(NodeError::Timeout(WAIT)))
            }
            Target::Sim { conn, .. } => conn.call(call).await,
        };
        match reply {
            Ok(value) => Outcome::Reply(value),
            Err(NodeError::Redis(e)) if e.code().is_some() => {
                Outcome::Error(e.code().unwrap_or_default().to_owned())
            }
            Err(e) => panic!("{label}: no reply: {e}"),
        }
    }

    async fn published(&mut self, channel: &str) -> usize {
        let mut probe = redis::cmd("PUBLISH");
        probe.arg(channel).arg(PROBE);
        let told = self.call(channel, &Call::Command(probe)).await;
        assert_eq!(
            told,
            Outcome::Reply(Value::Int(1)),
            "{channel}: not subscribed"
        );
        match self {
            Target::Real {
                messages, unread, ..
            } => {
                let deadline = Instant::now() + WAIT;
                loop {
                    let next = tokio::time::timeout_at(deadline, messages.next()).await;
                    let message = next.ok().flatten().expect("the probe message");
                    let name = message.get_channel_name().to_owned();
                    if name == channel && message.get_payload_bytes() == PROBE.as_bytes() {
                        return unread.remove(channel).unwrap_or(0);
                    }
                    *unread.entry(name).or_default() += 1;
                }
            }
            Target::Sim { subscriptions, .. } => {
                let receiver = subscriptions.get_mut(channel).expect("subscribed");
                let mut received = 0;
                while receiver.try_recv().is_ok() {
                    received += 1;
                }
                received - 1
            }
        }
    }

    /// Waits (polling `PTTL`, at most 1,000 times and [`WAIT`]) until `key` expired.
    async fn expired(&mut self, key: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        for _ in 0..1_000 {
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(key);
            match self.call(key, &Call::Command(pttl)).await {
                Outcome::Reply(Value::Int(-2)) => return true,
                Outcome::Reply(Value::Int(ms)) if ms >= 0 && Instant::now() < deadline => {
                    let ms = u64::try_from(ms).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms + 1)).await;
                }
                _ => return false,
            }
        }
        false
    }
}

fn channels(ops: &[Op]) -> Vec<&'static str> {
    let mut channels: Vec<_> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Published(channel) => Some(*channel),
            _ => None,
        })
        .collect();
    channels.sort_unstable();
    channels.dedup();
    channels
}

async fn run(target: &mut Target, ops: &[Op]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(match op {
            Op::Exact(label, call) | Op::Ttl(label, call) => target.call(label, call).await,
            Op::Published(channel) => Outcome::Published(target.published(channel).await),
            Op::Expired(key) => Outcome::Expired(target.expired(key).await),
        });
    }
    outcomes
}

async fn on_redis(ops: &[Op]) -> Vec<Outcome> {
    let cluster = LocalCluster::start(1).await.expect("a redis-server");
    let client = redis::Client::open(cluster.url(0)).expect("a client");
    // As the engine's connections: no response timeout of redis-rs's own.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a connection");
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("a pub/sub connection");
    for channel in channels(ops) {
        pubsub.subscribe(channel).await.expect("subscribed");
    }
    let mut target = Target::Real {
        conn: node::Conn::standalone_redis(conn),
        messages: pubsub.into_on_message(),
        unread: HashMap::new(),
    };
    let outcomes = run(&mut target, ops).await;
    drop(cluster);
    outcomes
}

async fn on_sim(ops: &[Op]) -> Vec<Outcome> {
    let conn = SimNode::new().connect();
    let subscriptions = channels(ops)
        .into_iter()
        .map(|channel| (channel.to_owned(), conn.subscribe(channel)))
        .collect();
    run(
        &mut Target::Sim {
            conn,
            subscriptions,
        },
        ops,
    )
    .await
}

/// Whether a real remaining time `real` matches the simulated `sim`.
fn ttl_close(real: &Value, sim: &Value) -> bool {
    match (real, sim) {
        (Value::Int(real), Value::Int(sim)) if *sim > 0 => {
            (sim - TTL_TOLERANCE..=sim + TTL_AHEAD).contains(real) && *real > 0
        }
        (Value::Array(real), Value::Array(sim)) if real.len() == sim.len() && !sim.is_empty() => {
            let last = sim.len() - 1;
            real[..last] == sim[..last] && ttl_close(&real[last], &sim[last])
        }
        _ => real == sim,
    }
}

/// Runs `ops` on a real node and on a simulated one, and requires the same outcomes.
pub(super) fn check(ops: &[Op]) {
    let real = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(on_redis(ops));
    let sim = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused runtime")
        .block_on(on_sim(ops));
    for (i, ((op, real), sim)) in ops.iter().zip(&real).zip(&sim).enumerate() {
        let same = match (op, real, sim) {
            (Op::Ttl(..), Outcome::Reply(real), Outcome::Reply(sim)) => ttl_close(real, sim),
            _ => real == sim,
        };
        assert!(
            same,
            "step {i} ({}): redis-server gave {real:?}, the simulated node {sim:?}",
            op.label()
        );
    }
    assert_eq!(real.len(), sim.len());
}
