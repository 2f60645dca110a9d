//! A Sentinel-managed primary as ONE node (one vote): found through the Sentinels, followed across failovers.
//!
//! Not implemented yet: [`SentinelLink::new`] refuses every URL, so the rest of the engine
//! never meets one.

use std::convert::Infallible;
use std::time::Duration;

use redis::{ErrorKind, RedisError, Value};

use super::call::Call;
use super::error::NodeError;
use super::transport::{Connection, Transport};

/// The node's connections.
pub(crate) struct SentinelLink {
    never: Infallible,
}

/// A handle on one of the node's connections.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    never: Infallible,
}

impl SentinelLink {
    /// The node's link, without connecting.
    pub(crate) fn new(
        _sentinels: &[redis::ConnectionInfo],
        _master: &str,
        _primary: &redis::ConnectionInfo,
        _timeout: Duration,
        _tls_root: Option<&[u8]>,
    ) -> Result<SentinelLink, RedisError> {
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

impl Transport for SentinelLink {
    type Conn = SentinelConn;

    async fn connection(&self, _call: &Call) -> Result<SentinelConn, NodeError> {
        match self.never {}
    }

    fn current(&self, _call: &Call) -> Option<SentinelConn> {
        match self.never {}
    }

    async fn warm_up(&self) {
        match self.never {}
    }

    fn is_current(&self, _conn: &SentinelConn) -> bool {
        match self.never {}
    }
}

impl Connection for SentinelConn {
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
