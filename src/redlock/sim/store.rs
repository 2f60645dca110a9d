//! One simulated node's data: string keys with millisecond expiries, and pub/sub channels.
//!
//! Expiry follows Redis: a key set with `PX ms` at `t` is there up to and including
//! `t + ms` (`PTTL` 0 at that instant) and gone at any instant after it (Redis's
//! `now > when`). Expired keys are removed lazily when touched, and in a sweep every
//! [`SWEEP_EVERY`] writes, so a long simulation does not keep them. Every operation takes
//! the `now` of its request: a script sees one instant from start to end, as in Redis.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

/// Writes between two sweeps of expired keys.
const SWEEP_EVERY: u32 = 1024;

/// An error reply: Redis's error code (`ERR`, `NOSCRIPT`, ...) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReplyError {
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ReplyError {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> ReplyError {
        ReplyError {
            code,
            message: message.into(),
        }
    }

    /// Redis's reply to an argument that is not an integer.
    pub(super) fn not_an_integer() -> ReplyError {
        ReplyError::new("ERR", "value is not an integer or out of range")
    }
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }
}

/// Keys and channels of one node.
#[derive(Default)]
pub(super) struct Store {
    entries: HashMap<Vec<u8>, Entry>,
    channels: HashMap<Vec<u8>, broadcast::Sender<()>>,
    writes: u32,
}

impl Store {
    /// The live entry of `key`, removing it when it expired.
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.is_expired(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn wrote(&mut self, now: Instant) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.entries.retain(|_, e| !e.is_expired(now));
        }
    }

    /// `GET`.
    pub(super) fn get(&mut self, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.live(key, now).map(|e| e.value.clone())
    }

    /// `EXISTS` of one key.
    pub(super) fn exists(&mut self, key: &[u8], now: Instant) -> bool {
        self.live(key, now).is_some()
    }

    /// `SET key value [PX ms]`: overwrites, and drops any earlier expiry.
    pub(super) fn set(&mut self, key: &[u8], value: &[u8], px: Option<Duration>, now: Instant) {
        let entry = Entry {
            value: value.to_vec(),
            expires_at: px.map(|px| now + px),
        };
        self.entries.insert(key.to_vec(), entry);
        self.wrote(now);
    }

    /// `DEL` of one key: whether it was there.
    pub(super) fn del(&mut self, key: &[u8], now: Instant) -> bool {
        let existed = self.live(key, now).is_some();
        self.entries.remove(key);
        existed
    }

    /// `PTTL`: -2 for a missing key, -1 for one without expiry, else whole milliseconds left.
    pub(super) fn pttl(&mut self, key: &[u8], now: Instant) -> i64 {
        match self.live(key, now) {
            None => -2,
            Some(Entry {
                expires_at: None, ..
            }) => -1,
            Some(Entry {
                expires_at: Some(at),
                ..
            }) => i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// `PEXPIRE key ms` with `ms` already parsed: a missing key gives `false`; a
    /// non-positive `ms` deletes the key (as Redis does for an expiry in the past).
    pub(super) fn pexpire(&mut self, key: &[u8], ms: i64, now: Instant) -> bool {
        if self.live(key, now).is_none() {
            return false;
        }
        match u64::try_from(ms) {
            Ok(ms) if ms > 0 => {
                if let Some(entry) = self.entries.get_mut(key) {
                    entry.expires_at = Some(now + Duration::from_millis(ms));
                }
            }
            _ => {
                self.entries.remove(key);
            }
        }
        self.wrote(now);
        true
    }

    /// `INCR`: keeps the key's expiry; a missing key starts at 0, without expiry.
    pub(super) fn incr(&mut self, key: &[u8], now: Instant) -> Result<i64, ReplyError> {
        let current = match self.live(key, now) {
            Some(entry) => parse_integer(&entry.value).ok_or_else(ReplyError::not_an_integer)?,
            None => 0,
        };
        let next = current
            .checked_add(1)
            .ok_or_else(|| ReplyError::new("ERR", "increment or decrement would overflow"))?;
        let value = next.to_string().into_bytes();
        match self.live(key, now) {
            Some(entry) => entry.value = value,
            None => self.set(key, &value, None, now),
        }
        self.wrote(now);
        Ok(next)
    }

    /// `APPEND`: keeps the key's expiry; returns the new length.
    pub(super) fn append(&mut self, key: &[u8], suffix: &[u8], now: Instant) -> usize {
        let len = match self.live(key, now) {
            Some(entry) => {
                entry.value.extend_from_slice(suffix);
                entry.value.len()
            }
            None => {
                self.set(key, suffix, None, now);
                suffix.len()
            }
        };
        self.wrote(now);
        len
    }

    /// Every key alive at `now`.
    pub(super) fn live_keys(&self, now: Instant) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_expired(now))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Bytes held by live keys and values (for `INFO`'s `used_memory`).
    pub(super) fn used_bytes(&self, now: Instant) -> usize {
        self.entries
            .iter()
            .filter(|(_, e)| !e.is_expired(now))
            .map(|(k, e)| k.len() + e.value.len())
            .sum()
    }

    /// `PUBLISH`: how many subscribers were told.
    pub(super) fn publish(&mut self, channel: &[u8]) -> i64 {
        let told = self
            .channels
            .get(channel)
            .map_or(0, |tx| tx.send(()).unwrap_or(0));
        if told == 0 {
            self.channels.remove(channel);
        }
        i64::try_from(told).unwrap_or(i64::MAX)
    }

    /// A subscription to `channel`.
    // Wake-on-release does not use it yet (waiters on simulated nodes poll).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn subscribe(&mut self, channel: &[u8]) -> broadcast::Receiver<()> {
        self.channels
            .entry(channel.to_vec())
            .or_insert_with(|| broadcast::channel(16).0)
            .subscribe()
    }

    /// Ends every subscription (their receivers see the channel closed).
    pub(super) fn drop_subscriptions(&mut self) {
        self.channels.clear();
    }

    /// Loses every key and subscription.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.channels.clear();
    }
}

/// An integer as Redis reads one (`string2ll`): an optional `-`, digits, no leading zero
/// (except `0` itself), nothing else.
pub(super) fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
