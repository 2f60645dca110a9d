//! The Lua scripts of [`scripts`](crate::redlock::core::scripts), in Rust, step by step.
//!
//! Each function follows its script line by line, through the same Redis commands on the
//! [`Store`], so that what a script leaves behind when a command in it fails (Redis does
//! not roll a script back) is the same too. Lua's conversions are kept where the scripts
//! rely on them: `tonumber`, numbers compared as doubles, and a number passed to
//! `redis.call` written as Lua writes it (`%.14g`).

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::store::{ReplyError, Store, parse_integer};
use crate::redlock::core::scripts::{self, Script};

/// The engine's scripts, told apart by their SHA (or body, for `EVAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Acquire,
    Extend,
    ExtendMany,
    Release,
    ReleaseOne,
    Mark,
    FenceSync,
}

impl Known {
    fn all() -> [(Known, &'static Script); 7] {
        [
            (Known::Acquire, &scripts::ACQUIRE),
            (Known::Extend, &scripts::EXTEND),
            (Known::ExtendMany, &scripts::EXTEND_MANY),
            (Known::Release, &scripts::RELEASE),
            (Known::ReleaseOne, &scripts::RELEASE_ONE),
            (Known::Mark, &scripts::MARK),
            (Known::FenceSync, &scripts::FENCE_SYNC),
        ]
    }

    /// The script whose SHA1 is `sha` (any case, as Redis accepts).
    pub(super) fn by_sha(sha: &[u8]) -> Option<Known> {
        Known::all()
            .into_iter()
            .find(|(_, s)| s.sha.as_bytes().eq_ignore_ascii_case(sha))
            .map(|(k, _)| k)
    }

    /// The script whose body is `body`.
    pub(super) fn by_body(body: &[u8]) -> Option<Known> {
        Known::all()
            .into_iter()
            .find(|(_, s)| s.body.as_bytes() == body)
            .map(|(k, _)| k)
    }

    /// The script's SHA1 (`SCRIPT LOAD`'s reply).
    pub(super) fn sha(self) -> &'static str {
        Known::all()
            .into_iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, s)| s.sha.as_str())
    }
}

/// One run of a script: its `KEYS` and `ARGV`, the node's data and the request's instant.
pub(super) struct Run<'a> {
    pub(super) keys: &'a [Vec<u8>],
    pub(super) argv: &'a [Vec<u8>],
    pub(super) store: &'a mut Store,
    pub(super) now: Instant,
}

type Reply = Result<Value, ReplyError>;

fn script_error(message: &str) -> ReplyError {
    ReplyError::new("ERR", format!("Error running script: {message}"))
}

/// Lua's `tonumber` on a string (decimal, exponent, or `0x` hexadecimal; blanks around).
fn to_number(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text),
    };
    if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16).ok().map(|v| sign * v as f64);
    }
    text.parse().ok()
}

/// A Lua number as `redis.call` sends it (`%.14g`): an integer below 10^14 in full; any
/// other number in a form no Redis integer argument accepts (as `1e+14` is refused).
fn lua_number_arg(x: f64) -> Vec<u8> {
    if x.fract() == 0.0 && x.abs() < 1e14 {
        format!("{}", x as i64).into_bytes()
    } else {
        format!("{x:e}").into_bytes()
    }
}

/// A `for i = 1, n` loop's count.
fn loop_count(n: f64) -> usize {
    if n >= 1.0 { n as usize } else { 0 }
}

/// `v == ARGV[1] .. '+'`.
fn is_marked(value: &[u8], token: &[u8]) -> bool {
    value.len() == token.len() + 1 && value.starts_with(token) && value.ends_with(b"+")
}

/// A `PX`/`PEXPIRE` argument, as `SET` reads it.
fn set_px(arg: &[u8]) -> Result<Duration, ReplyError> {
    let ms = parse_integer(arg).ok_or_else(ReplyError::not_an_integer)?;
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(ReplyError::new(
            "ERR",
            "invalid expire time in 'set' command",
        )),
    }
}

impl Run<'_> {
    /// `KEYS[i]` (1-based; a fractional or missing index is Lua's `nil`, which
    /// `redis.call` refuses).
    fn key(&self, i: f64) -> Result<&[u8], ReplyError> {
        let found = (i.fract() == 0.0 && i >= 1.0)
            .then(|| self.keys.get(i as usize - 1))
            .flatten();
        found.map(Vec::as_slice).ok_or_else(|| {
            script_error("Lua redis() command arguments must be strings or integers")
        })
    }

    /// `ARGV[i]` (1-based), `None` for Lua's `nil`.
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.argv.get(i - 1).map(Vec::as_slice)
    }

    /// `ARGV[i]` where the script would fail on `nil`.
    fn required(&self, i: usize) -> Result<&[u8], ReplyError> {
        self.arg(i).ok_or_else(|| {
            script_error("Lua redis() command arguments must be strings or integers")
        })
    }

    /// `tonumber(ARGV[i])` where the script would fail on `nil`.
    fn number(&self, i: usize) -> Result<f64, ReplyError> {
        self.arg(i)
            .and_then(to_number)
            .ok_or_else(|| script_error("attempt to use a nil value as a number"))
    }

    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(key, self.now)
    }

    fn set_px(&mut self, key: &[u8], value: &[u8], px: &[u8]) -> Result<(), ReplyError> {
        let px = set_px(px)?;
        self.store.set(key, value, Some(px), self.now);
        Ok(())
    }

    fn pexpire(&mut self, key: &[u8], ms: &[u8]) -> Result<(), ReplyError> {
        let ms = parse_integer(ms).ok_or_else(ReplyError::not_an_integer)?;
        self.store.pexpire(key, ms, self.now);
        Ok(())
    }

    /// Runs `script`.
    pub(super) fn run(mut self, script: Known) -> Reply {
        match script {
            Known::Acquire => self.acquire(),
            Known::Extend => self.extend(),
            Known::ExtendMany => self.extend_many(),
            Known::Release => self.release(),
            Known::ReleaseOne => self.release_one(),
            Known::Mark => Ok(self.mark()),
            Known::FenceSync => self.fence_sync(),
        }
    }

    fn acquire(&mut self) -> Reply {
        let n = self.number(3)?;
        for i in 1..=loop_count(n) {
            let key = self.key(i as f64)?.to_vec();
            if self.store.exists(&key, self.now) {
                let pttl = self.store.pttl(&key, self.now);
                return Ok(Value::Array(vec![Value::Int(0), Value::Int(pttl)]));
            }
        }
        for i in 1..=loop_count(n) {
            let key = self.key(i as f64)?.to_vec();
            let (token, ttl) = (self.required(1)?.to_vec(), self.required(2)?.to_vec());
            self.set_px(&key, &token, &ttl)?;
        }
        let mut fence = 0.0;
        if self.arg(4) == Some(b"1") {
            for i in 1..=loop_count(n) {
                let counter = self.key(n + i as f64)?.to_vec();
                let c = self.store.incr(&counter, self.now)? as f64;
                let keep = self.number(5)?;
                if (self.store.pttl(&counter, self.now) as f64) < keep {
                    let ms = self.required(5)?.to_vec();
                    self.pexpire(&counter, &ms)?;
                }
                if c > fence {
                    fence = c;
                }
            }
        }
        Ok(Value::Array(vec![Value::Int(1), Value::Int(fence as i64)]))
    }

    fn extend(&mut self) -> Reply {
        let n = self.number(3)?;
        let token = self.required(1)?.to_vec();
        for i in 1..=loop_count(n) {
            let key = self.key(i as f64)?.to_vec();
            let v = self.get(&key);
            if v.as_deref() != Some(&token) && !v.is_some_and(|v| is_marked(&v, &token)) {
                return Ok(Value::Int(0));
            }
        }
        for i in 1..=loop_count(n) {
            let key = self.key(i as f64)?.to_vec();
            let ttl = self.required(2)?.to_vec();
            self.pexpire(&key, &ttl)?;
        }
        Ok(Value::Int(1))
    }

    fn extend_many(&mut self) -> Reply {
        let mut out = Vec::new();
        let mut k = 0.0;
        let leases = self.number(1)?;
        // `for j = 0, leases - 1`
        for j in 0..loop_count(leases) {
            let n = self.number(2 + 3 * j)?;
            let token = self.arg(3 + 3 * j).map(<[u8]>::to_vec);
            let mut ok = 1;
            for i in 1..=loop_count(n) {
                let key = self.key(k + i as f64)?.to_vec();
                let v = self.get(&key);
                // `v ~= token and v ~= token .. '+'` (a `nil` token fails at the `..`,
                // reached only when `v` is not `nil` too).
                let Some(token) = token.as_deref() else {
                    if v.is_none() {
                        continue;
                    }
                    return Err(script_error("attempt to concatenate a nil value"));
                };
                if v.as_deref() != Some(token) && !v.is_some_and(|v| is_marked(&v, token)) {
                    ok = 0;
                    break;
                }
            }
            if ok == 1 {
                for i in 1..=loop_count(n) {
                    let key = self.key(k + i as f64)?.to_vec();
                    let ttl = self.required(4 + 3 * j)?.to_vec();
                    self.pexpire(&key, &ttl)?;
                }
            }
            out.push(Value::Int(ok));
            k += n;
        }
        Ok(Value::Array(out))
    }

    fn release(&mut self) -> Reply {
        let n = self.number(2)?;
        let token = self.required(1)?.to_vec();
        // ARGV[4..3+n] are the channels; the hand-off's arguments follow them.
        let h = 3 + loop_count(n);
        if let Some(next) = self.arg(h + 1).map(<[u8]>::to_vec) {
            let carried = self.arg(h + 3) == Some(b"1");
            let (mut whole, mut marked) = (true, false);
            for i in 1..=loop_count(n) {
                let key = self.key(i as f64)?.to_vec();
                let v = self.get(&key);
                if v.as_deref() != Some(&token) {
                    if carried && v.is_some_and(|v| is_marked(&v, &token)) {
                        marked = true;
                    } else {
                        whole = false;
                    }
                }
            }
            if whole {
                let mut next = next;
                if marked {
                    next.push(b'+');
                }
                for i in 1..=loop_count(n) {
                    let key = self.key(i as f64)?.to_vec();
                    let ttl = self.required(h + 2)?.to_vec();
                    self.set_px(&key, &next, &ttl)?;
                }
                return Ok(Value::Int(if marked { 3 } else { 2 }));
            }
            if carried {
                return Ok(Value::Int(0));
            }
        }
        let announce = self.arg(3) == Some(b"1");
        let (mut released, mut foreign) = (0, 0);
        for i in 1..=loop_count(n) {
            let key = self.key(i as f64)?.to_vec();
            let v = self.get(&key);
            let awaited = v.as_deref().is_some_and(|v| is_marked(v, &token));
            if awaited || v.as_deref() == Some(&token) {
                self.store.del(&key, self.now);
                if awaited && announce {
                    let channel = self.required(3 + i)?.to_vec();
                    self.store.publish(&channel);
                }
                released += 1;
            } else if v.is_some() {
                foreign += 1;
            }
        }
        Ok(Value::Int(if released > 0 {
            1
        } else if foreign > 0 {
            -1
        } else {
            0
        }))
    }

    fn release_one(&mut self) -> Reply {
        let key = self.key(1.0)?.to_vec();
        let token = self.required(1)?.to_vec();
        let v = self.get(&key);
        if v.as_deref() == Some(&token) {
            return Ok(Value::Int(i64::from(self.store.del(&key, self.now))));
        }
        let Some(v) = v else {
            return Ok(Value::Int(0));
        };
        if !is_marked(&v, &token) {
            return Ok(Value::Int(-1));
        }
        self.store.del(&key, self.now);
        let channel = self.required(2)?.to_vec();
        self.store.publish(&channel);
        Ok(Value::Int(1))
    }

    fn mark(&mut self) -> Value {
        let mut held = 1;
        for key in self.keys {
            match self.store.get(key, self.now) {
                None => held = 0,
                Some(v) if v.last() != Some(&b'+') => {
                    self.store.append(key, b"+", self.now);
                }
                Some(_) => {}
            }
        }
        Value::Int(held)
    }

    fn fence_sync(&mut self) -> Reply {
        let t = self.arg(1).and_then(to_number);
        let keep = self.arg(2).and_then(to_number);
        for key in self.keys {
            let c = to_number(
                &self
                    .store
                    .get(key, self.now)
                    .unwrap_or_else(|| b"0".to_vec()),
            );
            let p = self.store.pttl(key, self.now) as f64;
            let (Some(c), Some(t)) = (c, t) else {
                return Err(script_error("attempt to compare nil with number"));
            };
            if c < t {
                let Some(keep) = keep else {
                    return Err(script_error("bad argument #2 to 'max' (number expected)"));
                };
                let token = self.required(1)?.to_vec();
                self.set_px(key, &token, &lua_number_arg(p.max(keep)))?;
            } else {
                let Some(keep) = keep else {
                    return Err(script_error("attempt to compare number with nil"));
                };
                if p < keep {
                    let ms = self.required(2)?.to_vec();
                    self.pexpire(key, &ms)?;
                }
            }
        }
        Ok(Value::Int(1))
    }
}
