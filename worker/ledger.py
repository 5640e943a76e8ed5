"""The worker's side of the job ledger: claim a batch, mark it running, finish it.

Each script is atomic and costs one round trip for a whole batch. Work that does not depend on
the job (the in-flight index, stats, reply lists) is done once per batch, not once per job:
Redis time per job is what bounds throughput. A final status is never overwritten, which is
what makes redelivered jobs harmless under at-least-once delivery.
"""

from __future__ import annotations

from registry import keys

_FINAL = "st == 'succeeded' or st == 'failed' or st == 'cancelled'"
# Lua's unpack() is bounded by the C stack: variadic commands go out in slices of this size.
_SLICED = """
local function sliced(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end
"""

# KEYS: queue, this process's claim list. ARGV: most messages, '1' to include the claim list. A
# blocking LMOVE parked the batch's first message on the claim list; this moves more onto it and
# returns them (with what was parked, when asked). Until the batch is finished they live on that
# list, so a process that dies mid-batch leaves them where the sweeper finds them, never only in
# its memory.
CLAIM = (
    _SLICED
    + """
local out = {}
if ARGV[2] == '1' then out = redis.call('LRANGE', KEYS[2], 0, -1) end
local more = tonumber(ARGV[1]) - #out
if more > 0 then
  local popped = redis.call('RPOP', KEYS[1], more)
  if popped then
    sliced('LPUSH', KEYS[2], popped)
    for _, raw in ipairs(popped) do out[#out + 1] = raw end
  end
end
return out
"""
)

# KEYS: in-flight zset, queued index, busy marker. ARGV: now, worker, deadline, default ttl, job
# key prefix, batch deadline, then per job: id, model, alias, pinned version or '', probabilities,
# ttl, raw message ('' when the producer wrote the record at submission). Marks each job running
# (writing the record of a job sent by a stock Celery client, which has none yet), counts the
# attempt, indexes it in flight until ``deadline`` and resolves its alias (once per alias per
# batch). Returns 3 values per job: status before ('new' if no record), attempts, alias version.
START = (
    _SLICED
    + f"""
local out = {{}}
local inflight = {{}}
local resolved = {{}}
local started = {{}}
for b = 7, #ARGV, 7 do
  local id = ARGV[b]
  local key = ARGV[5] .. id
  started[#started + 1] = id
  local rec = redis.call('HMGET', key, 'status', 'model', 'alias', 'version', 'attempts')
  local st = rec[1]
  if {_FINAL} then
    out[#out + 1] = st; out[#out + 1] = 0; out[#out + 1] = false
  else
    if not st then
      rec = {{false, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], 0}}
      local ttl = ARGV[b + 5] ~= '' and ARGV[b + 5] or ARGV[4]
      redis.call('HSET', key, 'model', rec[2], 'alias', rec[3], 'version', rec[4],
        'probabilities', ARGV[b + 4], 'ttl', ttl, 'submitted_at', ARGV[1],
        'payload', ARGV[b + 6])
      redis.call('EXPIRE', key, ttl)
    end
    local attempts = (tonumber(rec[5]) or 0) + 1
    redis.call('HSET', key, 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2],
      'attempts', attempts)
    inflight[#inflight + 1] = ARGV[3]; inflight[#inflight + 1] = id
    local v = false
    if not rec[4] or rec[4] == '' then
      local akey = '{keys.PREFIX}:model:' .. rec[2] .. ':aliases'
      local cached = resolved[akey .. '|' .. rec[3]]
      if cached == nil then
        cached = redis.call('HGET', akey, rec[3])
        resolved[akey .. '|' .. rec[3]] = cached
      end
      v = cached
    end
    out[#out + 1] = st or 'new'; out[#out + 1] = attempts; out[#out + 1] = v
  end
end
sliced('ZADD', KEYS[1], inflight)
sliced('ZREM', KEYS[2], started)
if #inflight > 0 then
  redis.call('SET', KEYS[3], ARGV[6], 'EX', math.ceil(ARGV[6] - ARGV[1]) + 60)
end
return out
"""
)

# KEYS: in-flight zset, stats, claim list, busy marker. ARGV: now, default ttl, reply ttl, stats
# ttl, job key prefix, wake-up channel prefix, reply limit, then per job: id, status, version,
# predictions, probabilities, error. Writes each final record once (a job that is already final
# keeps its result), wakes its waiters, leaves the in-flight index and empties the claim list.
# Returns 1/0 per job (0: a duplicate that wrote nothing).
FINISH = (
    _SLICED
    + f"""
local out = {{}}
local counts = {{}}
local replies = {{}}
local ids = {{}}
for b = 8, #ARGV, 6 do
  local id = ARGV[b]
  local key = ARGV[5] .. id
  ids[#ids + 1] = id
  local rec = redis.call('HMGET', key, 'status', 'ttl', 'reply')
  local st = rec[1]
  if {_FINAL} then
    out[#out + 1] = 0
  else
    local status = ARGV[b + 1]
    redis.call('HSET', key, 'status', status, 'finished_at', ARGV[1],
      'predictions', ARGV[b + 3], 'proba', ARGV[b + 4], 'error', ARGV[b + 5], 'payload', '')
    -- A job that failed before its version was known keeps the version it was pinned to.
    if ARGV[b + 2] ~= '' then redis.call('HSET', key, 'version', ARGV[b + 2]) end
    redis.call('EXPIRE', key, rec[2] or ARGV[2])
    redis.call('PUBLISH', ARGV[6] .. id, '1')
    if rec[3] then
      local list = replies[rec[3]]
      if not list then list = {{}}; replies[rec[3]] = list end
      list[#list + 1] = id
    end
    counts[status] = (counts[status] or 0) + 1
    out[#out + 1] = 1
  end
end
for reply, list in pairs(replies) do
  sliced('RPUSH', reply, list)
  redis.call('LTRIM', reply, -tonumber(ARGV[7]), -1)
  redis.call('EXPIRE', reply, ARGV[3])
end
for status, n in pairs(counts) do redis.call('HINCRBY', KEYS[2], status, n) end
redis.call('EXPIRE', KEYS[2], ARGV[4])
sliced('ZREM', KEYS[1], ids)
redis.call('DEL', KEYS[3], KEYS[4])
return out
"""
)

JOB_PREFIX = keys.job("")
DONE_PREFIX = keys.done("")
