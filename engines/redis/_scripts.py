"""The Lua scripts of the Redis slot ledger (not API).

Each script reads the Redis server's clock (``TIME``), so the replicas' own clocks never
matter, and touches only the keys it is given.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "PUBLISH", "RENEW"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_EXPIRE_WITH_NEWEST = """
local function expire_with_newest(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] then
    redis.call('PEXPIREAT', key, math.floor(tonumber(newest[2])))
  end
end
"""

# KEYS[1] the user's slot set; ARGV: slot id, limit, lease ttl (ms).
# Returns the user's count with this slot, or minus the count when the user is full.
# Acquiring a slot already held renews it (a retried call never takes two slots).
ACQUIRE: Final = (
    _NOW
    + _EXPIRE_WITH_NEWEST
    + """
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local held = redis.call('ZCARD', key)
if not redis.call('ZSCORE', key, ARGV[1]) then
  if held >= tonumber(ARGV[2]) then
    return -held
  end
  held = held + 1
end
redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[1])
expire_with_newest(key)
return held
"""
)

# KEYS: one slot set per lease; ARGV[1] lease ttl (ms), then (slot id, limit) per key.
# Renews each lease; re-takes a lease that vanished (Redis restarted empty, or the lease
# expired during an outage) while the user has room; reports the ones it could not re-take.
RENEW: Final = (
    _NOW
    + _EXPIRE_WITH_NEWEST
    + """
local expiry = now + tonumber(ARGV[1])
local restored, lost = 0, {}
for i, key in ipairs(KEYS) do
  local slot, limit = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, slot) then
    redis.call('ZADD', key, expiry, slot)
  elseif redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, expiry, slot)
    restored = restored + 1
  else
    lost[#lost + 1] = i
  end
  expire_with_newest(key)
end
return {restored, lost}
"""
)

# KEYS: the stream of each event, in publishing order (a stream may repeat);
# ARGV: maxlen, window (ms), the stream entry field, then one payload per key.
# Appends each event (XADD MAXLEN ~), then sets each stream's expiry once; returns one
# flag per event: 1 appended, 0 refused (a key of another type, say).
PUBLISH: Final = """
local maxlen, window, field = ARGV[1], ARGV[2], ARGV[3]
local appended, streams = {}, {}
for i, key in ipairs(KEYS) do
  local id = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', field, ARGV[3 + i])
  if type(id) == 'table' and id.err then
    appended[i] = 0
  else
    appended[i] = 1
    streams[key] = true
  end
end
for key in pairs(streams) do
  redis.call('PEXPIRE', key, window)
end
return appended
"""
