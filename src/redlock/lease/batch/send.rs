//! One batch on the wire: per node, its leases grouped by connection lane (by hash slot on
//! a Redis Cluster node) into `EXTEND_MANY` calls of at most [`CHUNK`] leases, sent at once (one pipeline on each
//! lane's multiplexed connection) under one deadline; the replies tallied per lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rand::Rng;
use redis::Value;
use tokio::time::Instant;

use super::retry_pause;
use super::{Member, Outcome};
use crate::redlock::config::node_url::NodeKind;
use crate::redlock::core::scripts::EXTEND_MANY;
use crate::redlock::core::slot::slot;
use crate::redlock::core::validity;
use crate::redlock::lease::Leases;
use crate::redlock::node::reply::{ExtendManyReply, ExtendReply};
use crate::redlock::node::{Call, Fanout, NodeError, NodeSet, Tally, node_failed, warn_node};

/// Most leases in one `EXTEND_MANY` call: one call keeps Redis busy for a bounded time, and
/// other requests on the connection (acquisitions) can run between calls.
pub(crate) const CHUNK: usize = 1000;

/// Most leases on the wire at once, per engine: a batch's replies must come within one node
/// timeout, and a node's work grows with the leases sent (on a loaded 2-core machine ~35 µs
/// per lease: 13,000 leases at once overran a 500 ms node timeout). More due leases go in
/// several pipelines, one after the other.
pub(crate) const MOST_AT_ONCE: usize = 4 * CHUNK;

/// The `EXTEND_MANY` call for `leases`, each as (its lock keys, token, ttl in ms).
pub(crate) fn extend_many_call<'a>(leases: &[(&'a [String], &'a [u8], u64)]) -> Call {
    let key_count = leases.iter().map(|(keys, _, _)| keys.len()).sum();
    Call::script(&EXTEND_MANY, key_count, |cmd| {
        for (keys, _, _) in leases {
            cmd.arg(*keys);
        }
        cmd.arg(leases.len());
        for (keys, token, ttl_ms) in leases {
            cmd.arg(keys.len()).arg(*token).arg(*ttl_ms);
        }
    })
}

/// One call of a batch, and which members (indices into the batch) it carries, in order.
struct Chunk {
    call: Call,
    members: Vec<u32>,
}

/// What one node is sent: its chunks.
type Plan = Arc<[Chunk]>;

/// The members grouped by the lane of their first key on `node` (a lease's calls all go
/// down that lane), each group in calls of at most [`CHUNK`].
fn lanes(batch: &[Member], lane_of: impl Fn(&[u8]) -> usize) -> Vec<Vec<u32>> {
    let mut lanes: Vec<Vec<u32>> = Vec::new();
    for (index, member) in batch.iter().enumerate() {
        let lane = lane_of(member.core.claim.keys.lock_keys()[0].as_bytes());
        if lanes.len() <= lane {
            lanes.resize_with(lane + 1, Vec::new);
        }
        lanes[lane].push(u32::try_from(index).unwrap_or(u32::MAX));
    }
    lanes.retain(|lane| !lane.is_empty());
    lanes
}

/// The members grouped by the hash slot of their keys, for a Redis Cluster node: one call's
/// keys must share a slot there (a lease's keys always do: see `NodeSet::check_keys`).
/// Each group goes to its slot's primary, in calls of at most [`CHUNK`].
fn slots(batch: &[Member]) -> Vec<Vec<u32>> {
    let mut slots: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    for (index, member) in batch.iter().enumerate() {
        let key = member.core.claim.keys.lock_keys()[0].as_bytes();
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        slots.entry(slot(key)).or_default().push(index);
    }
    slots.into_values().collect()
}

fn plan(batch: &[Member], lanes: &[Vec<u32>]) -> Plan {
    lanes
        .iter()
        .flat_map(|lane| lane.chunks(CHUNK))
        .map(|members| {
            let leases: Vec<_> = members
                .iter()
                .map(|&index| {
                    let core = &batch[index as usize].core;
                    (
                        core.claim.keys.lock_keys(),
                        core.claim.token.as_bytes(),
                        validity::millis_ceil(core.ttl),
                    )
                })
                .collect();
            Chunk {
                call: extend_many_call(&leases),
                members: members.to_vec(),
            }
        })
        .collect()
}

/// One plan per node; nodes that group the leases alike (every node, with one connection
/// per node) share one.
fn plans(nodes: &NodeSet, batch: &[Member]) -> Vec<Plan> {
    let mut built: Vec<(Vec<Vec<u32>>, Plan)> = Vec::new();
    nodes
        .iter()
        .map(|node| {
            let lanes = match node.kind() {
                NodeKind::Cluster => slots(batch),
                _ => lanes(batch, |key| node.lane_of_key(key)),
            };
            if let Some((_, plan)) = built.iter().find(|(same, _)| *same == lanes) {
                return plan.clone();
            }
            let plan = plan(batch, &lanes);
            built.push((lanes, plan.clone()));
            plan
        })
        .collect()
}

/// One lease's votes so far (the one quorum tally), and whether it was settled.
#[derive(Clone, Copy)]
struct Votes {
    tally: Tally,
    decided: bool,
}

impl Votes {
    fn outcome(&self) -> Option<Outcome> {
        let tally = &self.tally;
        if tally.won() {
            Some(Outcome::Extended)
        } else if tally.refused() {
            Some(Outcome::Refused)
        } else if tally.lost() {
            Some(Outcome::Unavailable)
        } else {
            None
        }
    }
}

/// A node's replies: one per chunk of its plan, in order.
type NodeReplies = Vec<Result<Value, NodeError>>;

/// Sends the batch that started at `start` in pipelines of at most [`MOST_AT_ONCE`]
/// leases, one after the other and after the engine's other batches (each starts its node
/// deadline when it is sent, once the one before is decided).
pub(super) async fn extend_all(leases: Arc<Leases>, start: Instant, mut batch: Vec<Member>) {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MOST_AT_ONCE));
        let sending = leases.timers.sending.lock().await;
        extend(leases.nodes.clone(), start, batch).await;
        drop(sending);
        batch = rest;
    }
}

/// Sends one pipeline per node, settles each lease as soon as its outcome is known, and
/// leaves the late replies (with the members' turns) to the janitor.
async fn extend(nodes: Arc<NodeSet>, start: Instant, batch: Vec<Member>) {
    let plans = plans(&nodes, &batch);
    let mut fanout = Fanout::new(nodes.total(), nodes.timeout(), |index| {
        let (nodes, plan) = (nodes.clone(), plans[index].clone());
        async move {
            let node = &nodes[index];
            // Every call is queued on its lane's connection before any reply is awaited.
            let replies = join_all(plan.iter().map(|chunk| node.call(&chunk.call, None))).await;
            (index, Ok::<NodeReplies, NodeError>(replies))
        }
    });
    let empty = Votes {
        tally: Tally::new(&nodes),
        decided: false,
    };
    let mut votes = vec![empty; batch.len()];
    let mut open = batch.len();
    // One jitter for the whole batch: its leases are retried together.
    let jitter = rand::rng().random_range(1.0..1.5);
    let retry_at = |ttl: Duration| Instant::now() + retry_pause(ttl).mul_f64(jitter);
    while open > 0 {
        let Some((index, reply)) = fanout.next().await else {
            break;
        };
        let mut error = None;
        match reply {
            Ok(replies) => {
                for (chunk, reply) in plans[index].iter().zip(replies) {
                    let parsed =
                        reply.and_then(|v| ExtendManyReply::parse(&v, chunk.members.len()));
                    match parsed {
                        Ok(ExtendManyReply(replies)) => {
                            for (&member, reply) in chunk.members.iter().zip(replies) {
                                let votes = &mut votes[member as usize];
                                match reply {
                                    ExtendReply::Extended => votes.tally.yes(),
                                    ExtendReply::NotOwner => votes.tally.no(),
                                }
                            }
                        }
                        Err(e) => {
                            for &member in &chunk.members {
                                votes[member as usize].tally.failed();
                            }
                            error.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => {
                for votes in &mut votes {
                    votes.tally.failed();
                }
                error = Some(e);
            }
        }
        if let Some(error) = error {
            warn_node(&nodes, index, "extend", &error);
        }
        for (member, votes) in batch.iter().zip(&mut votes) {
            if votes.decided {
                continue;
            }
            if let Some(outcome) = votes.outcome() {
                votes.decided = true;
                open -= 1;
                super::settle(&member.core, outcome, start, retry_at(member.core.ttl));
            }
        }
    }
    // Each member keeps its turn until every node's reply is in or timed out: the next
    // extension of the lease is queued after all of this batch's requests.
    let turns: Vec<_> = batch.into_iter().map(|member| member.turn).collect();
    let engine = nodes.clone();
    let rest = fanout.drain(&nodes, move |(index, reply)| {
        let failed = match reply {
            Ok(replies) => replies.into_iter().find_map(Result::err),
            Err(e) => Some(e),
        };
        if let Some(error) = failed {
            node_failed(&engine, index, &error);
        }
    });
    if let Some(rest) = rest {
        nodes.janitor.run(async move {
            rest.await;
            drop(turns);
        });
    }
}
