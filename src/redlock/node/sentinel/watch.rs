//! Early notice of a failover: a subscription to `+switch-master` on every Sentinel.
//!
//! Each Sentinel announces the switch once it learns of it (the leader first, the others
//! within seconds). Each notice for our master — and each time a subscription is made again
//! after a lost one, which may have missed a notice — bumps a counter; a primary found
//! before the bump is no longer used: the next call finds the primary again. So a link that
//! found the old primary through a Sentinel that had not heard yet looks again once that
//! one has. Without it a link follows a failover only once the old primary refuses a write
//! (`READONLY`, `MASTERDOWN`) or stops answering, and an old primary Sentinel demotes while
//! it is up keeps taking writes until Sentinel reconfigures it (seconds later).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::discover::Sentinels;

/// The channel Sentinels announce a new primary on.
const CHANNEL: &str = "+switch-master";

/// One watch task per Sentinel, for as long as they run (none outside a Tokio runtime);
/// each bumps `switches` on every notice for our master.
pub(super) fn spawn(sentinels: &Arc<Sentinels>, switches: &Arc<AtomicU64>) -> Vec<JoinHandle<()>> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Vec::new();
    };
    (0..sentinels.infos().len())
        .map(|index| runtime.spawn(watch(Arc::clone(sentinels), index, Arc::clone(switches))))
        .collect()
}

/// Subscribes on Sentinel `index` and reads its notices, subscribing again (after a pause)
/// whenever the connection is lost.
async fn watch(sentinels: Arc<Sentinels>, index: usize, switches: Arc<AtomicU64>) {
    let timeout = sentinels.timeout();
    let pause = timeout.max(Duration::from_millis(100));
    let info = &sentinels.infos()[index];
    let mut subscribed_before = false;
    loop {
        let subscribe = async {
            let mut pubsub = sentinels.client(info)?.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, subscribe).await {
            if subscribed_before {
                // A notice may have come while nobody listened here.
                switches.fetch_add(1, Ordering::AcqRel);
            }
            subscribed_before = true;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // "<master> <old ip> <old port> <new ip> <new port>"
                let payload = String::from_utf8_lossy(message.get_payload_bytes());
                if payload.split(' ').next() == Some(sentinels.master()) {
                    tracing::info!(
                        master = sentinels.master(),
                        sentinel = index,
                        "a Sentinel switched the primary"
                    );
                    switches.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}
