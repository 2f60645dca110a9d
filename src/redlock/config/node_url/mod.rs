//! Node URLs: parsed once, and never shown with their password.
//!
//! Every kind of node URL is listed on [`NodeUrl`].

use std::fmt;

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::redlock::core::error::ConfigError;

mod redact;
#[cfg(test)]
mod tests;

pub(crate) use self::redact::redact;

/// Longest node URL accepted, in bytes.
const MAX_URL_LEN: usize = 2048;

/// Most addresses one Cluster or Sentinel node URL may list.
const MAX_HOSTS: usize = 16;

/// What kind of Redis stands behind one node (one vote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeKind {
    /// One standalone primary (or a managed single endpoint), over TCP, TLS or a Unix socket.
    Standalone,
    /// A Redis Cluster: each lock's keys go to their slot's owner.
    Cluster,
    /// The primary of a Sentinel-managed master, followed across failovers.
    Sentinel,
    /// A node simulated in this process ([`RedlockBuilder::in_memory`](crate::RedlockBuilder::in_memory)).
    InMemory,
}

impl NodeKind {
    /// The kind's name in reports: `standalone`, `cluster`, `sentinel` or `in_memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Standalone => "standalone",
            NodeKind::Cluster => "cluster",
            NodeKind::Sentinel => "sentinel",
            NodeKind::InMemory => "in_memory",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a node's server is, by kind.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server.
    Standalone(ConnectionInfo),
    /// A Redis Cluster's seed addresses (with the data nodes' credentials and TLS).
    Cluster { seeds: Vec<ConnectionInfo> },
    /// A Sentinel-managed primary.
    Sentinel {
        /// The Sentinels' addresses (with their own credentials, if any).
        sentinels: Vec<ConnectionInfo>,
        /// The master name the Sentinels monitor.
        master: String,
        /// The primary's credentials, database and TLS, applied to the address the
        /// Sentinels report (its host and port are placeholders).
        primary: ConnectionInfo,
    },
}

/// A parsed node URL: one vote of the quorum.
///
/// A node is one vote of the quorum, whatever Redis stands behind it:
///
/// | URL | Node |
/// |---|---|
/// | `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (TLS) | one standalone primary (or a managed endpoint) |
/// | `redis+unix:///path/to/redis.sock[?db=N&user=U&pass=P]`, `unix:///…` | one standalone primary on a Unix socket |
/// | `redis+cluster://[user[:password]@]host:port[,host:port…]`, `rediss+cluster://…` | a Redis Cluster, given by seed addresses: ONE vote |
/// | `redis+sentinel://[user[:password]@]host:port[,host:port…]/master[/db][?sentinel_username=U&sentinel_password=P]`, `rediss+sentinel://…` | the primary of Sentinel master `master`, found through these Sentinels: ONE vote |
///
/// The user and password before `@` are the data nodes' (the cluster's nodes, the
/// Sentinel-managed primary); a Sentinel's own are given as `sentinel_username` and
/// `sentinel_password`. Every password (before `@`, or `pass=`/`password=`/
/// `sentinel_password=` in the query) is shown as `***`.
///
/// `Debug` and `Display` show the URL with any password replaced by `***`, so a `NodeUrl`
/// is safe to log.
///
/// ```
/// use tower_redlock::{NodeKind, NodeUrl};
///
/// let url = NodeUrl::parse("redis://app:s3cret@127.0.0.1:6379/2").unwrap();
/// assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/2");
/// assert!(!format!("{url:?}").contains("s3cret"));
///
/// let cluster = NodeUrl::parse("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7000").unwrap();
/// assert_eq!(cluster.kind(), NodeKind::Cluster);
/// assert_eq!(cluster.to_string(), "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7000");
///
/// let sentinel = NodeUrl::parse("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/orders").unwrap();
/// assert_eq!(sentinel.kind(), NodeKind::Sentinel);
/// ```
#[derive(Clone)]
pub struct NodeUrl {
    redacted: String,
    target: Target,
    in_memory: bool,
}

impl NodeUrl {
    /// Parses a node URL of any kind (see [`NodeUrl`]).
    pub fn parse(url: &str) -> Result<NodeUrl, ConfigError> {
        Self::parse_at(0, url)
    }

    pub(crate) fn parse_at(index: usize, url: &str) -> Result<NodeUrl, ConfigError> {
        let url = url.trim();
        let redacted = redact(url);
        let invalid = |reason: &str| ConfigError::InvalidNodeUrl {
            index,
            url: redacted.clone(),
            reason: reason.to_owned(),
        };
        if url.is_empty() {
            return Err(invalid("the URL is empty"));
        }
        if url.len() > MAX_URL_LEN {
            return Err(invalid("the URL is longer than 2048 bytes"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid(
                "expected redis://host:port (or rediss://, redis+unix://, redis+cluster://, \
                 redis+sentinel://)",
            ));
        };
        let (base, kind) = match scheme {
            "redis" | "rediss" => (scheme, NodeKind::Standalone),
            "redis+unix" | "unix" => ("unix", NodeKind::Standalone),
            "redis+cluster" => ("redis", NodeKind::Cluster),
            "rediss+cluster" => ("rediss", NodeKind::Cluster),
            "redis+sentinel" => ("redis", NodeKind::Sentinel),
            "rediss+sentinel" => ("rediss", NodeKind::Sentinel),
            _ => {
                return Err(invalid(
                    "the scheme must be redis://, rediss://, redis+unix://, unix://, \
                     redis+cluster://, rediss+cluster://, redis+sentinel:// or \
                     rediss+sentinel://",
                ));
            }
        };
        if base == "rediss" && !cfg!(feature = "tls") {
            return Err(invalid(
                "rediss:// (TLS) needs the `tls` feature of tower-redlock",
            ));
        }
        if base == "unix" && !cfg!(unix) {
            return Err(invalid("Unix sockets are not available on this platform"));
        }
        let parts = Parts::split(rest);
        let target = match kind {
            NodeKind::Standalone if base == "unix" => {
                if parts.path.trim_start_matches('/').is_empty() {
                    return Err(invalid("the URL has no socket path"));
                }
                Target::Standalone(info(url).map_err(|()| invalid(BAD_URL))?)
            }
            NodeKind::Standalone => {
                if parts.hosts.contains(',') {
                    return Err(invalid(
                        "a redis:// URL names one server; for a Redis Cluster use \
                         redis+cluster://host:port,host:port",
                    ));
                }
                let host = parts.hosts;
                if host.is_empty() || host.starts_with(':') {
                    return Err(invalid("the URL has no host"));
                }
                Target::Standalone(info(url).map_err(|()| invalid(BAD_URL))?)
            }
            NodeKind::Cluster => {
                if !parts.path.trim_matches('/').is_empty() && parts.path.trim_matches('/') != "0" {
                    return Err(invalid(
                        "a Redis Cluster has only database 0: leave the path out",
                    ));
                }
                if !parts.query.is_empty() {
                    return Err(invalid("a redis+cluster:// URL takes no query"));
                }
                let seeds = hosts(&parts, |host| format!("{base}://{}{host}", parts.auth))
                    .map_err(&invalid)?;
                Target::Cluster { seeds }
            }
            NodeKind::Sentinel | NodeKind::InMemory => {
                let mut path = parts.path.trim_matches('/').splitn(2, '/');
                let master = path.next().unwrap_or_default();
                if master.is_empty() || master.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(invalid(
                        "expected the Sentinel master name as the path: \
                         redis+sentinel://host:port,host:port/master",
                    ));
                }
                let db = path.next().unwrap_or("0");
                let (sentinel_auth, unknown) = sentinel_auth(parts.query);
                if let Some(unknown) = unknown {
                    return Err(invalid(unknown));
                }
                let sentinels = hosts(&parts, |host| format!("{base}://{sentinel_auth}{host}"))
                    .map_err(&invalid)?;
                let primary = info(&format!("{base}://{}sentinel-primary/{db}", parts.auth))
                    .map_err(|()| invalid("not a valid database number or password"))?;
                Target::Sentinel {
                    sentinels,
                    master: master.to_owned(),
                    primary,
                }
            }
        };
        Ok(NodeUrl {
            redacted,
            target,
            in_memory: false,
        })
    }

    /// The name of simulated node `index` (`in-memory://INDEX`): it connects nowhere.
    pub(crate) fn in_memory(index: usize) -> Result<NodeUrl, ConfigError> {
        let mut url = NodeUrl::parse_at(index, &format!("redis://in-memory-{index}"))?;
        url.redacted = format!("in-memory://{index}");
        url.in_memory = true;
        Ok(url)
    }

    /// What kind of Redis this node is.
    pub fn kind(&self) -> NodeKind {
        match &self.target {
            _ if self.in_memory => NodeKind::InMemory,
            Target::Standalone(_) => NodeKind::Standalone,
            Target::Cluster { .. } => NodeKind::Cluster,
            Target::Sentinel { .. } => NodeKind::Sentinel,
        }
    }

    /// Where the node's server (or servers) are.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Identifies the node's server(s), to detect a node given twice: address and
    /// database; for a Cluster its seeds, for Sentinel its master name and Sentinels.
    pub(crate) fn identity(&self) -> String {
        let addrs = |infos: &[ConnectionInfo]| {
            let mut addrs: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
            addrs.sort();
            addrs.join(",")
        };
        match &self.target {
            Target::Standalone(info) => {
                format!("{}/{}", info.addr(), info.redis_settings().db())
            }
            Target::Cluster { seeds } => format!("cluster:{}", addrs(seeds)),
            Target::Sentinel {
                sentinels, master, ..
            } => format!("sentinel:{master}@{}", addrs(sentinels)),
        }
    }
}

const BAD_URL: &str = "not a valid Redis URL (check host, port, database and percent-encoding)";

/// A URL's parts after `scheme://`.
struct Parts<'a> {
    /// `user:password@` (with the `@`), or empty.
    auth: &'a str,
    /// The host list: `host:port[,host:port…]`.
    hosts: &'a str,
    /// From the first `/` after the hosts, up to the query.
    path: &'a str,
    /// After `?`, up to `#`.
    query: &'a str,
}

impl<'a> Parts<'a> {
    fn split(rest: &'a str) -> Parts<'a> {
        let rest = rest.split('#').next().unwrap_or_default();
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, tail) = match before_query.rsplit_once('@') {
            Some((userinfo, tail)) => (&before_query[..=userinfo.len()], tail),
            None => ("", before_query),
        };
        let (hosts, path) = match tail.find('/') {
            Some(at) => tail.split_at(at),
            None => (tail, ""),
        };
        Parts {
            auth,
            hosts,
            path,
            query,
        }
    }
}

/// Parses `url` with redis-rs (whose error messages may quote it: they are not passed on).
fn info(url: &str) -> Result<ConnectionInfo, ()> {
    url.into_connection_info().map_err(|_| ())
}

/// Each address of a host list, as a connection info made by `url_of(host)`.
fn hosts(
    parts: &Parts<'_>,
    url_of: impl Fn(&str) -> String,
) -> Result<Vec<ConnectionInfo>, &'static str> {
    let hosts: Vec<&str> = parts.hosts.split(',').map(str::trim).collect();
    if hosts.len() > MAX_HOSTS {
        return Err("too many addresses: at most 16");
    }
    hosts
        .into_iter()
        .map(|host| {
            if host.is_empty() || host.starts_with(':') {
                return Err("an address in the host list is empty or has no host");
            }
            info(&url_of(host)).map_err(|()| "an address in the host list is not host:port")
        })
        .collect()
}

/// The Sentinels' own `user:password@` from the query (`sentinel_username`,
/// `sentinel_password`), and what is wrong with the query, if anything.
fn sentinel_auth(query: &str) -> (String, Option<&'static str>) {
    let (mut user, mut password) = ("", None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinel_username", value)) => user = value,
            Some(("sentinel_password", value)) => password = Some(value),
            _ => {
                return (
                    String::new(),
                    Some("the query may only hold sentinel_username and sentinel_password"),
                );
            }
        }
    }
    let auth = match (user, password) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(password)) => format!("{user}:{password}@"),
    };
    (auth, None)
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodeUrl").field(&self.redacted).finish()
    }
}
