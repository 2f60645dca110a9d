//! The scenarios, each on a fresh node. Requests are built as the engine builds them
//! (see the argument lists in [`scripts`]): lock key `k`, fencing counter `f:k`, wake-up
//! channel `ch:k`.

use super::Op::{Exact, Expired, Published, Ttl};
use super::check;
use crate::redlock::core::scripts;
use crate::redlock::node::Call;
use crate::redlock::sim::tests::{cmd as command, set_nx_px};

/// Expiries far enough apart that one cannot pass for another within the tolerance.
const TTL: u64 = 60_000;
const LONGER: u64 = 120_000;
const KEEP: u64 = 300_000;
const LONGEST: u64 = 600_000;
/// A key that is meant to expire during the scenario.
const SHORT: u64 = 100;

fn set_px(key: &str, value: &str, ms: u64) -> Call {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ms);
    Call::Command(cmd)
}

fn fences(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| format!("f:{k}")).collect()
}

fn channels(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| format!("ch:{k}")).collect()
}

fn acquire(keys: &[&str], token: &str, ttl: u64, fencing: bool) -> Call {
    Call::script(&scripts::ACQUIRE, 2 * keys.len(), |cmd| {
        cmd.arg(keys)
            .arg(fences(keys))
            .arg(token)
            .arg(ttl)
            .arg(keys.len())
            .arg(if fencing { "1" } else { "0" })
            .arg(KEEP);
    })
}

fn extend(keys: &[&str], token: &str, ttl: u64) -> Call {
    Call::script(&scripts::EXTEND, keys.len(), |cmd| {
        cmd.arg(keys).arg(token).arg(ttl).arg(keys.len());
    })
}

/// A release; with `next` = `(token, carried)`, a hand-off to `token` for [`TTL`].
fn release(keys: &[&str], token: &str, announce: bool, next: Option<(&str, bool)>) -> Call {
    Call::script(&scripts::RELEASE, keys.len(), |cmd| {
        cmd.arg(keys)
            .arg(token)
            .arg(keys.len())
            .arg(if announce { "1" } else { "0" })
            .arg(channels(keys));
        if let Some((next, carried)) = next {
            cmd.arg(next).arg(TTL).arg(if carried { "1" } else { "0" });
        }
    })
}

fn release_one(key: &str, token: &str) -> Call {
    Call::script(&scripts::RELEASE_ONE, 1, |cmd| {
        cmd.arg(key).arg(token).arg(format!("ch:{key}"));
    })
}

fn mark(keys: &[&str]) -> Call {
    Call::script(&scripts::MARK, keys.len(), |cmd| {
        cmd.arg(keys);
    })
}

fn fence_sync(counters: &[&str], token: u64, keep: u64) -> Call {
    Call::script(&scripts::FENCE_SYNC, counters.len(), |cmd| {
        cmd.arg(counters).arg(token).arg(keep);
    })
}

fn get(key: &str) -> Call {
    command(&["GET", key])
}

fn pttl(key: &str) -> Call {
    command(&["PTTL", key])
}

#[test]
fn plain_commands_and_set_nx_px() {
    check(&[
        Exact("ping", command(&["PING"])),
        Exact("set nx px", set_nx_px("a", "t1", TTL)),
        Exact("set nx px, held", set_nx_px("a", "t2", TTL)),
        Exact("get", get("a")),
        Ttl("pttl", pttl("a")),
        Exact("pttl of a missing key", pttl("missing")),
        Exact("set without expiry", command(&["SET", "p", "v"])),
        Exact("pttl without expiry", pttl("p")),
        Exact("set px 0", set_nx_px("z", "t1", 0)),
        Exact(
            "set px not a number",
            command(&["SET", "z", "t", "PX", "soon"]),
        ),
        Exact("nothing set on errors", command(&["EXISTS", "z"])),
        Exact("set nx px, short", set_nx_px("s", "t1", SHORT)),
        Expired("s"),
        Exact("set nx px after expiry", set_nx_px("s", "t2", TTL)),
        Exact(
            "config maxmemory-policy",
            command(&["CONFIG", "GET", "maxmemory-policy"]),
        ),
        Exact(
            "config appendonly",
            command(&["CONFIG", "GET", "appendonly"]),
        ),
        Exact("config save", command(&["CONFIG", "GET", "save"])),
        Exact(
            "unknown script",
            command(&["EVALSHA", &"0".repeat(40), "0"]),
        ),
    ]);
}

#[test]
fn acquire_script_multi_key_and_fenced() {
    check(&[
        Exact("fenced, free", acquire(&["a", "b"], "t1", TTL, true)),
        Exact("value", get("b")),
        Ttl("lock expiry", pttl("a")),
        Exact("counter", get("f:a")),
        Ttl("counter expiry is fence_ttl", pttl("f:b")),
        Ttl(
            "held: pttl of the first held",
            acquire(&["b", "c"], "t2", TTL, true),
        ),
        Exact("nothing set when refused", command(&["EXISTS", "c", "f:c"])),
        Exact("counter unchanged when refused", get("f:b")),
        Exact("unfenced", acquire(&["c"], "t2", TTL, false)),
        Exact("no counter unfenced", get("f:c")),
        Exact("ttl 0 is an error", acquire(&["d"], "t3", 0, true)),
        Exact(
            "nothing set on that error",
            command(&["EXISTS", "d", "f:d"]),
        ),
        Exact("a longer counter", set_px("f:e", "5", LONGEST)),
        Exact("fenced on it", acquire(&["e"], "t3", TTL, true)),
        Ttl("its expiry not shortened", pttl("f:e")),
        Exact("a counter without expiry", command(&["SET", "f:g", "9"])),
        Exact(
            "fenced, max of counters",
            acquire(&["g", "h"], "t3", TTL, true),
        ),
        Ttl("it gets fence_ttl", pttl("f:g")),
        Exact("the other counter", get("f:h")),
        Exact(
            "a counter that is no number",
            command(&["SET", "f:x", "abc"]),
        ),
        Exact("fenced on it", acquire(&["x"], "t3", TTL, true)),
        Exact("the lock was set before the error", get("x")),
        Exact("short", acquire(&["s"], "t4", SHORT, true)),
        Expired("s"),
        Exact(
            "again after expiry: the counter went on",
            acquire(&["s"], "t5", TTL, true),
        ),
    ]);
}

#[test]
fn extend_by_owner_non_owner_and_after_expiry() {
    check(&[
        Exact("acquire", acquire(&["a", "b"], "t1", TTL, false)),
        Exact("by the owner", extend(&["a", "b"], "t1", LONGER)),
        Ttl("extended", pttl("a")),
        Exact("by another token", extend(&["a", "b"], "t2", LONGEST)),
        Ttl("unchanged", pttl("b")),
        Exact("one key missing", extend(&["a", "missing"], "t1", LONGEST)),
        Ttl("all or nothing", pttl("a")),
        Exact("not re-created", get("missing")),
        Exact("mark", mark(&["a", "b"])),
        Exact(
            "marked: still the owner's",
            extend(&["a", "b"], "t1", LONGEST),
        ),
        Ttl("extended", pttl("b")),
        Exact("mark kept", get("a")),
        Exact("ttl 0 deletes", extend(&["b"], "t1", 0)),
        Exact("deleted", get("b")),
        Exact("short", set_nx_px("s", "t1", SHORT)),
        Expired("s"),
        Exact("after expiry", extend(&["s"], "t1", LONGER)),
        Exact("never resurrected", get("s")),
    ]);
}

#[test]
fn release_mark_and_wake_ups() {
    check(&[
        Exact("hold", set_nx_px("a", "t1", TTL)),
        Exact("by another token", release_one("a", "t2")),
        Exact("by the owner", release_one("a", "t1")),
        Published("ch:a"),
        Exact("again: nothing there", release_one("a", "t1")),
        Exact("hold", set_nx_px("a", "t1", TTL)),
        Exact("mark", mark(&["a"])),
        Exact("marked", get("a")),
        Ttl("mark keeps the expiry", pttl("a")),
        Exact("mark with a free key", mark(&["a", "free"])),
        Exact(
            "marked once, free not created",
            command(&["MGET", "a", "free"]),
        ),
        Exact("marked release", release_one("a", "t1")),
        Published("ch:a"),
        Exact("hold two", acquire(&["a", "b"], "t1", TTL, false)),
        Exact("mark one", mark(&["b"])),
        Exact("by another token", release(&["a", "b"], "t2", true, None)),
        Exact("unannounced", release(&["a", "b"], "t1", false, None)),
        Published("ch:b"),
        Exact("gone", command(&["EXISTS", "a", "b"])),
        Exact("hold two", acquire(&["a", "b"], "t1", TTL, false)),
        Exact("mark one", mark(&["a"])),
        Exact("announced", release(&["a", "b"], "t1", true, None)),
        Published("ch:a"),
        Published("ch:b"),
        Exact(
            "again: nothing there",
            release(&["a", "b"], "t1", true, None),
        ),
        Exact("ours", set_nx_px("a", "t1", TTL)),
        Exact("foreign", set_nx_px("b", "t2", TTL)),
        Exact("mixed", release(&["a", "b"], "t1", true, None)),
        Exact("foreign kept", get("b")),
        Exact("short", set_nx_px("s", "t1", SHORT)),
        Expired("s"),
        Exact("after expiry", release_one("s", "t1")),
    ]);
}

#[test]
fn hand_off_plain_marked_and_carried() {
    check(&[
        Exact("hold", acquire(&["a", "b"], "t1", LONGER, false)),
        Exact(
            "hand-off",
            release(&["a", "b"], "t1", true, Some(("t2", false))),
        ),
        Exact("moved", command(&["MGET", "a", "b"])),
        Ttl("fresh expiry", pttl("b")),
        Published("ch:a"),
        Exact("mark", mark(&["a"])),
        Exact(
            "marked: a plain release",
            release(&["a", "b"], "t2", true, Some(("t3", false))),
        ),
        Published("ch:a"),
        Exact("gone", command(&["EXISTS", "a", "b"])),
        Exact("hold", acquire(&["a", "b"], "t4", LONGER, false)),
        Exact("mark", mark(&["b"])),
        Exact(
            "carried, marked",
            release(&["a", "b"], "t4", true, Some(("t5", true))),
        ),
        Exact("moved with the mark", command(&["MGET", "a", "b"])),
        Ttl("fresh expiry", pttl("a")),
        Published("ch:b"),
        Exact(
            "carried, not ours",
            release(&["a", "b"], "t4", true, Some(("t6", true))),
        ),
        Exact("left as they were", command(&["MGET", "a", "b"])),
        Exact(
            "not carried, not ours",
            release(&["a", "b"], "t4", true, Some(("t6", false))),
        ),
        Exact("short", set_nx_px("s", "t7", SHORT)),
        Expired("s"),
        Exact(
            "hand-off after expiry",
            release(&["s"], "t7", true, Some(("t8", false))),
        ),
        Exact(
            "carried after expiry",
            release(&["s"], "t7", true, Some(("t8", true))),
        ),
        Exact("never resurrected", get("s")),
    ]);
}

#[test]
fn fence_sync_raises_and_never_lowers() {
    check(&[
        Exact("a counter", set_px("f:a", "3", TTL)),
        Exact("raise", fence_sync(&["f:a"], 10, KEEP)),
        Exact("raised", get("f:a")),
        Ttl("expiry raised to keep", pttl("f:a")),
        Exact("lower token", fence_sync(&["f:a"], 5, KEEP)),
        Exact("never lowered", get("f:a")),
        Exact("a longer counter", set_px("f:b", "3", LONGEST)),
        Exact("raise", fence_sync(&["f:b"], 7, KEEP)),
        Exact("raised", get("f:b")),
        Ttl("expiry kept", pttl("f:b")),
        Exact("a higher counter, shorter", set_px("f:c", "50", TTL)),
        Exact("lower token", fence_sync(&["f:c"], 7, KEEP)),
        Exact("value kept", get("f:c")),
        Ttl("expiry raised", pttl("f:c")),
        Exact("missing counter", fence_sync(&["f:d"], 4, KEEP)),
        Exact("created", get("f:d")),
        Ttl("with keep", pttl("f:d")),
        Exact("a counter without expiry", command(&["SET", "f:e", "99"])),
        Exact("lower token", fence_sync(&["f:e"], 1, KEEP)),
        Ttl("gets keep", pttl("f:e")),
        Exact("several", fence_sync(&["f:a", "f:d"], 20, KEEP)),
        Exact("all raised", command(&["MGET", "f:a", "f:d"])),
        Exact("not a number", command(&["SET", "f:x", "abc"])),
        Exact("an error", fence_sync(&["f:x"], 1, KEEP)),
        Exact("short counter", set_px("f:s", "1", SHORT)),
        Expired("f:s"),
        Exact("after expiry: starts again", fence_sync(&["f:s"], 2, KEEP)),
        Exact("value", get("f:s")),
    ]);
}
