//! Finding a Sentinel master's primary: every Sentinel asked at once, the first answer
//! taken (the link then checks it with `ROLE` before sending anything else there).

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

    /// The primary's address, as the first Sentinel to answer gives it (all are asked at
    /// once, each bounded by the node timeout); the last failure when none knows it.
    pub(super) async fn primary(&self) -> Result<Address, NodeError> {
        let mut asks: FuturesUnordered<_> = self.infos.iter().map(|info| self.ask(info)).collect();
        let mut failure = NodeError::Reply("no Sentinel given");
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(address) => return Ok(address),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME master` on the Sentinel at `info`, bounded by the
    /// node timeout.
    async fn ask(&self, info: &ConnectionInfo) -> Result<Address, NodeError> {
        let ask = async {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(None);
            let mut conn = self
                .client(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let reply: Value = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master)
                .query_async(&mut conn)
                .await?;
            parse_address(&reply)
        };
        tokio::time::timeout(self.timeout, ask)
            .await
            .map_err(|_| NodeError::Timeout(self.timeout))?
    }
}

/// A `GET-MASTER-ADDR-BY-NAME` reply: `[host, port]`, or nil for a master it does not know.
fn parse_address(reply: &Value) -> Result<Address, NodeError> {
    let Value::Array(parts) = reply else {
        return Err(NodeError::Reply("the Sentinel does not know the master"));
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    match parts.as_slice() {
        [host, port] => {
            let host = text(host).filter(|h| !h.is_empty());
            let port = text(port).and_then(|p| p.parse().ok());
            match (host, port) {
                (Some(host), Some(port)) => Ok(Address { host, port }),
                _ => Err(NodeError::Reply(
                    "a Sentinel's address reply is not host, port",
                )),
            }
        }
        _ => Err(NodeError::Reply(
            "a Sentinel's address reply is not host, port",
        )),
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
    fn replies_are_read_into_addresses_and_roles() {
        let reply = Value::Array(vec![bulk("10.0.0.7"), bulk("6380")]);
        let address = parse_address(&reply).unwrap();
        assert_eq!(address.to_string(), "10.0.0.7:6380");
        assert!(parse_address(&Value::Nil).is_err());
        assert!(parse_address(&Value::Array(vec![bulk("h"), bulk("port")])).is_err());

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
