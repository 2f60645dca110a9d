//! The scripts of read/write leases (see `redlock/shared/` for the safety argument).
//! Permits need none: each permit is an ordinary lease.
//!
//! Per resource and node: the lock key (the exclusive one) holds a writer's token, or the
//! readers' marker [`READERS`] while any reader is admitted, with an expiry never shorter
//! than the latest reader's; the readers ZSET holds one member per reader (its token),
//! scored with its expiry in the node's own clock (`TIME`, ms), trimmed by every script;
//! the intent key holds a waiting writer's id. The marker is `readers` (never a token:
//! tokens are 32 hex digits); a waiter's mark makes it `readers+`. A writer's acquisition is the exclusive one
//! (the lock key must not exist), so the marker keeps writers and exclusive leases out.

use std::sync::LazyLock;

use super::script::Script;

/// Read acquire: `KEYS = [lock, readers, intent]`; `ARGV = [token, ttl_ms]`.
/// Returns `{1, 0}` when admitted; `{0, pttl}` when a writer holds the lock key or a
/// writer waits (the intent key exists), with that key's remaining time.
pub(crate) static READ_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local v = redis.call('GET', KEYS[1])
if v and v ~= 'readers' and v ~= 'readers+' then
  return {0, redis.call('PTTL', KEYS[1])}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, redis.call('PTTL', KEYS[3])}
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
if not v then
  redis.call('SET', KEYS[1], 'readers', 'PX', ttl)
elseif redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, 0}",
    )
});

/// Read extend: `KEYS = [lock, readers]`; `ARGV = [token, ttl_ms]`. Compare-only: when our
/// member is still live (and the marker there), its expiry becomes `now + ttl` and the
/// marker's and the ZSET's are raised to at least that. Returns 1 or 0.
pub(crate) static READ_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local v = redis.call('GET', KEYS[1])
if v ~= 'readers' and v ~= 'readers+' then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1",
    )
});

/// Read release: `KEYS = [lock, readers]`; `ARGV = [token, announce, channel]`. Removes our
/// member only; the last reader out deletes the marker and, when `announce` is `1` and a
/// waiter marked it, publishes on the channel. Returns 1 (removed), 0 (not there:
/// expired) or -1 (not there, and a writer holds the lock key).
pub(crate) static READ_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::must_reach(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
local v = redis.call('GET', KEYS[1])
local marker = v == 'readers' or v == 'readers+'
if marker and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  if v == 'readers+' and ARGV[2] == '1' then redis.call('PUBLISH', ARGV[3], '1') end
end
if removed == 1 then return 1 end
if v and not marker then return -1 end
return 0",
    )
});

/// Write acquire: `KEYS = [lock, fence, intent]`;
/// `ARGV = [token, ttl_ms, fencing, fence_ttl_ms, waiter, intent_ms]`. [`ACQUIRE`] on one
/// key (the lock key must not exist: no writer, no exclusive lease, no reader's marker),
/// plus write preference: refused and `intent_ms` > 0 (the writer will try again), the
/// intent key takes `waiter` for `intent_ms` unless another writer's intent is there;
/// admitted, our own intent is deleted. Returns what [`ACQUIRE`] returns.
///
/// [`ACQUIRE`]: super::scripts::ACQUIRE
pub(crate) static WRITE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then
  if tonumber(ARGV[6]) > 0 then
    local i = redis.call('GET', KEYS[3])
    if not i or i == ARGV[5] then redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6]) end
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
local fence = 0
if ARGV[3] == '1' then
  fence = redis.call('INCR', KEYS[2])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
return {1, fence}",
    )
});

/// Intent withdrawal: `KEYS = [intent]`; `ARGV = [waiter]`. Deletes the intent if it is
/// this writer's (it got the lease, or gave up). Returns 1 or 0.
pub(crate) static INTENT_WITHDRAW: LazyLock<Script> = LazyLock::new(|| {
    Script::must_reach(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});
