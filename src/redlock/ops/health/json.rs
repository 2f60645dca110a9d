//! The health report as JSON, in two views: the public one answers "can this instance
//! lock?" and names no node; the detailed one adds what an operator needs (redacted URLs,
//! latencies, versions, memory, errors) and belongs on an internal port.
//!
//! The shape is described once ([`HealthReport::fields`], [`NodeHealth::fields`]) and
//! written by [`HealthReport::to_json`] / [`HealthReport::to_json_detailed`] here and, with
//! the `serde` feature, by the `Serialize` impls (the detailed view), so that both give the
//! same bytes. Durations are whole microseconds (`*_us`), never floats.

use std::time::Duration;

use super::{HealthReport, NodeHealth};
use crate::redlock::core::json::write_str;
use crate::redlock::node::breaker::BreakerState;

/// Which fields a document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// Safe for anyone: no node URL, version, memory, latency or error text.
    Public,
    /// Everything, for operators only.
    Detailed,
}

/// One value of the report's JSON.
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    UInt(u64),
    Str(&'a str),
    Nodes(&'a [NodeHealth], View),
}

/// An object's fields, in order.
pub(super) type Fields<'a> = Vec<(&'static str, Value<'a>)>;

impl Value<'_> {
    fn opt_str(s: Option<&str>) -> Value<'_> {
        s.map_or(Value::Null, Value::Str)
    }

    fn opt_us(d: Option<Duration>) -> Value<'static> {
        d.map_or(Value::Null, |d| {
            Value::UInt(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        })
    }
}

/// `report` as a JSON document in `view` (see [`HealthReport::to_json`] and
/// [`HealthReport::to_json_detailed`]).
pub(super) fn document(report: &HealthReport, view: View) -> String {
    write_document(&report_fields(report, view))
}

/// The report's fields in `view`.
pub(super) fn report_fields(report: &HealthReport, view: View) -> Fields<'_> {
    let mut fields = vec![
        (
            "status",
            Value::Str(if report.is_healthy() { "up" } else { "down" }),
        ),
        ("reachable", Value::UInt(report.reachable as u64)),
        ("quorum", Value::UInt(report.quorum as u64)),
        ("quorum_reachable", Value::Bool(report.quorum_reachable)),
        ("test_lock_ok", Value::Bool(report.test_lock_ok)),
        ("breaker", Value::Str(breaker_name(report.breaker))),
    ];
    if view == View::Detailed {
        fields.push((
            "test_lock_latency_us",
            Value::opt_us(report.test_lock_latency),
        ));
        fields.push((
            "test_lock_error",
            Value::opt_str(report.test_lock_error.as_deref()),
        ));
    }
    fields.push(("nodes", Value::Nodes(&report.nodes, view)));
    fields
}

impl NodeHealth {
    /// The node's fields in `view`.
    pub(super) fn fields(&self, view: View) -> Fields<'_> {
        let mut fields = vec![("index", Value::UInt(self.index as u64))];
        if view == View::Detailed {
            fields.push(("url", Value::Str(&self.url)));
            fields.push(("kind", Value::Str(self.kind.as_str())));
            fields.push(("primary", Value::opt_str(self.primary.as_deref())));
        }
        fields.push(("reachable", Value::Bool(self.reachable)));
        fields.push(("skipped", Value::Bool(self.skipped)));
        fields.push(("behind", Value::Bool(self.behind)));
        if view == View::Detailed {
            fields.push(("latency_us", Value::opt_us(self.latency)));
            fields.push((
                "redis_version",
                Value::opt_str(self.redis_version.as_deref()),
            ));
            fields.push((
                "used_memory",
                self.used_memory.map_or(Value::Null, Value::UInt),
            ));
            fields.push(("error", Value::opt_str(self.error.as_deref())));
        }
        fields
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Disabled => "disabled",
    }
}

fn write_document(fields: &Fields<'_>) -> String {
    let mut out = String::with_capacity(512);
    write_object(&mut out, fields);
    out
}

fn write_object(out: &mut String, fields: &Fields<'_>) {
    out.push('{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, name);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

fn write_value(out: &mut String, value: &Value<'_>) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::UInt(n) => out.push_str(&n.to_string()),
        Value::Str(s) => write_str(out, s),
        Value::Nodes(nodes, view) => {
            out.push('[');
            for (i, node) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_object(out, &node.fields(*view));
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redlock::config::node_url::NodeKind;

    fn report() -> HealthReport {
        let node = |index| NodeHealth {
            index,
            url: format!("redis://default:***@10.0.0.{index}:6379"),
            kind: if index == 2 {
                NodeKind::Cluster
            } else {
                NodeKind::Standalone
            },
            primary: (index == 2).then(|| "10.0.0.7:7000,10.0.0.8:7000".to_owned()),
            reachable: index != 1,
            latency: Some(Duration::from_micros(250)),
            redis_version: Some("7.2.4".to_owned()),
            used_memory: Some(1_048_576),
            error: (index == 1).then(|| "connection refused by 10.0.0.1\n\"x\"".to_owned()),
            skipped: index == 1,
            behind: false,
        };
        HealthReport {
            nodes: (0..3).map(node).collect(),
            reachable: 2,
            quorum: 2,
            quorum_reachable: true,
            test_lock_ok: true,
            test_lock_latency: Some(Duration::from_millis(1)),
            test_lock_error: None,
            breaker: BreakerState::Closed,
        }
    }

    #[test]
    fn public_view_names_no_node() {
        let json = report().to_json();
        assert_eq!(
            json,
            r#"{"status":"up","reachable":2,"quorum":2,"quorum_reachable":true,"test_lock_ok":true,"breaker":"closed","nodes":[{"index":0,"reachable":true,"skipped":false,"behind":false},{"index":1,"reachable":false,"skipped":true,"behind":false},{"index":2,"reachable":true,"skipped":false,"behind":false}]}"#
        );
        for secret in [
            "redis://", "10.0.0", "7.2.4", "1048576", "version", "memory", "refused", "kind",
            "primary",
        ] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
    }

    #[test]
    fn detailed_view_has_everything() {
        let json = report().to_json_detailed();
        for detail in [
            r#""url":"redis://default:***@10.0.0.0:6379""#,
            r#""redis_version":"7.2.4""#,
            r#""used_memory":1048576"#,
            r#""latency_us":250"#,
            r#""error":"connection refused by 10.0.0.1\n\"x\"""#,
            r#""test_lock_latency_us":1000,"test_lock_error":null"#,
            r#""kind":"standalone","primary":null"#,
            r#""kind":"cluster","primary":"10.0.0.7:7000,10.0.0.8:7000""#,
        ] {
            assert!(json.contains(detail), "{detail} not in {json}");
        }
        for view in [report().to_json(), json] {
            let value: serde_json::Value = serde_json::from_str(&view).expect("valid JSON");
            assert_eq!(value["status"], "up");
            assert_eq!(value["nodes"][1]["skipped"], true);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_gives_the_detailed_document() {
        let report = report();
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            report.to_json_detailed()
        );
        for node in &report.nodes {
            assert_eq!(
                serde_json::to_string(node).unwrap(),
                write_document(&node.fields(View::Detailed))
            );
        }
        let down = HealthReport {
            test_lock_ok: false,
            test_lock_latency: None,
            test_lock_error: Some("tab\there\u{1}".to_owned()),
            breaker: BreakerState::HalfOpen,
            ..report
        };
        assert_eq!(
            serde_json::to_string(&down).unwrap(),
            down.to_json_detailed()
        );
    }
}
