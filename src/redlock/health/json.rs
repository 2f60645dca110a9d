//! The health report as JSON (no serde needed), in two views: the public one answers
//! "can this instance lock?" and names no node; the detailed one adds what an operator
//! needs (redacted URLs, latencies, versions, memory, errors) and belongs on an internal
//! port.

use std::fmt::Write as _;
use std::time::Duration;

use super::super::breaker::BreakerState;
use super::HealthReport;

impl HealthReport {
    /// The public view: `status` (`up`/`down`), `reachable`, `quorum`,
    /// `quorum_reachable`, `test_lock_ok`, `breaker`, and per node only `index`,
    /// `reachable`, `skipped` and `behind`. No node URL, Redis version, memory figure,
    /// latency or error text: safe to serve to anyone who can reach the health route.
    ///
    /// [`to_json_detailed`](HealthReport::to_json_detailed) has everything.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160 + 64 * self.nodes.len());
        self.write_summary(&mut out);
        let _ = write!(out, r#","nodes":["#);
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"index":{},"reachable":{},"skipped":{},"behind":{}}}"#,
                node.index, node.reachable, node.skipped, node.behind,
            );
        }
        out.push_str("]}");
        out
    }

    /// The detailed view: the public fields plus the test lock's latency and error, and
    /// per node its redacted URL, `PING` latency, Redis version, used memory and error.
    /// For operators only (an internal port, an authenticated route): it tells where the
    /// nodes are and what they run.
    pub fn to_json_detailed(&self) -> String {
        let mut out = String::with_capacity(256 + 160 * self.nodes.len());
        self.write_summary(&mut out);
        let _ = write!(
            out,
            r#","test_lock_latency_ms":{},"test_lock_error":{},"nodes":["#,
            opt_ms(self.test_lock_latency),
            opt_str(self.test_lock_error.as_deref()),
        );
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"index":{},"url":{},"reachable":{},"skipped":{},"behind":{},"latency_ms":{},"redis_version":{},"used_memory":{},"error":{}}}"#,
                node.index,
                json_str(&node.url),
                node.reachable,
                node.skipped,
                node.behind,
                opt_ms(node.latency),
                opt_str(node.redis_version.as_deref()),
                node.used_memory
                    .map_or_else(|| "null".to_owned(), |m| m.to_string()),
                opt_str(node.error.as_deref()),
            );
        }
        out.push_str("]}");
        out
    }

    /// `{"status":..,"reachable":..,"quorum":..,"quorum_reachable":..,"test_lock_ok":..,"breaker":..`
    /// (the object left open).
    fn write_summary(&self, out: &mut String) {
        let _ = write!(
            out,
            r#"{{"status":"{}","reachable":{},"quorum":{},"quorum_reachable":{},"test_lock_ok":{},"breaker":"{}""#,
            if self.is_healthy() { "up" } else { "down" },
            self.reachable,
            self.quorum,
            self.quorum_reachable,
            self.test_lock_ok,
            breaker_name(self.breaker),
        );
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

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "null".to_owned(),
        |d| format!("{:.3}", d.as_secs_f64() * 1e3),
    )
}

fn opt_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::NodeHealth;
    use super::*;

    fn report() -> HealthReport {
        let node = |index| NodeHealth {
            index,
            url: format!("redis://default:***@10.0.0.{index}:6379"),
            reachable: index != 1,
            latency: Some(Duration::from_micros(250)),
            redis_version: Some("7.2.4".to_owned()),
            used_memory: Some(1_048_576),
            error: (index == 1).then(|| "connection refused by 10.0.0.1".to_owned()),
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
            "redis://", "10.0.0", "7.2.4", "1048576", "version", "memory", "refused",
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
            r#""latency_ms":0.250"#,
            r#""error":"connection refused by 10.0.0.1""#,
            r#""test_lock_latency_ms":1.000"#,
        ] {
            assert!(json.contains(detail), "{detail} not in {json}");
        }
        for view in [report().to_json(), json] {
            let value: serde_json::Value = serde_json::from_str(&view).expect("valid JSON");
            assert_eq!(value["status"], "up");
            assert_eq!(value["nodes"][1]["skipped"], true);
        }
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
