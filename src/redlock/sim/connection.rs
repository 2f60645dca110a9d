//! One connection to a simulated node: one socket, so requests are applied in the order
//! they were sent.
//!
//! A request is handed to the connection's task when its call is first polled, and is on
//! the wire once that task takes it (the next time it runs). A call dropped before that is
//! never sent, as redis-rs's multiplexed connection skips a queued request whose caller
//! went away; from then on it is applied (after its delay, and after a pause ends) even if
//! the caller stops waiting, as a request written to a real socket is. Replies come back
//! in order too. A restart of the node breaks the connection: requests not applied yet
//! fail with a reset, later calls fail at once. A reply lost to a partition or to dropped
//! replies never comes, even after a restart (it was lost on the network).
//!
//! A connection that lost a request or a reply to a partition stays silent after the
//! partition heals (its later requests are lost too), as a TCP stream that can no longer
//! make progress, and as the test kit's `FaultProxy` leaves it: a client never reads a
//! reply meant for another request, and must time out and reconnect. One that stayed idle
//! through the partition works on. (Dropped replies, a fault of their own, leave the
//! connection working: each reply here is matched to its request.)

use std::collections::VecDeque;
use std::future::pending;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{RedisError, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use super::SimNode;
use super::commands;
use crate::redlock::node::{Call, NodeError};

/// A connection to a [`SimNode`]. Clones share the socket.
#[derive(Clone)]
pub(crate) struct SimConnection {
    node: SimNode,
    /// The node's process this connection was made to.
    epoch: u64,
    /// The connection's task; `None` when the connection failed to open.
    requests: Option<mpsc::UnboundedSender<Request>>,
    /// It lost a request or a reply to a partition: nothing gets through any more.
    silent: Arc<AtomicBool>,
}

struct Request {
    args: Vec<Vec<u8>>,
    /// When it reaches the node.
    arrival: Instant,
    /// How long its reply takes back.
    back: Duration,
    /// `None` for a request sent without waiting for its reply.
    reply: Option<oneshot::Sender<Delivery>>,
}

enum Delivery {
    /// The reply, arriving at the given instant.
    At(Instant, Value),
    /// The reply never comes.
    Lost,
}

fn io_error(kind: io::ErrorKind, message: &'static str) -> NodeError {
    NodeError::Redis(RedisError::from(io::Error::new(kind, message)))
}

impl SimConnection {
    /// A connection to `node`'s process `epoch`, open when `reachable` and a Tokio runtime
    /// can run its task.
    pub(super) fn open(node: SimNode, epoch: u64, reachable: bool) -> SimConnection {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let silent = Arc::new(AtomicBool::new(false));
        let requests = runtime.filter(|_| reachable).map(|runtime| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = serve(node.clone(), epoch, silent.clone(), rx);
            drop(runtime.spawn(task));
            tx
        });
        SimConnection {
            node,
            epoch,
            requests,
            silent,
        }
    }

    /// Whether the connection is unusable: it failed to open, or the node restarted since.
    pub(crate) fn is_broken(&self) -> bool {
        match &self.requests {
            None => true,
            Some(tx) => tx.is_closed() || self.node.epoch() != self.epoch,
        }
    }

    fn broken_error(&self) -> NodeError {
        match self.requests {
            None => io_error(
                io::ErrorKind::ConnectionRefused,
                "simulated node: connection failed",
            ),
            Some(_) => io_error(
                io::ErrorKind::ConnectionReset,
                "simulated node: connection reset",
            ),
        }
    }

    /// Sends `call` and waits for its reply: a server error reply is an error, as on a
    /// real connection. A request sent without waiting for its reply (`set_no_response`)
    /// is answered `Nil` once it is on the wire. Not bounded: callers bound it (a lost
    /// reply never comes).
    pub(crate) async fn call(&self, call: &Call) -> Result<Value, NodeError> {
        let (args, answered) = commands::decode(call);
        let requests = match &self.requests {
            Some(requests) if !self.is_broken() => requests,
            _ => return Err(self.broken_error()),
        };
        let (there, back) = self.node.state().faults.sample();
        let (tx, rx) = oneshot::channel();
        let request = Request {
            args,
            arrival: Instant::now() + there,
            back,
            reply: answered.then_some(tx),
        };
        if requests.send(request).is_err() {
            return Err(self.broken_error());
        }
        if !answered {
            return Ok(Value::Nil);
        }
        match rx.await {
            Err(_) => Err(self.broken_error()),
            Ok(Delivery::Lost) => pending().await,
            Ok(Delivery::At(at, value)) => {
                sleep_until(at).await;
                if self.node.state().faults.partitioned {
                    self.silent.store(true, Ordering::Relaxed);
                    return pending().await;
                }
                value.extract_error().map_err(NodeError::Redis)
            }
        }
    }

    /// A subscription to `channel` on the node: it hears every `PUBLISH` to it (a release
    /// of a marked key). It ends (the receiver sees the channel closed) when the node
    /// restarts; on a broken connection it is closed from the start.
    // Wake-on-release does not use it yet (waiters on simulated nodes poll).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn subscribe(&self, channel: &str) -> broadcast::Receiver<()> {
        if self.is_broken() {
            return broadcast::channel(1).1;
        }
        self.node.state().store.subscribe(channel.as_bytes())
    }
}

/// The connection's task: puts requests on the wire, applies them in order and sends
/// their replies.
async fn serve(
    node: SimNode,
    epoch: u64,
    silent: Arc<AtomicBool>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut changes = node.inner.changes.subscribe();
    let mut last_reply = Instant::now();
    let mut wire = VecDeque::new();
    let mut open = true;
    loop {
        while let Ok(request) = requests.try_recv() {
            put_on_wire(&mut wire, request);
        }
        let Some(arrival) = wire.front().map(|r: &Request| r.arrival) else {
            match requests.recv().await {
                Some(request) => put_on_wire(&mut wire, request),
                None => return,
            }
            continue;
        };
        tokio::select! {
            biased;
            ready = wait_to_apply(&node, epoch, &mut changes, arrival) => {
                // Broken: dropping the wire and the queue fails every request in them.
                let (true, Some(request)) = (ready, wire.pop_front()) else { return };
                apply(&node, &silent, &mut last_reply, request);
            }
            request = requests.recv(), if open => match request {
                Some(request) => put_on_wire(&mut wire, request),
                None => open = false,
            },
        }
    }
}

/// Writes `request` to the socket, unless its caller already left: redis-rs's connection
/// skips those too, so a call dropped before the connection's task took it is never sent.
fn put_on_wire(wire: &mut VecDeque<Request>, request: Request) {
    if !request
        .reply
        .as_ref()
        .is_some_and(oneshot::Sender::is_closed)
    {
        wire.push_back(request);
    }
}

/// Applies `request` on the node (unless a partition loses it) and sends its reply.
fn apply(node: &SimNode, silent: &AtomicBool, last_reply: &mut Instant, request: Request) {
    let delivery = {
        let mut state = node.state();
        let now = Instant::now();
        if state.faults.partitioned || silent.load(Ordering::Relaxed) {
            silent.store(true, Ordering::Relaxed);
            Delivery::Lost
        } else {
            let value = commands::execute(&mut state.store, &request.args, now);
            if state.faults.drop_replies {
                Delivery::Lost
            } else {
                *last_reply = (*last_reply).max(now + request.back);
                Delivery::At(*last_reply, value)
            }
        }
    };
    if let Some(reply) = request.reply {
        let _ = reply.send(delivery);
    }
}

/// Waits until a request that reaches the node at `arrival` is applied: then, if the node
/// is not paused. `false` when the node restarted meanwhile.
async fn wait_to_apply(
    node: &SimNode,
    epoch: u64,
    changes: &mut watch::Receiver<u64>,
    arrival: Instant,
) -> bool {
    loop {
        changes.borrow_and_update();
        let paused = {
            let state = node.state();
            if state.epoch != epoch {
                return false;
            }
            state.faults.paused
        };
        let now = Instant::now();
        if now >= arrival && !paused {
            return true;
        }
        if now < arrival {
            tokio::select! {
                biased;
                _ = sleep_until(arrival) => {}
                changed = changes.changed() => if changed.is_err() { return false },
            }
        } else if changes.changed().await.is_err() {
            return false;
        }
    }
}
