//! A Redis Cluster as ONE node (one vote): each call goes to the owner of its keys' slot.
//!
//! Not implemented yet: [`ClusterLink::new`] refuses every URL, so the rest of the engine
//! never meets one.

use std::convert::Infallible;
use std::time::Duration;

use redis::{ErrorKind, RedisError, Value};

use super::call::Call;
use super::error::NodeError;
use super::transport::{Connection, Transport};

/// The node's connections.
pub(crate) struct ClusterLink {
    never: Infallible,
}

/// A handle on one of the node's connections.
#[derive(Clone)]
pub(crate) struct ClusterConn {
    never: Infallible,
}

impl ClusterLink {
    /// The node's link, without connecting.
    pub(crate) fn new(
        _seeds: &[redis::ConnectionInfo],
        _timeout: Duration,
        _tls_root: Option<&[u8]>,
    ) -> Result<ClusterLink, RedisError> {
        Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "not supported yet",
        )))
    }

    /// The current primary (or primaries), as `host:port`, when known.
    pub(crate) fn primary(&self) -> Option<String> {
        match self.never {}
    }
}

impl Transport for ClusterLink {
    type Conn = ClusterConn;

    async fn connection(&self, _call: &Call) -> Result<ClusterConn, NodeError> {
        match self.never {}
    }

    fn current(&self, _call: &Call) -> Option<ClusterConn> {
        match self.never {}
    }

    async fn warm_up(&self) {
        match self.never {}
    }

    fn is_current(&self, _conn: &ClusterConn) -> bool {
        match self.never {}
    }
}

impl Connection for ClusterConn {
    async fn send(self, _call: &Call) -> Result<Value, NodeError> {
        match self.never {}
    }

    fn mark_broken(&self) {
        match self.never {}
    }

    fn is_broken(&self) -> bool {
        match self.never {}
    }
}
