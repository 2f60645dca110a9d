//! Early notice of a failover: a subscription to `+switch-master` on the Sentinels.
//!
//! Each notice for our master (and each time the subscription is made again after a lost
//! one, which may have missed a notice) bumps a counter; a primary found before the bump is
//! no longer used: the next call finds the primary again. Without it a link follows a
//! failover only once the old primary refuses a write (`READONLY`, `MASTERDOWN`) or stops
//! answering, and an old primary Sentinel demotes while it is up keeps taking writes for a
//! few seconds (until Sentinel reconfigures it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::discover::Sentinels;

/// The channel Sentinels announce a new primary on.
const CHANNEL: &str = "+switch-master";

/// Subscribes to `+switch-master` on one Sentinel after the other, for as long as the
/// returned task runs; bumps `switches` on each notice for our master.
pub(super) fn spawn(
    sentinels: Arc<Sentinels>,
    switches: Arc<AtomicU64>,
) -> Option<tokio::task::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(runtime.spawn(watch(sentinels, switches)))
}

async fn watch(sentinels: Arc<Sentinels>, switches: Arc<AtomicU64>) {
    let timeout = sentinels.timeout();
    let pause = timeout.max(Duration::from_millis(100));
    let mut subscribed_before = false;
    for sentinel in (0..sentinels.infos().len()).cycle() {
        let info = &sentinels.infos()[sentinel];
        let subscribe = async {
            let mut pubsub = sentinels.client(info)?.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, subscribe).await {
            if subscribed_before {
                // A notice may have come while nobody listened.
                switches.fetch_add(1, Ordering::AcqRel);
            }
            subscribed_before = true;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // "<master> <old ip> <old port> <new ip> <new port>"
                let payload = String::from_utf8_lossy(message.get_payload_bytes());
                if payload.split(' ').next() == Some(sentinels.master()) {
                    tracing::info!(master = sentinels.master(), "Sentinel switched the primary");
                    switches.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}
