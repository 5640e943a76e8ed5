"""Lua scripts that make promotion, rollback, archiving and deletion atomic in one round trip."""

from __future__ import annotations

# KEYS: versions, aliases, stack, history
# ARGV: alias, version, who, at, channel, model, stack_limit, history_limit, checked
# Returns false when the version does not exist, "archived" when it is archived, "moved" when
# the alias no longer points where the schema check found it (``checked``: that version, "-"
# for nowhere; "" skips the check, for a forced promotion), else the event JSON ("" when
# already there).
PROMOTE = """
local meta = redis.call('HGET', KEYS[1], ARGV[2])
if not meta then return false end
local archived = cjson.decode(meta)['archived_at']
if archived and archived ~= cjson.null then return 'archived' end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old == ARGV[2] then return '' end
if ARGV[9] ~= '' and (old or '-') ~= ARGV[9] then return 'moved' end
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

# KEYS: versions, aliases, history
# ARGV: version, new metadata JSON ('' deletes the version), event JSON, channel, notice JSON,
#       history_limit, prefix of the alias stacks' keys
# Archives, unarchives or deletes a version unless an alias serves it, and takes it off every
# rollback stack so that a rollback never lands on it. Returns false when the version does not
# exist, the aliases that serve it, or "" when done.
RETIRE = """
local version = ARGV[1]
if redis.call('HEXISTS', KEYS[1], version) == 0 then return false end
local aliases = redis.call('HGETALL', KEYS[2])
local serving = {}
for i = 1, #aliases, 2 do
  if aliases[i + 1] == version then table.insert(serving, aliases[i]) end
end
if #serving > 0 then return serving end
-- A stack exists only for an alias in the aliases hash, so its key follows from the name.
for i = 1, #aliases, 2 do
  redis.call('LREM', ARGV[7] .. aliases[i], 0, version)
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], version)
else
  redis.call('HSET', KEYS[1], version, ARGV[2])
end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return ''
"""

# KEYS: seq. ARGV: floor. Raises the version counter to at least ``floor`` (used by rebuild).
RAISE_SEQ = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
