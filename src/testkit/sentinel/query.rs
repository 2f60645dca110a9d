//! Bounded questions to the group's servers.

use std::{net::SocketAddr, time::Duration};

use redis::Value;

use super::ASK;

/// Polls `check` every 50 ms until it holds: at most 1 000 times and within `deadline`.
pub(super) async fn wait_for<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    for _ in 0..1_000 {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Sends `cmd` to the server at `addr` on a fresh connection, bounded by [`ASK`]; `None`
/// on any failure or error reply.
pub(super) async fn ask(addr: SocketAddr, cmd: &redis::Cmd) -> Option<Value> {
    let run = async {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ASK))
            .set_response_timeout(Some(ASK));
        let client = redis::Client::open(format!("redis://{addr}")).ok()?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .ok()?;
        cmd.query_async::<Value>(&mut conn).await.ok()
    };
    tokio::time::timeout(2 * ASK, run).await.ok().flatten()
}

/// Field `name` of `INFO replication` on the server at `addr`, as a number.
pub(super) async fn offset(addr: SocketAddr, name: &str) -> Option<u64> {
    let text = info(addr, "replication").await?;
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}

/// `INFO section` of the server at `addr`.
pub(super) async fn info(addr: SocketAddr, section: &str) -> Option<String> {
    match ask(addr, redis::cmd("INFO").arg(section)).await? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// Whether `INFO section` of the server at `addr` holds the line `line`.
pub(super) async fn info_says(addr: SocketAddr, section: &str, line: &str) -> bool {
    info(addr, section)
        .await
        .is_some_and(|text| text.lines().any(|l| l.trim() == line))
}

/// Whether the server at `addr` says `ROLE` `master`.
pub(super) async fn is_master(addr: SocketAddr) -> bool {
    match ask(addr, &redis::cmd("ROLE")).await {
        Some(Value::Array(parts)) => {
            matches!(parts.first(), Some(Value::BulkString(role)) if role == b"master")
        }
        _ => false,
    }
}

/// Field `name` of a Sentinel instance reply (a flat key/value array, or a map).
pub(super) fn field(instance: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match instance {
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| pair.get(1).and_then(text)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}
