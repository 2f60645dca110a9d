//! Finding the primary in the background: one lookup at a time, which outlives the calls
//! waiting for it.
//!
//! A call waits for the lookup only as long as its own node timeout allows; the lookup goes
//! on (each of its steps bounded by the node timeout: the Sentinels, the connection to the
//! primary, `ROLE`) and what it finds serves the next call. So a lookup that takes longer
//! than one node timeout (a slow network, TLS handshakes with every Sentinel) still ends in
//! a usable node, instead of being cut off and started over by every call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::ConnectionInfo;
use tokio::sync::watch;

use super::discover::{Sentinels, is_master};
use super::{ONE_LANE, Primary};
use crate::redlock::node::call::Call;
use crate::redlock::node::error::NodeError;
use crate::redlock::node::redis::RedisLink;
use crate::redlock::node::transport::{Connection, Transport};

/// What the link and its lookups share.
pub(super) struct Shared {
    pub(super) sentinels: Arc<Sentinels>,
    /// The primary's credentials, database and TLS (its address is the Sentinels').
    template: ConnectionInfo,
    timeout: Duration,
    current: RwLock<Option<Arc<Primary>>>,
    /// Failovers announced by the Sentinels (see [`watch`](super::watch)).
    pub(super) switches: Arc<AtomicU64>,
    /// Each ended lookup, numbered, with its failure if it failed.
    ended: watch::Sender<Ended>,
}

/// The last lookup to end.
#[derive(Clone, Default)]
pub(super) struct Ended {
    round: u64,
    failure: Option<Arc<NodeError>>,
}

impl Shared {
    pub(super) fn new(sentinels: Sentinels, template: &ConnectionInfo, timeout: Duration) -> Self {
        Shared {
            sentinels: Arc::new(sentinels),
            template: template.clone(),
            timeout,
            current: RwLock::default(),
            switches: Arc::default(),
            ended: watch::Sender::new(Ended::default()),
        }
    }

    /// The primary last found, stale or not.
    pub(super) fn known(&self) -> Option<Arc<Primary>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The primary last found, unless it is stale.
    pub(super) fn trusted(&self) -> Option<Arc<Primary>> {
        self.known().filter(|primary| {
            !primary.stale.load(Ordering::Acquire)
                && primary.switches == self.switches.load(Ordering::Acquire)
        })
    }

    /// Notice of the lookups that end from now on.
    pub(super) fn watch_ended(&self) -> watch::Receiver<Ended> {
        self.ended.subscribe()
    }
}

impl Ended {
    /// Why the lookup failed (a copy), if it did.
    pub(super) fn failure(&self) -> Option<NodeError> {
        self.failure.as_deref().map(copy)
    }
}

/// Looks the primary up and, when it says `ROLE` `master`, makes it current; then tells
/// whoever waits.
pub(super) async fn find(shared: Arc<Shared>) {
    let failure = look_up(&shared).await.err();
    if let Some(failure) = &failure {
        tracing::debug!(
            master = shared.sentinels.master(),
            %failure,
            "no usable Sentinel primary yet"
        );
    }
    shared.ended.send_modify(|ended| {
        ended.round += 1;
        ended.failure = failure.map(Arc::new);
    });
}

async fn look_up(shared: &Shared) -> Result<(), NodeError> {
    let switches = shared.switches.load(Ordering::Acquire);
    let address = shared.sentinels.primary().await?;
    let link = match shared.known() {
        // Not moved: its connections are kept.
        Some(known) if known.address == address => Arc::clone(&known.link),
        _ => Arc::new(RedisLink::at(
            &address.info(&shared.template),
            shared.timeout,
            ONE_LANE,
            shared.sentinels.tls_root(),
        )?),
    };
    let primary = Arc::new(Primary {
        address,
        link,
        stale: AtomicBool::new(false),
        switches,
    });
    // On the connection lock calls will use (the only lane), ahead of them.
    let role = Call::Command(redis::cmd("ROLE"));
    let conn = bounded(shared.timeout, primary.link.connection(&role)).await?;
    let reply = bounded(shared.timeout, conn.send(&role)).await?;
    if !is_master(&reply) {
        return Err(NodeError::Reply(
            "the address the Sentinels gave is not a primary (a failover under way?)",
        ));
    }
    tracing::debug!(
        master = shared.sentinels.master(),
        primary = %primary.address,
        "Sentinel primary found"
    );
    *shared.current.write().unwrap_or_else(|e| e.into_inner()) = Some(primary);
    Ok(())
}

/// `step`, bounded by `timeout`.
async fn bounded<T>(
    timeout: Duration,
    step: impl Future<Output = Result<T, NodeError>>,
) -> Result<T, NodeError> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| NodeError::Timeout(timeout))?
}

/// A copy of `error` for each caller that waited for the lookup.
fn copy(error: &NodeError) -> NodeError {
    match error {
        NodeError::Timeout(after) => NodeError::Timeout(*after),
        NodeError::Redis(e) => NodeError::Redis(e.clone()),
        NodeError::Reply(why) => NodeError::Reply(why),
        _ => NodeError::Reply("the Sentinel primary could not be found"),
    }
}
