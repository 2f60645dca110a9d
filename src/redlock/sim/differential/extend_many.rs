//! `EXTEND_MANY` (the batched auto-extension's script), built as the engine builds it: per
//! lease exactly what `EXTEND` does, one 1/0 per lease, no lease affecting another.

use super::Op::{Exact, Expired, Ttl};
use super::check;
use crate::redlock::lease::batch::extend_many_call;
use crate::redlock::node::Call;
use crate::redlock::sim::tests::{cmd as command, set_nx_px};

/// Expiries far enough apart that one cannot pass for another within the tolerance.
const TTL: u64 = 60_000;
const LONGER: u64 = 120_000;
const LONGEST: u64 = 600_000;
/// A key that is meant to expire during the scenario.
const SHORT: u64 = 100;

/// One `EXTEND_MANY` call for `leases`: (keys, token, ttl).
fn extend_many(leases: &[(&[&str], &str, u64)]) -> Call {
    let keys: Vec<Vec<String>> = leases
        .iter()
        .map(|(keys, _, _)| keys.iter().map(|k| (*k).to_owned()).collect())
        .collect();
    let parts: Vec<(&[String], &[u8], u64)> = leases
        .iter()
        .zip(&keys)
        .map(|((_, token, ttl), keys)| (keys.as_slice(), token.as_bytes(), *ttl))
        .collect();
    extend_many_call(&parts)
}

fn set_px(key: &str, value: &str, ms: u64) -> Call {
    command(&["SET", key, value, "PX", &ms.to_string()])
}

#[test]
fn extend_many_per_lease_outcomes() {
    let mark = command(&["APPEND", "c", "+"]);
    check(&[
        Exact("a", set_px("a", "t1", TTL)),
        Exact("b", set_px("b", "t1", TTL)),
        Exact("c", set_px("c", "t2", TTL)),
        Exact("c marked by a waiter", mark),
        Exact("d foreign", set_px("d", "other", TTL)),
        Exact("s short", set_nx_px("s", "t3", SHORT)),
        Expired("s"),
        Exact(
            "batch",
            extend_many(&[
                (&["a", "b"], "t1", LONGER),
                (&["c"], "t2", LONGEST),
                (&["s"], "t3", LONGER),
                (&["d"], "t4", LONGER),
                (&["a", "missing"], "t1", LONGEST),
                (&["e"], "t5", LONGER),
            ]),
        ),
        Ttl("multi-key: first extended", command(&["PTTL", "a"])),
        Ttl("multi-key: second extended", command(&["PTTL", "b"])),
        Ttl("marked: extended", command(&["PTTL", "c"])),
        Exact("mark kept", command(&["GET", "c"])),
        Exact("expired: not re-created", command(&["GET", "s"])),
        Ttl("foreign: unchanged", command(&["PTTL", "d"])),
        Exact("foreign: value kept", command(&["GET", "d"])),
        Exact("missing: not created", command(&["GET", "missing"])),
        Exact("one lease", extend_many(&[(&["b"], "t1", LONGEST)])),
        Ttl("one lease: extended", command(&["PTTL", "b"])),
        Exact("wrong token only", extend_many(&[(&["a"], "t2", 5)])),
        Ttl("wrong token: unchanged", command(&["PTTL", "a"])),
    ]);
}
