//! Node URLs: parsed once, and never shown with their password.

use std::fmt;

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::redlock::core::error::ConfigError;

/// Longest node URL accepted, in bytes.
const MAX_URL_LEN: usize = 2048;

/// A parsed `redis://` or `rediss://` node URL.
///
/// `Debug` and `Display` show the URL with any password replaced by `***`, so a `NodeUrl`
/// is safe to log.
///
/// ```
/// use tower_redlock::NodeUrl;
///
/// let url = NodeUrl::parse("redis://app:s3cret@127.0.0.1:6379/2").unwrap();
/// assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/2");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct NodeUrl {
    redacted: String,
    info: ConnectionInfo,
}

impl NodeUrl {
    /// Parses a node URL: `redis://[user[:password]@]host[:port][/db]` or `rediss://…` (TLS).
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
            return Err(invalid("expected redis://host:port or rediss://host:port"));
        };
        match scheme {
            "redis" => {}
            "rediss" if cfg!(feature = "tls") => {}
            "rediss" => {
                return Err(invalid(
                    "rediss:// (TLS) needs the `tls` feature of tower-redlock",
                ));
            }
            _ => return Err(invalid("the scheme must be redis:// or rediss://")),
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') {
            return Err(invalid("the URL has no host"));
        }
        // redis-rs error messages may quote the URL; map them to our own words.
        let info = url.into_connection_info().map_err(|_| {
            invalid("not a valid Redis URL (check host, port, database and percent-encoding)")
        })?;
        Ok(NodeUrl { redacted, info })
    }

    /// The name of simulated node `index` (`in-memory://INDEX`): it connects nowhere.
    pub(crate) fn in_memory(index: usize) -> Result<NodeUrl, ConfigError> {
        let mut url = NodeUrl::parse_at(index, &format!("redis://in-memory-{index}"))?;
        url.redacted = format!("in-memory://{index}");
        Ok(url)
    }

    pub(crate) fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `host:port` and database, used to detect a node given twice.
    pub(crate) fn identity(&self) -> String {
        format!("{:?}/{}", self.info.addr(), self.info.redis_settings().db())
    }
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

/// Replaces the password of a URL-like string with `***`, even when the URL is malformed.
///
/// Everything between `://` and the **last** `@` counts as user info — even if it holds a
/// `/`, `?` or `#` that a strict parser would not accept there — so a password is hidden in
/// every shape; its part after the first `:` is the password. Without `://`, an `@` still
/// hides everything before it.
pub(crate) fn redact(url: &str) -> String {
    // Only a real scheme (letters, digits, `+`, `-`, `.`) before `://` counts: in
    // `:pw@host://` the `://` comes after the user info.
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (Some(s), r)
        }
        _ => (None, url),
    };
    let Some((userinfo, host_and_tail)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let hidden = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{hidden}@{host_and_tail}"),
        None => format!("{hidden}@{host_and_tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_every_shape() {
        assert_eq!(redact("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact("redis://:p@h"), "redis://:***@h");
        assert_eq!(redact("redis://p@h"), "redis://***@h");
        assert_eq!(redact("redis://u:p:q@x@h/0"), "redis://u:***@h/0");
        assert_eq!(redact("garbage:pw@host"), "garbage:***@host");
        assert_eq!(redact("pw@host"), "***@host");
        assert_eq!(redact(":pw@127.0.0.1://"), ":***@127.0.0.1://");
        assert_eq!(redact("u:pw@h://x"), "u:***@h://x");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://u:pa/ss@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://u:p?a#s@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:1/0#x@y"), "redis://h:***@y");
    }

    #[test]
    fn parses_good_urls() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://user:pass@127.0.0.1:6380/3",
            " redis://127.0.0.1:6379/0 ",
        ] {
            NodeUrl::parse(url).unwrap();
        }
    }

    #[test]
    fn rejects_bad_urls_without_echoing_secrets() {
        for url in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1",
            "redis://",
            "redis://:6379",
            "redis://user:hunter2@127.0.0.1:notaport",
            "redis://user:hunter2@127.0.0.1:6379/notadb",
        ] {
            let err = NodeUrl::parse(url).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
