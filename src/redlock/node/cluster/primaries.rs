//! A cluster node's current primaries, as shown by health: looked up with `CLUSTER SLOTS`
//! in the background and kept for the next report.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

/// The last primaries seen, and whether a look-up is under way.
#[derive(Default)]
pub(super) struct Primaries {
    last: Mutex<Option<String>>,
    looking: AtomicBool,
}

impl Primaries {
    /// The primaries last seen, `host:port` in slot order, comma-separated.
    pub(super) fn get(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Looks the primaries up again in the background (one look-up at a time, bounded by
    /// `timeout`); nothing without a runtime.
    pub(super) fn refresh(
        self: &std::sync::Arc<Self>,
        mut conn: ClusterConnection,
        timeout: Duration,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        drop(runtime.spawn(async move {
            let mut slots = redis::cmd("CLUSTER");
            slots.arg("SLOTS");
            let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            let reply = tokio::time::timeout(timeout, conn.route_command(slots, random)).await;
            if let Ok(Ok(reply)) = reply
                && let Some(primaries) = summary(&reply)
            {
                *this.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(primaries);
            }
            this.looking.store(false, Ordering::Release);
        }));
    }
}

/// The primaries of a `CLUSTER SLOTS` reply, each once, in the order of their first slot.
fn summary(reply: &Value) -> Option<String> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut by_slot = BTreeMap::new();
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Array(primary))) = (range.first(), range.get(2))
        else {
            continue;
        };
        let (Some(host), Some(Value::Int(port))) = (primary.first().and_then(text), primary.get(1))
        else {
            continue;
        };
        by_slot.insert(*start, format!("{host}:{port}"));
    }
    let mut seen = Vec::new();
    for addr in by_slot.into_values() {
        if !seen.contains(&addr) {
            seen.push(addr);
        }
    }
    (!seen.is_empty()).then(|| seen.join(","))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn primaries_are_listed_once_in_slot_order() {
        let range = |start, end, host, port| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                primary(host, port),
                primary("10.0.0.9", 1),
            ])
        };
        let reply = Value::Array(vec![
            range(10923, 16383, "10.0.0.3", 7002),
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10000, "10.0.0.2", 7001),
            range(10001, 10922, "10.0.0.1", 7000),
        ]);
        assert_eq!(
            summary(&reply).as_deref(),
            Some("10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002")
        );
        assert_eq!(summary(&Value::Array(vec![])), None);
        assert_eq!(summary(&Value::Nil), None);
    }
}
