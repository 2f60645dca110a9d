//! Checks of node settings that break locks: [`Redlock::check_config`](crate::Redlock::check_config).
//!
//! - `maxmemory-policy` other than `noeviction`: under memory pressure, `allkeys-*` evicts
//!   any key (lock keys, fencing counters), `volatile-*` evicts keys with an expiry (lock
//!   keys always have one, fencing counters too). An evicted lock key is a lock released
//!   early: a second holder can take it while the first still works.
//! - With fencing on (the builder's default), a node that persists nothing (`appendonly no`
//!   and no `save` points): a restart loses its fencing counters, and a majority of such
//!   restarts lets tokens go backwards.
//!
//! Reading a setting needs `CONFIG GET`; a node whose ACL refuses it, or that does not
//! answer, is reported as unknown, not as an error. The build runs the check once in the
//! background and logs each warning (`warn`) and each unknown node (`info`).

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use redis::Value;

use crate::redlock::core::json::write_str;
use crate::redlock::engine::Engine;
use crate::redlock::node::{Call, Fanout, NodeError};

/// A node setting that can break locks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingWarning {
    /// `maxmemory-policy` is not `noeviction`: `allkeys-*` evicts lock keys and fencing
    /// counters under memory pressure, `volatile-*` evicts keys with an expiry (lock keys,
    /// fencing counters). An evicted lock key lets a second holder in.
    #[non_exhaustive]
    Eviction {
        /// The node's `maxmemory-policy`.
        policy: String,
    },
    /// Fencing is on and the node persists nothing (`appendonly no`, `save ""`): a restart
    /// loses its fencing counters.
    NoPersistence,
}

impl fmt::Display for SettingWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingWarning::Eviction { policy } => write!(
                f,
                "maxmemory-policy is {policy}: under memory pressure the node evicts lock keys \
                 (and fencing counters), letting a second holder in; use noeviction"
            ),
            SettingWarning::NoPersistence => f.write_str(
                "fencing is on but the node persists nothing (appendonly no, no save points): \
                 a restart loses its fencing counters; turn on appendonly (fsync everysec or \
                 always)",
            ),
        }
    }
}

/// One node's settings, as far as they could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSettings {
    /// Position in the configured node list.
    pub index: usize,
    /// The node URL, password redacted.
    pub url: String,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// `appendonly`.
    pub appendonly: Option<bool>,
    /// `save` (`""`: no snapshots).
    pub save: Option<String>,
    /// What breaks locks.
    pub warnings: Vec<SettingWarning>,
    /// Why the settings could not be read (no `CONFIG GET` permission, node down): the
    /// checks of this node are unknown.
    pub unknown: Option<String>,
}

/// The result of [`Redlock::check_config`](crate::Redlock::check_config).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettingsReport {
    /// Every node, in configured order.
    pub nodes: Vec<NodeSettings>,
    /// Whether fencing is on by default (the persistence check runs only then).
    pub fencing: bool,
}

impl SettingsReport {
    /// Every warning, with its node's index.
    pub fn warnings(&self) -> impl Iterator<Item = (usize, &SettingWarning)> {
        self.nodes
            .iter()
            .flat_map(|node| node.warnings.iter().map(move |w| (node.index, w)))
    }

    /// `true` when no node has a setting that breaks locks (nodes whose settings are
    /// unknown aside).
    pub fn is_clean(&self) -> bool {
        self.warnings().next().is_none()
    }

    /// As JSON: `{"clean":..,"fencing":..,"nodes":[{"index":..,"url":..,
    /// "maxmemory_policy":..,"appendonly":..,"save":..,"warnings":[..],"unknown":..}]}`,
    /// each warning `{"kind":"eviction"|"no_persistence","message":..}`. It names the nodes
    /// (redacted URLs): for operators only.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 256 * self.nodes.len());
        let _ = write!(
            out,
            r#"{{"clean":{},"fencing":{},"nodes":["#,
            self.is_clean(),
            self.fencing
        );
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, r#"{{"index":{},"url":"#, node.index);
            write_str(&mut out, &node.url);
            out.push_str(r#","maxmemory_policy":"#);
            write_opt_str(&mut out, node.maxmemory_policy.as_deref());
            let appendonly = node
                .appendonly
                .map_or("null", |a| if a { "true" } else { "false" });
            let _ = write!(out, r#","appendonly":{appendonly},"save":"#);
            write_opt_str(&mut out, node.save.as_deref());
            out.push_str(r#","warnings":["#);
            for (j, warning) in node.warnings.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let kind = match warning {
                    SettingWarning::Eviction { .. } => "eviction",
                    SettingWarning::NoPersistence => "no_persistence",
                };
                let _ = write!(out, r#"{{"kind":"{kind}","message":"#);
                write_str(&mut out, &warning.to_string());
                out.push('}');
            }
            out.push_str(r#"],"unknown":"#);
            write_opt_str(&mut out, node.unknown.as_deref());
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.push_str("null"),
    }
}

/// The value of `CONFIG GET name` (`None`: no such setting).
fn config_value(reply: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

async fn config_get(
    engine: &Engine,
    index: usize,
    name: &str,
) -> Result<Option<String>, NodeError> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let reply = engine.nodes()[index].query(&Call::Command(cmd)).await?;
    Ok(config_value(&reply))
}

/// The warnings for settings read from a node.
fn judge(node: &mut NodeSettings, fencing: bool) {
    if let Some(policy) = node.maxmemory_policy.as_deref()
        && policy != "noeviction"
    {
        node.warnings.push(SettingWarning::Eviction {
            policy: policy.to_owned(),
        });
    }
    let no_snapshots = node.save.as_deref().is_some_and(|s| s.trim().is_empty());
    if fencing && node.appendonly == Some(false) && no_snapshots {
        node.warnings.push(SettingWarning::NoPersistence);
    }
}

/// Node `index` before its settings are read (`unknown`: why they could not be).
fn unread(engine: &Engine, index: usize, unknown: Option<String>) -> NodeSettings {
    NodeSettings {
        index,
        url: engine.nodes()[index].url.redacted().to_owned(),
        maxmemory_policy: None,
        appendonly: None,
        save: None,
        warnings: Vec::new(),
        unknown,
    }
}

async fn check_node(engine: Arc<Engine>, index: usize) -> NodeSettings {
    let mut node = unread(&engine, index, None);
    let read = async {
        node.maxmemory_policy = config_get(&engine, index, "maxmemory-policy").await?;
        node.appendonly = config_get(&engine, index, "appendonly")
            .await?
            .map(|v| v.eq_ignore_ascii_case("yes"));
        node.save = config_get(&engine, index, "save").await?;
        Ok::<_, NodeError>(())
    };
    match read.await {
        Ok(()) => judge(&mut node, engine.settings.fencing),
        Err(error) => node.unknown = Some(error.to_string()),
    }
    node
}

/// Reads every node's settings that matter for locks (see
/// [`Redlock::check_config`](crate::Redlock::check_config)).
pub(crate) async fn check_config(engine: &Arc<Engine>) -> SettingsReport {
    let total = engine.nodes().total();
    let limit = engine.nodes().timeout().saturating_mul(3);
    let mut fanout = Fanout::new(total, limit, |index| {
        let engine = engine.clone();
        async move { (index, Ok::<_, NodeError>(check_node(engine, index).await)) }
    });
    let mut nodes = Vec::with_capacity(total);
    while let Some((index, node)) = fanout.next().await {
        nodes.push(node.unwrap_or_else(|error| unread(engine, index, Some(error.to_string()))));
    }
    nodes.sort_by_key(|n| n.index);
    SettingsReport {
        nodes,
        fencing: engine.settings.fencing,
    }
}

/// Runs [`check_config`] once in the background and logs what it finds.
pub(crate) fn log_in_background(engine: &Arc<Engine>) {
    let engine_ = engine.clone();
    engine.nodes().janitor.run(async move {
        let report = check_config(&engine_).await;
        for node in &report.nodes {
            for warning in &node.warnings {
                tracing::warn!(node = node.index, url = %node.url, "Redlock node setting: {warning}");
            }
            if let Some(reason) = &node.unknown {
                tracing::info!(
                    node = node.index,
                    url = %node.url,
                    %reason,
                    "Redlock could not check the node's settings (CONFIG GET)"
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(policy: &str, appendonly: bool, save: &str) -> NodeSettings {
        NodeSettings {
            index: 0,
            url: String::new(),
            maxmemory_policy: Some(policy.to_owned()),
            appendonly: Some(appendonly),
            save: Some(save.to_owned()),
            warnings: Vec::new(),
            unknown: None,
        }
    }

    #[test]
    fn judges_eviction_and_persistence() {
        let mut safe = node("noeviction", false, "");
        judge(&mut safe, false);
        assert!(safe.warnings.is_empty());
        let mut evicting = node("allkeys-lru", true, "");
        judge(&mut evicting, true);
        assert_eq!(
            evicting.warnings,
            [SettingWarning::Eviction {
                policy: "allkeys-lru".to_owned()
            }]
        );
        let mut volatile = node("volatile-ttl", false, "3600 1");
        judge(&mut volatile, true);
        assert_eq!(volatile.warnings.len(), 1);
        let mut forgetful = node("noeviction", false, "");
        judge(&mut forgetful, true);
        assert_eq!(forgetful.warnings, [SettingWarning::NoPersistence]);
    }

    #[test]
    fn reads_config_replies() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"appendonly".to_vec()),
            Value::BulkString(b"no".to_vec()),
        ]);
        assert_eq!(config_value(&resp2).as_deref(), Some("no"));
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"save".to_vec()),
            Value::BulkString(Vec::new()),
        )]);
        assert_eq!(config_value(&resp3).as_deref(), Some(""));
        assert_eq!(config_value(&Value::Array(Vec::new())), None);
    }

    #[test]
    fn report_json() {
        let mut evicting = node("allkeys-lru", false, "");
        judge(&mut evicting, true);
        let unknown = NodeSettings {
            index: 1,
            maxmemory_policy: None,
            appendonly: None,
            save: None,
            unknown: Some("NOPERM \"config|get\"".to_owned()),
            ..node("", false, "")
        };
        let report = SettingsReport {
            nodes: vec![evicting, unknown],
            fencing: true,
        };
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["clean"], false);
        assert_eq!(json["nodes"][0]["warnings"][0]["kind"], "eviction");
        assert_eq!(json["nodes"][0]["warnings"][1]["kind"], "no_persistence");
        assert_eq!(json["nodes"][0]["appendonly"], false);
        assert_eq!(json["nodes"][1]["unknown"], "NOPERM \"config|get\"");
        assert_eq!(json["nodes"][1]["save"], serde_json::Value::Null);
    }
}
