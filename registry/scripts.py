"""Lua scripts that make promotion and rollback atomic in one round trip."""

from __future__ import annotations

# KEYS: versions, aliases, stack, history
# ARGV: alias, version, who, at, channel, model, stack_limit, history_limit
# Returns false when the version does not exist, else the event JSON ("" when already there).
PROMOTE = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return false end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old == ARGV[2] then return '' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if old then
  redis.call('RPUSH', KEYS[3], old)
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
end
local event = cjson.encode({action='promote', alias=ARGV[1],
  from_version=old and tonumber(old) or cjson.null, to_version=tonumber(ARGV[2]),
  who=ARGV[3], at=ARGV[4]})
redis.call('RPUSH', KEYS[4], event)
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[8]), -1)
redis.call('PUBLISH', ARGV[5], cjson.encode({model=ARGV[6], alias=ARGV[1],
  version=tonumber(ARGV[2])}))
return event
"""

# KEYS: versions, aliases, stack, history
# ARGV: alias, who, at, channel, model, history_limit
# Returns false when there is nothing to roll back to, else the event JSON.
ROLLBACK = """
local prev = redis.call('RPOP', KEYS[3])
if not prev then return false end
local old = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], prev)
local event = cjson.encode({action='rollback', alias=ARGV[1],
  from_version=old and tonumber(old) or cjson.null, to_version=tonumber(prev),
  who=ARGV[2], at=ARGV[3]})
redis.call('RPUSH', KEYS[4], event)
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[6]), -1)
redis.call('PUBLISH', ARGV[4], cjson.encode({model=ARGV[5], alias=ARGV[1],
  version=tonumber(prev)}))
return event
"""

# KEYS: seq. ARGV: floor. Raises the version counter to at least ``floor`` (used by rebuild).
RAISE_SEQ = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
