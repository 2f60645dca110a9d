//! Lua scripts, run by SHA (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`).
//!
//! Every script takes `n` lock keys first; scripts that touch fencing counters take the `n`
//! counter keys after them. All are all-or-nothing per node.

use std::sync::LazyLock;

pub(crate) use super::script::Script;

/// Acquire: `KEYS[1..n]` lock keys, `KEYS[n+1..2n]` fencing counters;
/// `ARGV = [token, ttl_ms, n, fencing, fence_ttl_ms]`.
/// Returns `{1, fence}` when every key was free (and is now ours), else `{0, pttl}` of the
/// first key held by someone else. With fencing, each counter's expiry is raised to
/// `fence_ttl_ms` (never shortened; a counter without one gets it), see `fence_ttl.rs`.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = tonumber(ARGV[3])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {0, redis.call('PTTL', KEYS[i])}
  end
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
local fence = 0
if ARGV[4] == '1' then
  for i = 1, n do
    local c = redis.call('INCR', KEYS[n + i])
    if redis.call('PTTL', KEYS[n + i]) < tonumber(ARGV[5]) then
      redis.call('PEXPIRE', KEYS[n + i], ARGV[5])
    end
    if c > fence then fence = c end
  end
end
return {1, fence}",
    )
});

/// A lock value is the holder's token, with a `+` appended once someone in another process
/// waits for the lock ([`MARK`]): only then does the release publish a wake-up, so that an
/// uncontended release costs no `PUBLISH`. Both forms count as the holder's.
///
/// Extend: `KEYS[1..n]` lock keys; `ARGV = [token, ttl_ms, n]`. Compare-only: sets a new
/// expiry when every key still holds our token, never re-creates a key. Returns 1 or 0.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = tonumber(ARGV[3])
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if v ~= ARGV[1] and v ~= ARGV[1] .. '+' then return 0 end
end
for i = 1, n do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1",
    )
});

/// Extend many leases at once (the engine's batched auto-extension, see `lease/batch.rs`):
/// `KEYS` every lease's lock keys, one lease after the other;
/// `ARGV = [leases, n₁, token₁, ttl_ms₁, n₂, token₂, ttl_ms₂, ...]`. For each lease, exactly
/// what [`EXTEND`] does with its `n` keys, token and ttl: compare-only, all or nothing. No
/// lease's outcome depends on another's. Returns one 1 (extended) or 0 (refused) per lease,
/// in order.
pub(crate) static EXTEND_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local out = {}
local k = 0
for j = 0, tonumber(ARGV[1]) - 1 do
  local n = tonumber(ARGV[2 + 3 * j])
  local token = ARGV[3 + 3 * j]
  local ok = 1
  for i = k + 1, k + n do
    local v = redis.call('GET', KEYS[i])
    if v ~= token and v ~= token .. '+' then
      ok = 0
      break
    end
  end
  if ok == 1 then
    for i = k + 1, k + n do
      redis.call('PEXPIRE', KEYS[i], ARGV[4 + 3 * j])
    end
  end
  out[j + 1] = ok
  k = k + n
end
return out",
    )
});

/// Release: `KEYS[1..n]` lock keys;
/// `ARGV = [token, n, announce, channel_1..channel_n, next_token?, ttl_ms?, carried?]`.
///
/// The wake-up channels are arguments, not keys: a channel is never stored, and a Redis
/// Cluster node answers `TRYAGAIN` to a script with a declared key it does not have while
/// the slot migrates (a release would fail there until the migration ends).
///
/// With `next_token` (a local hand-off, see `handoff.rs`): when every key holds our unmarked
/// token, each becomes `next_token` with a fresh `ttl_ms` expiry — the next holder in this
/// process takes over without the keys ever being free — and 2 is returned. Otherwise (a key
/// expired, taken, or marked by a waiter elsewhere, who must get a fair chance) it is a
/// plain release.
///
/// With `carried` = `1` (the next holder already runs on our lease's validity), nothing is
/// ever deleted: a marked token moves too, keeping its mark (3 is returned, so the next
/// holder's own release gives the waiter its chance), and when a key no longer holds our
/// token the keys are left as they are and 0 is returned.
///
/// A plain release deletes the keys that hold our token and, when `announce` is `1` and a
/// waiter marked the key, announces the release on its channel (cleanups of failed attempts
/// do not: waking every waiter for a lock nobody held only makes contenders collide again).
/// Returns 1 (released something), 0 (nothing there: expired) or -1 (held by another token).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::must_reach(
        r"local n = tonumber(ARGV[2])
local h = 3 + n
if ARGV[h + 1] then
  local carried = ARGV[h + 3] == '1'
  local whole, marked = true, false
  for i = 1, n do
    local v = redis.call('GET', KEYS[i])
    if v ~= ARGV[1] then
      if carried and v == ARGV[1] .. '+' then marked = true else whole = false end
    end
  end
  if whole then
    local next = ARGV[h + 1]
    if marked then next = next .. '+' end
    for i = 1, n do
      redis.call('SET', KEYS[i], next, 'PX', ARGV[h + 2])
    end
    if marked then return 3 end
    return 2
  end
  if carried then return 0 end
end
local released, foreign = 0, 0
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  local awaited = false
  if v and v ~= ARGV[1] and v == ARGV[1] .. '+' then
    v, awaited = ARGV[1], true
  end
  if v == ARGV[1] then
    redis.call('DEL', KEYS[i])
    if awaited and ARGV[3] == '1' then redis.call('PUBLISH', ARGV[3 + i], '1') end
    released = released + 1
  elseif v then
    foreign = foreign + 1
  end
end
if released > 0 then return 1 end
if foreign > 0 then return -1 end
return 0",
    )
});

/// Release of one key (the common case), always announced: [`RELEASE`] with `n = 1` and
/// `announce = 1`, with as little work for the node as the classic compare-and-delete when
/// nobody waits. `KEYS = [lock key]`; `ARGV = [token, channel]`.
pub(crate) static RELEASE_ONE: LazyLock<Script> = LazyLock::new(|| {
    Script::must_reach(
        r"local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('DEL', KEYS[1]) end
if not v then return 0 end
if v ~= ARGV[1] .. '+' then return -1 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1",
    )
});

/// Mark: `KEYS` lock keys. A waiter appends `+` to each held key's value (once; `APPEND`
/// keeps the expiry), so that the holder's release publishes a wake-up. Returns 1 when every
/// key was held (and is now marked), 0 when one was free.
pub(crate) static MARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = 1
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v then
    held = 0
  elseif string.byte(v, -1) ~= 43 then
    redis.call('APPEND', KEYS[i], '+')
  end
end
return held",
    )
});

/// Fencing write-back: `KEYS` fencing counters; `ARGV = [token, fence_ttl_ms]`. Raises each
/// counter to at least `token` (never lowers one), and its expiry to `fence_ttl_ms` (never
/// shortens one; a counter without one gets it). Returns 1. Idempotent, so it can go to
/// every node, passed by or skipped too.
pub(crate) static FENCE_SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::must_reach(
        r"local t = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
for i = 1, #KEYS do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  local p = redis.call('PTTL', KEYS[i])
  if c < t then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', math.max(p, keep))
  elseif p < keep then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1",
    )
});

/// Every script, for loading on connect.
pub(crate) static ALL: LazyLock<[&'static Script; 12]> = LazyLock::new(|| {
    use super::shared_scripts as shared;
    [
        &*shared::READ_ACQUIRE,
        &*shared::READ_EXTEND,
        &*shared::READ_RELEASE,
        &*shared::WRITE_ACQUIRE,
        &*shared::INTENT_WITHDRAW,
        &*ACQUIRE,
        &*EXTEND,
        &*EXTEND_MANY,
        &*RELEASE,
        &*RELEASE_ONE,
        &*MARK,
        &*FENCE_SYNC,
    ]
});
