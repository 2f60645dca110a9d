//! The wire-level requests a simulated node answers: the engine's [`Call`]s, read back into
//! their arguments, and the replies real Redis gives (RESP2, as the engine's connections
//! speak it).
//!
//! Covered: `PING`, `INFO`, `CONFIG GET`, `GET`, `MGET`, `SET` (`NX`/`XX`, `PX`/`EX`), `DEL`,
//! `EXISTS`, `PTTL`, `PEXPIRE`, `INCR`, `APPEND`, `PUBLISH`, `SCRIPT LOAD`, and
//! `EVALSHA`/`EVAL` of the engine's scripts (see [`super::scripts`]). Anything else is
//! answered with Redis's unknown-command error.

use std::time::Duration;

use redis::{Arg, Cmd, Value};
use tokio::time::Instant;

use super::scripts::{Known, Run};
use super::store::{ReplyError, Store, parse_integer};
use crate::redlock::node::Call;

/// The arguments of `call` as sent on the wire (command name first), and whether its
/// sender waits for a reply.
pub(super) fn decode(call: &Call) -> (Vec<Vec<u8>>, bool) {
    match call {
        Call::Command(cmd) => (args(cmd), !cmd.is_no_response()),
        Call::Script(script) => (args(script.evalsha()), true),
    }
}

fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|arg| match arg {
            Arg::Simple(bytes) => bytes.to_vec(),
            // A `SCAN` cursor, or any later kind: nothing the engine sends.
            _ => b"0".to_vec(),
        })
        .collect()
}

/// The reply to an error, as the wire carries it (a [`Value::ServerError`]).
pub(super) fn error_value(error: &ReplyError) -> Value {
    let message: String = error
        .message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    redis::parse_redis_value(format!("-{} {message}\r\n", error.code).as_bytes())
        .unwrap_or(Value::Nil)
}

fn wrong_arity(name: &str) -> ReplyError {
    ReplyError::new(
        "ERR",
        format!("wrong number of arguments for '{name}' command"),
    )
}

fn syntax_error() -> ReplyError {
    ReplyError::new("ERR", "syntax error")
}

/// Runs one request on the node's data at `now`.
pub(super) fn execute(store: &mut Store, args: &[Vec<u8>], now: Instant) -> Value {
    run(store, args, now).unwrap_or_else(|e| error_value(&e))
}

fn run(store: &mut Store, args: &[Vec<u8>], now: Instant) -> Result<Value, ReplyError> {
    let Some((name, rest)) = args.split_first() else {
        return Err(ReplyError::new("ERR", "empty command"));
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let arity = |ok: bool| if ok { Ok(()) } else { Err(wrong_arity(&name)) };
    match (name.as_str(), rest) {
        ("ping", []) => Ok(Value::SimpleString("PONG".into())),
        ("ping", [message]) => Ok(Value::BulkString(message.clone())),
        ("info", _) => Ok(Value::BulkString(info(store, now).into_bytes())),
        ("config", [sub, names @ ..]) if sub.eq_ignore_ascii_case(b"get") => {
            arity(!names.is_empty())?;
            Ok(config_get(names))
        }
        ("get", [key]) => Ok(store.get(key, now).map_or(Value::Nil, Value::BulkString)),
        ("mget", keys) => {
            arity(!keys.is_empty())?;
            let values = keys
                .iter()
                .map(|k| store.get(k, now).map_or(Value::Nil, Value::BulkString));
            Ok(Value::Array(values.collect()))
        }
        ("set", [key, value, options @ ..]) => set(store, key, value, options, now),
        ("del", keys) => {
            arity(!keys.is_empty())?;
            Ok(Value::Int(
                keys.iter().filter(|k| store.del(k, now)).count() as i64,
            ))
        }
        ("exists", keys) => {
            arity(!keys.is_empty())?;
            let found = keys.iter().filter(|k| store.exists(k, now)).count();
            Ok(Value::Int(found as i64))
        }
        ("pttl", [key]) => Ok(Value::Int(store.pttl(key, now))),
        ("pexpire", [key, ms]) => {
            let ms = parse_integer(ms).ok_or_else(ReplyError::not_an_integer)?;
            Ok(Value::Int(i64::from(store.pexpire(key, ms, now))))
        }
        ("incr", [key]) => store.incr(key, now).map(Value::Int),
        ("append", [key, suffix]) => Ok(Value::Int(store.append(key, suffix, now) as i64)),
        ("publish", [channel, _message]) => Ok(Value::Int(store.publish(channel))),
        ("script", [sub, body]) if sub.eq_ignore_ascii_case(b"load") => Known::by_body(body)
            .map(|k| Value::BulkString(k.sha().as_bytes().to_vec()))
            .ok_or_else(|| {
                ReplyError::new("ERR", "the simulated node runs only the engine's scripts")
            }),
        ("evalsha", [sha, rest @ ..]) => {
            let script = Known::by_sha(sha).ok_or_else(|| {
                ReplyError::new("NOSCRIPT", "No matching script. Please use EVAL.")
            })?;
            eval(store, script, rest, now)
        }
        ("eval", [body, rest @ ..]) => {
            let script = Known::by_body(body).ok_or_else(|| {
                ReplyError::new("ERR", "the simulated node runs only the engine's scripts")
            })?;
            eval(store, script, rest, now)
        }
        (
            "ping" | "get" | "set" | "pttl" | "pexpire" | "incr" | "append" | "publish" | "evalsha"
            | "eval" | "config" | "script",
            _,
        ) => Err(wrong_arity(&name)),
        _ => Err(ReplyError::new(
            "ERR",
            format!("unknown command '{name}' (not simulated)"),
        )),
    }
}

/// `numkeys key... arg...` of an `EVAL`/`EVALSHA`.
fn eval(
    store: &mut Store,
    script: Known,
    rest: &[Vec<u8>],
    now: Instant,
) -> Result<Value, ReplyError> {
    let Some((count, rest)) = rest.split_first() else {
        return Err(wrong_arity("evalsha"));
    };
    let count = parse_integer(count).ok_or_else(ReplyError::not_an_integer)?;
    let count = usize::try_from(count)
        .map_err(|_| ReplyError::new("ERR", "Number of keys can't be negative"))?;
    if count > rest.len() {
        return Err(ReplyError::new(
            "ERR",
            "Number of keys can't be greater than number of args",
        ));
    }
    let (keys, argv) = rest.split_at(count);
    Run {
        keys,
        argv,
        store,
        now,
    }
    .run(script)
}

/// `SET key value [NX|XX] [PX ms|EX s]`.
fn set(
    store: &mut Store,
    key: &[u8],
    value: &[u8],
    options: &[Vec<u8>],
    now: Instant,
) -> Result<Value, ReplyError> {
    let (mut nx, mut xx, mut expiry) = (false, false, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let option = option.to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"PX" | b"EX" if expiry.is_none() => {
                let amount = options.next().ok_or_else(syntax_error)?;
                let amount = parse_integer(amount).ok_or_else(ReplyError::not_an_integer)?;
                let amount = u64::try_from(amount)
                    .ok()
                    .filter(|a| *a > 0)
                    .ok_or_else(|| {
                        ReplyError::new("ERR", "invalid expire time in 'set' command")
                    })?;
                expiry = Some(if option == b"PX" {
                    Duration::from_millis(amount)
                } else {
                    Duration::from_secs(amount)
                });
            }
            _ => return Err(syntax_error()),
        }
    }
    let exists = store.exists(key, now);
    if (nx && exists) || (xx && !exists) {
        return Ok(Value::Nil);
    }
    store.set(key, value, expiry, now);
    Ok(Value::Okay)
}

/// `CONFIG GET name...`: the settings the engine's health check reads, as a node without
/// persistence and with `noeviction` has them (which is what a simulated node is).
fn config_get(names: &[Vec<u8>]) -> Value {
    let settings: [(&[u8], &[u8]); 3] = [
        (b"maxmemory-policy", b"noeviction"),
        (b"appendonly", b"no"),
        (b"save", b""),
    ];
    let mut reply = Vec::new();
    for (name, value) in settings {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            reply.push(Value::BulkString(name.to_vec()));
            reply.push(Value::BulkString(value.to_vec()));
        }
    }
    Value::Array(reply)
}

/// `INFO`: the fields the engine's health check reads.
fn info(store: &Store, now: Instant) -> String {
    format!(
        "# Server\r\nredis_version:simulated\r\n\r\n# Memory\r\nused_memory:{}\r\n",
        store.used_bytes(now)
    )
}
