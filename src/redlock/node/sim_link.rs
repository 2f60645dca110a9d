//! The simulated transport: a node of [`sim`](crate::redlock::sim), in this process.
//!
//! One connection at a time, as the Redis transport's default lane: the current one is
//! used until it breaks (a restart of the node, a failed connect during a partition, a
//! probe that went unanswered), then the next call makes a new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::Value;

use super::call::Call;
use super::error::NodeError;
use super::transport::{Connection, Transport};
use crate::redlock::sim::{SimConnection, SimNode};

/// A [`SimNode`] as a transport.
pub(crate) struct SimLink {
    node: SimNode,
    current: Mutex<Option<SimConn>>,
}

/// A handle on one [`SimConnection`], with the flag a probe sets when it went unanswered.
#[derive(Clone)]
pub(crate) struct SimConn {
    conn: SimConnection,
    broken: Arc<AtomicBool>,
}

impl SimLink {
    pub(crate) fn new(node: SimNode) -> SimLink {
        SimLink {
            node,
            current: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<SimConn>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for SimLink {
    type Conn = SimConn;

    async fn connection(&self, _call: &Call) -> Result<SimConn, NodeError> {
        let mut slot = self.slot();
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_broken()) {
            return Ok(conn.clone());
        }
        let conn = SimConn {
            conn: self.node.connect(),
            broken: Arc::new(AtomicBool::new(false)),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn current(&self, _call: &Call) -> Option<SimConn> {
        self.slot().clone()
    }

    async fn warm_up(&self) {}

    fn is_current(&self, conn: &SimConn) -> bool {
        self.slot()
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(&current.broken, &conn.broken))
    }
}

impl Connection for SimConn {
    async fn send(self, call: &Call) -> Result<Value, NodeError> {
        let reply = self.conn.call(call).await;
        if let Err(NodeError::Redis(e)) = &reply
            && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
        {
            self.mark_broken();
        }
        reply
    }

    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.conn.is_broken()
    }
}
