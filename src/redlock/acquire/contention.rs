//! Waiting for a held lock: marking it awaited (so its release wakes us) and asking how
//! long its holder has left.

use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;

use super::vote::bare_set;
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::scripts::MARK;
use crate::redlock::engine::Engine;
use crate::redlock::node::reply::{MarkReply, PttlReply};
use crate::redlock::node::{Call, Tally, broadcast};
use crate::redlock::shared::calls;

/// What marking the keys found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A quorum held the keys and marked them: their release will wake us.
    Held,
    /// The keys are free on a quorum of nodes: released before the mark, so no wake-up
    /// will follow; look again now.
    Free,
    /// Nodes failed or disagreed: the fallback timer decides.
    Unknown,
}

/// Marks the keys as awaited on every node, so that the holder's release publishes a
/// wake-up (an unmarked release publishes nothing). Called once subscribed, so a release
/// after the mark wakes us.
pub(crate) async fn mark_awaited(engine: &Arc<Engine>, keys: &Arc<LockKeys>) -> Mark {
    let nodes = engine.nodes();
    let mut fanout = broadcast(
        nodes,
        Call::script(&MARK, keys.len(), |cmd| {
            cmd.arg(keys.lock_keys());
        }),
    );
    // Yes: held and marked; no: free.
    let mut tally = Tally::new(nodes);
    let mark = loop {
        let Some((_, reply)) = fanout.next().await else {
            break Mark::Unknown;
        };
        match reply.and_then(|v| MarkReply::parse(&v)) {
            Ok(MarkReply::Marked) => tally.yes(),
            Ok(MarkReply::Free) => tally.no(),
            Err(_) => tally.failed(),
        }
        if tally.won() {
            break Mark::Held;
        }
        if tally.quorum_said_no() {
            break Mark::Free;
        }
        if tally.complete() {
            break Mark::Unknown;
        }
    };
    fanout.finish_in_background(nodes);
    mark
}

/// A writer got in or gave up: its write intent, if it left one, is deleted from every
/// node in the background (see `shared/`); nothing for other shapes.
pub(crate) fn withdraw_intent(engine: &Arc<Engine>, keys: &LockKeys) {
    if let Some(call) = calls::withdraw_intent(keys) {
        broadcast(engine.nodes(), call).finish_in_background(engine.nodes());
    }
}

/// Fills in the holder's remaining time of a contended error about to be returned, when
/// the attempts were bare `SET`s, unless the caller has its own estimate
/// (`skip_holder_ttl`: the error keeps this call's ttl).
pub(crate) async fn settle(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
    error: LockError,
) -> LockError {
    withdraw_intent(engine, keys);
    match error {
        LockError::Contended { .. }
            if bare_set(keys, options.fencing) && !options.skip_holder_ttl =>
        {
            LockError::Contended {
                retry_after: holder_pttl(engine, keys)
                    .await
                    .unwrap_or(options.ttl)
                    .max(Duration::from_millis(1)),
            }
        }
        other => other,
    }
}

/// The holder's remaining time on the (single) key: the longest `PTTL` among the first
/// quorum of nodes to answer (the holder's nodes are a quorum, so at least one of them is
/// among those). Zero when the key is gone there (released meanwhile); `None` when no
/// quorum answered within the node timeout.
async fn holder_pttl(engine: &Arc<Engine>, keys: &Arc<LockKeys>) -> Option<Duration> {
    let mut cmd = Cmd::with_capacity(2, 32 + keys.lock_keys()[0].len());
    cmd.arg("PTTL").arg(&keys.lock_keys()[0]);
    let nodes = engine.nodes();
    let mut fanout = broadcast(nodes, Call::Command(cmd));
    // Yes: answered.
    let (mut tally, mut longest) = (Tally::new(nodes), Duration::ZERO);
    while let Some((_, reply)) = fanout.next().await {
        if let Ok(pttl) = reply.and_then(|v| PttlReply::parse(&v)) {
            tally.yes();
            // Gone (released meanwhile), or without expiry (not ours to guess): zero.
            let left = match pttl {
                PttlReply::Left(ms) => ms,
                PttlReply::Missing | PttlReply::Persistent => 0,
            };
            longest = longest.max(Duration::from_millis(left));
            if tally.won() {
                return Some(longest);
            }
        }
    }
    None
}
