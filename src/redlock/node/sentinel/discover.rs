//! Finding a Sentinel master's primary: every Sentinel asked at once (`SENTINEL MASTER`),
//! the newest answer taken (the link then checks it with `ROLE` before sending anything
//! else there).
//!
//! Sentinels learn of a failover one after the other (the leader first, the others from its
//! hello messages, within seconds), and an old primary demoted while it is up still says
//! `master` until Sentinel reconfigures it. So the answers that come in within a short
//! window after the first are compared by their `config-epoch` (raised by each failover),
//! and the highest wins; a Sentinel that does not answer in that window does not hold the
//! call up.

use std::fmt;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError, Value};

use super::super::error::NodeError;
use super::super::redis::client_at;

/// Where a Sentinel says the primary is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Address {
    host: String,
    port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Address {
    /// The primary's connection info: `template`'s credentials, database and TLS at this
    /// address.
    pub(super) fn info(&self, template: &ConnectionInfo) -> ConnectionInfo {
        let addr = match template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(self.host.clone(), self.port),
        };
        template.clone().set_addr(addr)
    }
}

/// The Sentinels that monitor one master, and how to reach them.
pub(super) struct Sentinels {
    infos: Vec<ConnectionInfo>,
    master: String,
    timeout: Duration,
    tls_root: Option<Box<[u8]>>,
}

impl Sentinels {
    pub(super) fn new(
        infos: &[ConnectionInfo],
        master: &str,
        timeout: Duration,
        tls_root: Option<&[u8]>,
    ) -> Sentinels {
        Sentinels {
            infos: infos.to_vec(),
            master: master.to_owned(),
            timeout,
            tls_root: tls_root.map(Box::from),
        }
    }

    /// The master's name.
    pub(super) fn master(&self) -> &str {
        &self.master
    }

    /// The node timeout, which bounds each request to a Sentinel.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Sentinels' connection infos.
    pub(super) fn infos(&self) -> &[ConnectionInfo] {
        &self.infos
    }

    /// The trusted TLS root (PEM), if one was given.
    pub(super) fn tls_root(&self) -> Option<&[u8]> {
        self.tls_root.as_deref()
    }

    /// A client for Sentinel `info`.
    pub(super) fn client(&self, info: &ConnectionInfo) -> Result<redis::Client, RedisError> {
        client_at(info, self.tls_root.as_deref())
    }

    /// The primary's address: of the answers that come in by [`GRACE`] after the first
    /// (each Sentinel bounded by the node timeout), the one with the highest config epoch;
    /// the last failure when no Sentinel knows the master.
    pub(super) async fn primary(&self) -> Result<Address, NodeError> {
        let mut asks: FuturesUnordered<_> = self.infos.iter().map(|info| self.ask(info)).collect();
        let mut failure = NodeError::Reply("no Sentinel given");
        let mut newest: Option<Answer> = None;
        let mut window = None;
        loop {
            let next = match window {
                None => asks.next().await,
                Some(deadline) => match tokio::time::timeout_at(deadline, asks.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                None => break,
                Some(Ok(answer)) => {
                    window.get_or_insert_with(|| tokio::time::Instant::now() + self.grace());
                    if newest.as_ref().is_none_or(|n| answer.epoch > n.epoch) {
                        newest = Some(answer);
                    }
                }
                Some(Err(e)) => failure = e,
            }
        }
        newest.map(|answer| answer.address).ok_or(failure)
    }

    /// How long answers are still awaited after the first: a tenth of the node timeout,
    /// within 10..=100 ms.
    fn grace(&self) -> Duration {
        (self.timeout / 10).clamp(Duration::from_millis(10), GRACE)
    }

    /// `SENTINEL MASTER master` on the Sentinel at `info`, bounded by the node timeout.
    async fn ask(&self, info: &ConnectionInfo) -> Result<Answer, NodeError> {
        let ask = async {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(None);
            let mut conn = self
                .client(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let master = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(&self.master)
                .query_async::<Value>(&mut conn)
                .await;
            match master {
                Ok(reply) => parse_master(&reply),
                // A Sentinel user allowed only the address (no epoch: the lowest).
                Err(e) if e.code() == Some("NOPERM") => {
                    let reply: Value = redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&self.master)
                        .query_async(&mut conn)
                        .await?;
                    parse_address(&reply).map(|address| Answer { address, epoch: 0 })
                }
                Err(e) => Err(e.into()),
            }
        };
        tokio::time::timeout(self.timeout, ask)
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
    }
}

/// The longest wait for more answers after the first.
const GRACE: Duration = Duration::from_millis(100);

/// One Sentinel's view of the master.
struct Answer {
    address: Address,
    /// The master's config epoch: raised by each failover.
    epoch: u64,
}

/// A `SENTINEL MASTER` reply: the master's fields as name, value pairs (an array in RESP2,
/// a map in RESP3); an error reply for a master the Sentinel does not monitor.
fn parse_master(reply: &Value) -> Result<Answer, NodeError> {
    let field = |name: &str| -> Option<String> {
        let text = |value: &Value| match value {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        };
        match reply {
            Value::Array(items) => items
                .chunks(2)
                .find(|pair| text(&pair[0]).as_deref() == Some(name))
                .and_then(|pair| pair.get(1).and_then(text)),
            Value::Map(pairs) => pairs
                .iter()
                .find(|(key, _)| text(key).as_deref() == Some(name))
                .and_then(|(_, value)| text(value)),
            _ => None,
        }
    };
    let host = field("ip").filter(|host| !host.is_empty());
    let port = field("port").and_then(|port| port.parse().ok());
    let epoch = field("config-epoch").and_then(|epoch| epoch.parse().ok());
    match (host, port) {
        (Some(host), Some(port)) => Ok(Answer {
            address: Address { host, port },
            epoch: epoch.unwrap_or(0),
        }),
        _ => Err(NodeError::Reply(
            "a Sentinel's SENTINEL MASTER reply has no ip and port",
        )),
    }
}

/// A `GET-MASTER-ADDR-BY-NAME` reply: `[host, port]`, or nil for a master it does not know.
fn parse_address(reply: &Value) -> Result<Address, NodeError> {
    let bad = NodeError::Reply("a Sentinel's address reply is not host, port");
    let Value::Array(parts) = reply else {
        return Err(bad);
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        _ => None,
    };
    match parts.as_slice() {
        [host, port] => match (text(host), text(port).and_then(|p| p.parse().ok())) {
            (Some(host), Some(port)) if !host.is_empty() => Ok(Address { host, port }),
            _ => Err(bad),
        },
        _ => Err(bad),
    }
}

/// Whether a `ROLE` reply says `master`.
pub(super) fn is_master(reply: &Value) -> bool {
    let Value::Array(parts) = reply else {
        return false;
    };
    match parts.first() {
        Some(Value::BulkString(role)) => role == b"master",
        Some(Value::SimpleString(role)) => role == "master",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn replies_are_read_into_addresses_epochs_and_roles() {
        let reply = Value::Array(
            [
                "name",
                "m",
                "ip",
                "10.0.0.7",
                "port",
                "6380",
                "config-epoch",
                "4",
            ]
            .into_iter()
            .map(bulk)
            .collect(),
        );
        let answer = parse_master(&reply).unwrap();
        assert_eq!(answer.address.to_string(), "10.0.0.7:6380");
        assert_eq!(answer.epoch, 4);
        assert!(parse_master(&Value::Nil).is_err());
        let no_port = Value::Array(["ip", "h", "port", "x"].into_iter().map(bulk).collect());
        assert!(parse_master(&no_port).is_err());
        let address = Value::Array(vec![bulk("10.0.0.8"), bulk("6381")]);
        assert_eq!(
            parse_address(&address).unwrap().to_string(),
            "10.0.0.8:6381"
        );
        assert!(parse_address(&Value::Nil).is_err());

        assert!(is_master(&Value::Array(vec![
            bulk("master"),
            Value::Int(0)
        ])));
        assert!(!is_master(&Value::Array(vec![bulk("slave"), bulk("h")])));
        assert!(!is_master(&Value::Nil));
    }

    #[test]
    fn the_primary_keeps_the_template_credentials_and_database() {
        use redis::IntoConnectionInfo;
        let template = "redis://app:pw@sentinel-primary/3"
            .into_connection_info()
            .unwrap();
        let address = Address {
            host: "127.0.0.1".into(),
            port: 7001,
        };
        let info = address.info(&template);
        assert_eq!(info.addr().to_string(), "127.0.0.1:7001");
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("pw"));
    }
}
