"""The Lua scripts of the Redis backend, and the value that stands for a lease in Redis.

Each script does in one step what must not interleave with another node: claim, renew or release a
lease (compare-and-delete, so a node never releases a lease that passed to another); append to a
stage's log or save its state only while holding its lease (fencing); compare-and-set a club;
remove presence entries unless they changed; count a hit in a sliding window on Redis's clock.
Every script touches keys of one hash tag only, so they run on a Redis Cluster too.
"""

from __future__ import annotations

import msgpack

from server.backend.base import Lease

__all__ = [
    "APPEND",
    "CLAIM",
    "HIT",
    "PRESENCE_LEAVE",
    "RELEASE",
    "RENEW",
    "SAVE_CLUB",
    "SAVE_STATE",
    "lease_value",
]

# SET NX PX, or recognise our own claim (a retry whose first attempt succeeded but whose reply was lost).
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: log, owner. ARGV: id, payload, maxlen, lease value ('' for none).
# 1 appended, 0 already there (a retry), -1 lease lost, -2 out of order.
APPEND = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1], 'e', ARGV[2])
if type(added) ~= 'table' or not added.err then return 1 end
if not string.find(added.err, 'equal or smaller', 1, true) then return redis.error_reply(added.err) end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 1 and found[1][2][2] == ARGV[2] then return 0 end
return -2
"""
# KEYS: state, owner. ARGV: payload, lease value. 1 saved, 0 lease lost.
SAVE_STATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
# Compare-and-set of a club. KEYS: club. ARGV: expected version (0: must not exist), payload.
# {1, new version} saved (or a retry of the save that made the stored version), {0, stored version}.
SAVE_CLUB = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local expected = tonumber(ARGV[1])
if v ~= expected then
  if v == expected + 1 and redis.call('HGET', KEYS[1], 'data') == ARGV[2] then return {1, v} end
  return {0, v}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'data', ARGV[2])
return {1, v + 1}
"""
# Compare-and-HDEL: ARGV is field, expected value, field, expected value...
PRESENCE_LEAVE = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n
"""
# Sliding window log in a sorted set, on Redis's clock (one clock for all nodes), in microseconds.
# ARGV: window_us, limit, member (unique per hit). Returns {allowed, retry_after_us}.
HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, 0} end
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""

# The people ledger's compare-and-append: entry ARGV[1] (0-based) only when the list holds exactly
# that many; an identical entry already at that index is a retry that landed. Returns 1 or 0.
PEOPLE_APPEND = """
local n = redis.call('LLEN', KEYS[1])
local i = tonumber(ARGV[1])
if n == i then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  return 1
end
if i < n and redis.call('LINDEX', KEYS[1], i) == ARGV[2] then return 1 end
return 0
"""


def lease_value(lease: Lease) -> bytes:
    value: bytes = msgpack.packb([lease.node_id, lease.node_url, lease.token])
    return value
