//! [`Engine`]: the state every clone of a [`Redlock`](crate::Redlock) shares — wiring, no
//! logic beyond resolving a call's options.

use std::sync::Arc;

use crate::redlock::background::lifecycle::Lifecycle;
use crate::redlock::config::options::{LockOptions, Resolved};
use crate::redlock::config::settings::Settings;
use crate::redlock::core::error::LockError;
use crate::redlock::core::telemetry::KeyLabeler;
use crate::redlock::core::validity;
use crate::redlock::handover::LocalQueues;
use crate::redlock::lease::Leases;
use crate::redlock::node::NodeSet;
use crate::redlock::node::breaker::Breaker;

/// What every clone of a [`Redlock`](crate::Redlock) shares.
pub(crate) struct Engine {
    /// The leases, and through them the nodes, wake-ups and the lifecycle.
    pub(crate) leases: Arc<Leases>,
    pub(crate) settings: Settings,
    pub(crate) breaker: Breaker,
    /// This process's lines of waiters per key set; `None` with local hand-over off.
    pub(crate) queues: Option<Arc<LocalQueues>>,
    pub(crate) labeler: Option<KeyLabeler>,
    /// The `lock` metrics label when none is given.
    pub(crate) no_label: Arc<str>,
}

impl Engine {
    /// The nodes.
    pub(crate) fn nodes(&self) -> &Arc<NodeSet> {
        &self.leases.nodes
    }

    /// Whether the engine still takes locks, and its work under way.
    pub(crate) fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.leases.lifecycle
    }

    /// One call's options, with the engine's defaults filled in and checked.
    pub(crate) fn resolve(
        &self,
        options: &LockOptions,
        keys: &[String],
    ) -> Result<Resolved, LockError> {
        let c = &self.settings;
        let ttl = options.ttl.unwrap_or(c.ttl);
        validity::check_ttl(ttl, c.drift_factor).map_err(|reason| LockError::InvalidOptions {
            reason: format!("ttl of {ttl:?} {reason}"),
        })?;
        if c.node_timeout >= ttl {
            return Err(LockError::InvalidOptions {
                reason: format!(
                    "ttl of {ttl:?} is not larger than the node timeout of {:?}",
                    c.node_timeout
                ),
            });
        }
        let fencing = options.fencing.unwrap_or(c.fencing);
        if fencing {
            validity::check_fenced_timeout(ttl, c.drift_factor, c.node_timeout).map_err(
                |reason| LockError::InvalidOptions {
                    reason: format!("node timeout of {:?}: {reason}", c.node_timeout),
                },
            )?;
        }
        Ok(Resolved {
            ttl,
            drift: validity::drift(ttl, c.drift_factor),
            retry: options.retry.unwrap_or(c.retry),
            auto_extend: options.auto_extend.unwrap_or(true),
            max_hold: options.max_hold.or(c.max_hold),
            fencing,
            label: match (&options.label, &self.labeler) {
                (Some(label), _) => label.clone(),
                (None, Some(labeler)) => labeler(&keys.join(",")).into(),
                (None, None) => self.no_label.clone(),
            },
            skip_holder_ttl: options.skip_holder_ttl,
        })
    }
}
