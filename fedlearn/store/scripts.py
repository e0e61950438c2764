"""The Lua scripts of the store, each atomic on one Redis Cluster slot.

Every script receives all its keys in KEYS (never builds a key name), and all keys of one
call share one hash tag, so the same script runs on a single Redis and on a cluster. Each
script does every check before its first write: Redis does not roll a script back, so
"refuse the whole batch" means "decide before writing". Only Redis 6.2 commands are used.

They are registered once per client (``Scripts(client)``): redis-py sends EVALSHA and loads
the script on a NOSCRIPT answer, on whichever node the keys live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

# KEYS: stream, seen (this window), seen (previous window)
# ARGV: maxlen, seen_ttl_seconds, then event_id, payload pairs
# -> {"OK", accepted, duplicates} or {"FULL", stream_length}
APPEND_EVENTS = """
local maxlen = tonumber(ARGV[1])
local fresh, in_batch, dups = {}, {}, 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if in_batch[id] or redis.call('SISMEMBER', KEYS[2], id) == 1
      or redis.call('SISMEMBER', KEYS[3], id) == 1 then
    dups = dups + 1
  else
    in_batch[id] = true
    fresh[#fresh + 1] = i
  end
end
if #fresh == 0 then return {'OK', 0, dups} end
local len = redis.call('XLEN', KEYS[1])
if len + #fresh > maxlen then return {'FULL', len} end
for _, i in ipairs(fresh) do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
  redis.call('SADD', KEYS[2], ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {'OK', #fresh, dups}
"""

# Lua: compares two decimal strings of digits as whole numbers (-1, 0, 1), whatever their
# length: stream ids' parts exceed the 2^53 a Lua number holds exactly. Prepended to scripts.
CMP_NUM = """
local function cmp_num(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
"""

# KEYS: lease, stream, applied log, users set, commit token, then one delta key per user,
#       then the dead-letter stream
# ARGV: owner, group, token, base, generation, n_users, n_ids, n_log,
#       then one msgpack array of [user, delta, last_event, events, gate] per user (five
#       arguments a user cost the trainer's redis-py ~0.5 us per event to pack), then the entry
#       ids joined by newlines in one argument (packing ~1,000 arguments cost the trainer
#       ~0.8 us per event), then log payloads,
#       then the dead-letter maxlen and (kind, reason, entry_id, user, raw, at) per dead letter
# -> {"OK", acked} | {"DUP"} | {"LEASE", holder or nil} | {"STALE", user, stored, new}
COMMIT_BATCH = (
    CMP_NUM
    + """
local function cmp_id(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  local c = cmp_num(ams, bms)
  if c ~= 0 then return c end
  return cmp_num(aseq, bseq)
end

if redis.call('GET', KEYS[5]) == ARGV[3] then return {'DUP'} end
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then return {'LEASE', holder} end

local n_users, n_ids, n_log = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local first_log = 11
-- split (and counted) before anything is written: a script's error undoes nothing
local users = cmsgpack.unpack(ARGV[9])
if #users ~= n_users then
  return redis.error_reply('commit: ' .. #users .. ' users packed, not ' .. n_users)
end
local ids = {}
for id in string.gmatch(ARGV[10], '[^\\n]+') do ids[#ids + 1] = id end
if #ids ~= n_ids then
  return redis.error_reply('commit: ' .. #ids .. ' entry ids, not ' .. n_ids)
end
for u = 1, n_users do
  local stored = redis.call('HGET', KEYS[5 + u], 'last_event')
  if stored and cmp_id(users[u][3], stored) <= 0 then
    return {'STALE', users[u][1], stored, users[u][3]}
  end
end

for u = 1, n_users do
  local user = users[u]
  redis.call('HSET', KEYS[5 + u], 'delta', user[2], 'last_event', user[3],
             'base', ARGV[4], 'generation', ARGV[5], 'events', user[4], 'gate', user[5])
  redis.call('SADD', KEYS[4], user[1])
end
local acked = 0
for s = 1, n_ids, 500 do
  acked = acked + redis.call('XACK', KEYS[2], ARGV[2], unpack(ids, s, math.min(s + 499, n_ids)))
end
for i = first_log, first_log + n_log - 1 do
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[i])
end
local first_dead = first_log + n_log
for i = first_dead + 1, #ARGV, 6 do
  redis.call('XADD', KEYS[6 + n_users], 'MAXLEN', '~', ARGV[first_dead], '*',
             'kind', ARGV[i], 'reason', ARGV[i + 1], 'entry_id', ARGV[i + 2],
             'user', ARGV[i + 3], 'raw', ARGV[i + 4], 'at', ARGV[i + 5])
end
redis.call('SET', KEYS[5], ARGV[3])
return {'OK', acked}
"""
)

# KEYS: one user's delta hash each.  ARGV: the fields to read.
# -> per key, HMGET's answer (nil for an absent field, and all nil for an absent user): a
# trainer loads a batch's new users in one command rather than a pipeline of one HMGET each,
# which redis-py packs and answers argument by argument in Python (~0.4 us per event).
GET_DELTAS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end
return out
"""

# KEYS: stream.  ARGV: group, consumer, min_idle_ms, start id, count
# -> {next start id, id1, payload1 or nil, id2, ...}; nil marks an entry deleted from the
# stream (Redis 6.2's XAUTOCLAIM answers such an entry with a bare nil, losing its id; JUSTID
# keeps the ids, and the script fetches each payload itself)
CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5], 'JUSTID')
local out = {r[1]}
for _, id in ipairs(r[2]) do
  local found = redis.call('XRANGE', KEYS[1], id, id)[1]
  local payload = false
  if found then
    payload = ''
    local fields = found[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then payload = fields[i + 1] end
    end
  end
  out[#out + 1] = id
  out[#out + 1] = payload
end
-- Redis >= 7 drops deleted entries from the PEL itself and lists their ids apart (r[3]):
-- they come back as deleted too, as on 6.2 (acknowledging them later is a no-op)
for _, id in ipairs(r[3] or {}) do
  out[#out + 1] = id
  out[#out + 1] = false
end
return out
"""

# KEYS: lease.  ARGV: owner, ttl_ms.  -> 1 when ``owner`` holds the lease afterwards, else 0
ACQUIRE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease.  ARGV: owner, ttl_ms.  -> 1 renewed, 0 not the holder
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease.  ARGV: owner.  -> 1 released, 0 not the holder
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: blob key, history list, pruned hash.  ARGV: blob, history entry (JSON), version
# -> "OK" | "SAME" (already published with these bytes) | "EXISTS" (other bytes)
#    | "PRUNED" (published once, its blob deleted: the id is never reused)
PUT_BASE = """
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 'PRUNED' end
local old = redis.call('GET', KEYS[1])
if old then
  if old == ARGV[1] then return 'SAME' end
  return 'EXISTS'
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 'OK'
"""

# KEYS: blob key of the version, current pointer.
# ARGV: version, check ("0" none, "1" expect ARGV[3], "2" expect no current), expected
# -> {"OK", previous} | {"UNKNOWN"} | {"CONFLICT", actual}
SET_CURRENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'UNKNOWN'} end
local cur = redis.call('GET', KEYS[2])
if (ARGV[2] == '1' and cur ~= ARGV[3]) or (ARGV[2] == '2' and cur) then
  return {'CONFLICT', cur}
end
redis.call('SET', KEYS[2], ARGV[1])
return {'OK', cur}
"""

# KEYS: blob key of the version, current pointer, pruned hash.  ARGV: version, now (unix s)
# -> "OK" (deleted now) | "CURRENT" (refused: it is current) | "ABSENT" (no blob: pruned before,
# or never published). Checked and deleted in one step, so a rollback to the version either
# lands first (and the version stays) or finds it pruned (and says so).
PRUNE_BASE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then return 'CURRENT' end
if redis.call('DEL', KEYS[1]) == 0 then return 'ABSENT' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 'OK'
"""

# KEYS: the user's records hash, the user's order set (same shard tag)
# ARGV: prediction id, record, now_ms, ttl_ms, max_records, max_bytes
# -> {"OK", dropped} | {"TOO_BIG", record bytes}
# Records older than the TTL go first, then the oldest until both quotas hold, so the user's
# records never exceed max_records and max_bytes (of record bytes) after the call.
PUT_PREDICTION = """
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_records, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
if #ARGV[2] > max_bytes then return {'TOO_BIG', #ARGV[2]} end
local dropped = 0
local function drop(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  dropped = dropped + 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do drop(id) end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then drop(ARGV[1]); dropped = dropped - 1 end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local used = #ARGV[2]
for _, id in ipairs(ids) do used = used + redis.call('HSTRLEN', KEYS[1], id) end
local count, oldest = #ids + 1, 1
while count > max_records or used > max_bytes do
  used = used - redis.call('HSTRLEN', KEYS[1], ids[oldest])
  drop(ids[oldest])
  count, oldest = count - 1, oldest + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'OK', dropped}
"""

# KEYS: a user's records hash per id asked (one shard's: same tag); ARGV: the ids, in order
# -> each record, or nil where it is absent. One command, where a pipeline of HGETs cost the
# trainer a few microseconds of Python per record (BENCHMARKS.md, "Trainer speed").
GET_PREDICTIONS = """
local found = {}
for i = 1, #KEYS do found[i] = redis.call('HGET', KEYS[i], ARGV[i]) end
return found
"""

# KEYS: the limit's state (a theoretical arrival time, TAT, in ms), the user's revocation
# record (store/revocations.py).
# ARGV: ms per unit (1000 / rate), burst (units), units asked, the token's issue time ("" to
# skip the revocation check)
# -> {1, 0} allowed (and counted) | {0, ms to wait} refused (nothing counted)
# | {-1, revoked at} the token predates its user's revocation (nothing counted)
# GCRA: a request of n units is allowed when the TAT pushed by n intervals stays within
# ``burst`` intervals of now. Redis' own clock is used, so every API process agrees. The
# revocation check rides along so that a rate-limited request costs one round trip, not two.
RATE_LIMIT = """
if ARGV[4] ~= '' then
  local revoked = redis.call('GET', KEYS[2])
  if revoked and tonumber(ARGV[4]) <= tonumber(revoked) then return {-1, revoked} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local new_tat = tat + n * interval
local wait = new_tat - burst * interval - now
if wait > 0 then return {0, tostring(wait)} end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, '0'}
"""

# KEYS: staged features, staged titles, features, titles, version
# -> the catalog's new version. Both hashes move at once, so a reader sees the old catalog or
# the new one, never a mix; an empty staged titles hash means "no titles" (RENAME would fail).
SWAP_CATALOG = """
redis.call('RENAME', KEYS[1], KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[4])
else
  redis.call('DEL', KEYS[4])
end
return redis.call('INCR', KEYS[5])
"""


# --- aggregation rounds (store/rounds.py) ---------------------------------------------

# KEYS: record, index, open.  ARGV: round id, created_at, then field/value pairs -> 1 | 0
ROUND_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: record, open.  ARGV: round id, allowed statuses ("a,b"; "" any), new status,
# terminal ("1"/"0"), then field/value pairs -> {"OK", previous} | {"STATUS", current}
# | {"MISSING"}
ROUND_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {'MISSING'} end
if ARGV[2] ~= '' then
  local ok = false
  for s in string.gmatch(ARGV[2], '[^,]+') do
    if s == cur then ok = true end
  end
  if not ok then return {'STATUS', cur} end
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], unpack(ARGV, 5))
if ARGV[4] == '1' then redis.call('SREM', KEYS[2], ARGV[1]) end
return {'OK', cur}
"""

# KEYS: partial, candidates of the attempt.  ARGV: attempt, then field/value pairs
# -> the winning attempt (the first to commit; later ones are duplicates)
ROUND_COMMIT_PARTIAL = """
local have = redis.call('HGET', KEYS[1], 'attempt')
if have then return have end
redis.call('HSET', KEYS[1], 'attempt', ARGV[1], unpack(ARGV, 2))
redis.call('PERSIST', KEYS[2])
return ARGV[1]
"""

# KEYS: candidates, snapshots.  ARGV: cursor, count -> {next cursor, promoted}
# A candidate replaces a snapshot only if it is later in (generation, last_event) order.
ROUND_PROMOTE_SNAPSHOTS = (
    CMP_NUM
    + """
local function later(new, old)
  local pattern = '^(%d+)|(%d+)-(%d+)|'
  local ng, nms, nseq = string.match(new, pattern)
  local og, oms, oseq = string.match(old, pattern)
  if not og then return true end
  local c = cmp_num(ng, og)
  if c == 0 then c = cmp_num(nms, oms) end
  if c == 0 then c = cmp_num(nseq, oseq) end
  return c > 0
end
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items, moved = r[2], 0
for i = 1, #items, 2 do
  local old = redis.call('HGET', KEYS[2], items[i])
  if not old or later(items[i + 1], old) then
    redis.call('HSET', KEYS[2], items[i], items[i + 1])
    moved = moved + 1
  end
end
return {r[1], moved}
"""
)


@dataclass(frozen=True)
class Scripts:
    """The scripts registered on one client (``Redis`` or ``RedisCluster``)."""

    append_events: Any
    commit_batch: Any
    get_deltas: Any
    claim: Any
    acquire_lease: Any
    renew_lease: Any
    release_lease: Any
    put_base: Any
    set_current: Any
    prune_base: Any
    swap_catalog: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(
            append_events=client.register_script(APPEND_EVENTS),
            commit_batch=client.register_script(COMMIT_BATCH),
            get_deltas=client.register_script(GET_DELTAS),
            claim=client.register_script(CLAIM),
            acquire_lease=client.register_script(ACQUIRE_LEASE),
            renew_lease=client.register_script(RENEW_LEASE),
            release_lease=client.register_script(RELEASE_LEASE),
            put_base=client.register_script(PUT_BASE),
            set_current=client.register_script(SET_CURRENT),
            prune_base=client.register_script(PRUNE_BASE),
            swap_catalog=client.register_script(SWAP_CATALOG),
        )


def run_many(client: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Several ``(script, keys, args)`` calls in one round trip (a pipeline: on a cluster, one
    per node), each one's answer, or the error it answered, in its place.

    A trainer's pass over its shards makes one call of a script per shard; each was a send and
    a wait for a core on a busy machine. redis-py's pipeline would first ask ``SCRIPT EXISTS``
    (a round trip more); here EVALSHA goes as it is, and a call Redis answers NOSCRIPT (a first
    use, or after a restart or a ``SCRIPT FLUSH``) is made again alone by its script object,
    which loads the script on the node that holds the keys.
    """
    if not calls:
        return []
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    replies = pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):  # the script object loads it where the keys live
            script, keys, args = calls[i]
            try:
                replies[i] = script(keys=keys, args=args)
            except redis.ResponseError as exc:
                replies[i] = exc
    return replies
