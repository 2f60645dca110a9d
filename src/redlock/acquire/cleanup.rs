//! Undoing what an acquisition attempt may have left on the nodes: the yeses of an attempt
//! that failed or was cancelled, and the late replies of one that succeeded.
//!
//! Every cleanup is a release of the attempt's own token (deleting only keys that still
//! hold it; nobody else can hold that token) sent on the very connection its `SET` went out
//! on, so that on the node it runs after that `SET`, even when the node's current
//! connection has been replaced since.
//!
//! A cleanup that must be sent is never a future the caller can drop: redis-rs's
//! multiplexed connection silently skips a queued request whose caller went away (and a
//! script's `EVAL` fallback after `NOSCRIPT` is only sent by a caller still waiting). What
//! is left to do when an attempt ends, however it ends, goes to the engine's
//! [janitor](crate::redlock::background::janitor).

use std::future::Future;
use std::sync::{Arc, Weak};

use super::vote::Vote;
use crate::redlock::lease::release;
use crate::redlock::lease::{Claim, LeaseCore, LeaseState};
use crate::redlock::node::{Call, Fanout, NodeSet, Reply, SentOn, node_failed};

/// The connection each node's acquire request went out on (`None`: not sent, or already
/// cleaned up).
pub(crate) type Sent = Arc<[SentOn]>;

/// Undoes a (possible) acquisition on node `index` in the background: the release goes out
/// on the connection the request used (taken out of `sent`: once is enough). Nothing sent,
/// nothing to undo.
fn undo(nodes: &Arc<NodeSet>, cleanup: &Arc<Call>, sent: &Sent, index: usize) {
    if let Some(chore) = undo_chore(nodes, cleanup, sent, index) {
        nodes.janitor.run(chore);
    }
}

/// The release of node `index` on the connection its request used, bounded by the node
/// timeout from when it is first polled (a chore may wait before it runs: its deadline must
/// not pass before the request is even handed to the connection, or the connection would
/// skip it); `None` when nothing was sent there (or it was cleaned up already).
fn undo_chore(
    nodes: &Arc<NodeSet>,
    cleanup: &Arc<Call>,
    sent: &Sent,
    index: usize,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let conn = sent[index]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    let (timeout, cleanup) = (nodes.timeout(), cleanup.clone());
    Some(async move {
        let _ = tokio::time::timeout(timeout, release::release_via(conn, cleanup)).await;
    })
}

/// Releases the nodes `yes` (which said yes to a failed attempt) on the connections their
/// requests used, and waits for their answers (bounded by the node timeout), so that a retry
/// does not find its own leftovers.
///
/// A node's entry in `sent` is cleared only once its release answered. A release that did
/// not (the caller's future was dropped meanwhile — a client disconnect, a timeout — or the
/// node timeout passed) is left to [`Pending`]'s drop, which sends it again from the janitor
/// on the same connection: a second release of our own token deletes nothing else.
///
/// Cost: the releases run in the caller's task, so the common case (every release answers)
/// costs no task, no channel and no extra request; only an unfinished one costs a second
/// release, sent from the background.
pub(crate) async fn release_now(nodes: &Arc<NodeSet>, claim: &Claim, sent: &Sent, yes: &[usize]) {
    if yes.is_empty() {
        return;
    }
    let cleanup = Arc::new(release::release_call(claim, false));
    let calls = yes.iter().filter_map(|&index| {
        let slot = &sent[index];
        let conn = slot.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let cleanup = cleanup.clone();
        Some(async move {
            release::release_via(conn, cleanup).await;
            // Answered (or its connection failed, which no resend on it would change).
            slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        })
    });
    let _ = tokio::time::timeout(nodes.timeout(), futures_util::future::join_all(calls)).await;
}

/// An attempt in progress. Until it is committed to a lease, dropping it (failure, or the
/// caller's future being dropped) releases every node in `yes` not cleaned up yet and keeps
/// reading the outstanding replies in the background to release late yeses too.
pub(crate) struct Pending<F: Future<Output = Reply<Vote>> + Send + 'static> {
    pub(crate) nodes: Arc<NodeSet>,
    pub(crate) claim: Arc<Claim>,
    pub(crate) fanout: Option<Fanout<F>>,
    pub(crate) sent: Sent,
    /// Nodes that said yes, or failed (their `SET` may have run or may still land).
    pub(crate) yes: Vec<usize>,
}

impl<F: Future<Output = Reply<Vote>> + Send + 'static> Drop for Pending<F> {
    fn drop(&mut self) {
        let Some(fanout) = self.fanout.take() else {
            return; // committed
        };
        let cleanup = Arc::new(release::release_call(&self.claim, false));
        for &index in &self.yes {
            undo(&self.nodes, &cleanup, &self.sent, index);
        }
        let (nodes, sent) = (self.nodes.clone(), self.sent.clone());
        let rest = fanout.drain(&self.nodes, move |(index, reply)| {
            if let Err(error) = &reply {
                node_failed(&nodes, index, error);
            }
            // A late yes, or a failure that may hide one: release that node too.
            if !matches!(reply, Ok(Vote::Held { .. })) {
                undo(&nodes, &cleanup, &sent, index);
            }
        });
        if let Some(rest) = rest {
            self.nodes.janitor.run(rest);
        }
    }
}

/// Reads, in the background, the replies still on their way when an attempt succeeded (a
/// request nobody waits for any more would not even be sent), so that those nodes take the
/// lease too: more room for node failures while it is held.
///
/// Such a node did not count in the quorum, but the lease may count it later (an extension
/// counts every node holding the token), so nothing is deleted there while the lease is
/// open. What could go wrong is the lease's own release overtaking a late `SET`:
/// - A late yes read while its connection is still the node's current one needs nothing:
///   the `SET` ran, and the lease's release goes out on that connection (behind the `SET`)
///   or, after it, on a newer one. Connections only move forward: one current when the `SET`
///   was sent and when its reply was read was current in between too.
/// - A late yes read after its connection was replaced (it broke, a probe timed out) may
///   come after the lease's release went out on the new one: if the lease was already
///   released, the node is released again on the old connection, behind the `SET`.
/// - A timeout or error (the `SET` may have run, or may still land) is released on the old
///   connection, behind the `SET`, once the lease is released (at once if it already is).
///
/// A lease handed on or carried over to a local waiter moved its token to the waiter's on
/// the nodes that held it; a `SET` landing later holds our old token, which nobody counts:
/// deleting it is safe too. A lease that is never released leaves such a key until its ttl.
pub(crate) fn finish_after_success<F>(
    nodes: &Arc<NodeSet>,
    fanout: Fanout<F>,
    claim: Arc<Claim>,
    sent: Sent,
    lease: Weak<LeaseCore>,
) where
    F: Future<Output = Reply<Vote>> + Send + 'static,
{
    let engine = nodes.clone();
    let mut cleanup: Option<Arc<Call>> = None;
    let rest = fanout.drain(nodes, move |(index, reply)| {
        let late_yes = match &reply {
            Ok(Vote::Held { .. }) => return,
            Ok(Vote::Yes { .. }) => {
                let slot = sent[index].lock().unwrap_or_else(|e| e.into_inner());
                if slot
                    .as_ref()
                    .is_some_and(|conn| engine[index].is_current(conn))
                {
                    return;
                }
                true
            }
            Err(error) => {
                node_failed(&engine, index, error);
                false
            }
        };
        let open = open(&lease);
        if late_yes && open.is_some() {
            // Not released yet: the `SET` ran, so whatever the lease sends comes after it.
            return;
        }
        let cleanup = cleanup.get_or_insert_with(|| Arc::new(release::release_call(&claim, false)));
        let Some(chore) = undo_chore(&engine, cleanup, &sent, index) else {
            return; // nothing was sent
        };
        engine.janitor.run(async move {
            if let Some(mut state) = open {
                // The `SET` may still land: undo it once the lease's own release went out.
                let _ = state.wait_for(|s| *s == LeaseState::Released).await;
            }
            chore.await;
        });
    });
    if let Some(rest) = rest {
        nodes.janitor.run(rest);
    }
}

/// A watch on the lease's state while it is not released; `None` once it is (or is gone).
fn open(lease: &Weak<LeaseCore>) -> Option<tokio::sync::watch::Receiver<LeaseState>> {
    let core = lease.upgrade()?;
    let state = core.subscribe();
    if *state.borrow() == LeaseState::Released {
        return None;
    }
    Some(state)
}
