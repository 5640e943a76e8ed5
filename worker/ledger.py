"""The worker's side of the job ledger: claim a batch, mark it running, finish it.

Each script is atomic and costs one round trip for a whole batch. Work that does not depend on
the job (the in-flight index, stats, reply lists) is done once per batch, not once per job:
Redis time per job is what bounds throughput. A final status is never overwritten, which is
what makes redelivered jobs harmless under at-least-once delivery.
"""

from __future__ import annotations

from producer import records as rec
from registry import keys

_FINAL = "st == 'succeeded' or st == 'failed' or st == 'cancelled'"
# KEYS: queue, this process's claim list, isolation queue. ARGV: most jobs, '1' to include the
# claim list, '1' to look at the isolation queue first. Moves messages onto the claim list and
# returns two flags, then the messages: '1' if they are one message from the isolation queue, to
# run alone (what a blocking LMOVE parked goes back to the head of the queue), and '1' if the
# queue has more. Otherwise returns what it took (with what was parked, when asked). A batch
# message counts as the jobs it carries, read from its first header. Until the batch is finished
# the messages live on that list, so a process that dies mid-batch leaves them where the sweeper
# finds them, never only in its memory.
# weight(): the jobs a message carries, from its first header. take(): moves messages from the
# queue onto the claim list, appending them to ``out``, until they carry ``limit`` jobs (past
# ``total`` already taken); pops as many at once as the next message's weight allows.
_WEIGHT = """
local function weight(raw)
  return tonumber(string.match(raw, '^{"headers":{"predictq_jobs":(%d+)')) or 1
end
local function take(queue, claim_list, limit, total, out)
  while total < limit do
    local nxt = redis.call('LINDEX', queue, -1)
    if not nxt then return end
    local popped = redis.call('RPOP', queue, math.max(1, math.floor((limit - total) / weight(nxt))))
    sliced('LPUSH', claim_list, popped)
    for _, raw in ipairs(popped) do
      out[#out + 1] = raw
      total = total + weight(raw)
    end
  end
end
"""
CLAIM = (
    rec.SLICED
    + _WEIGHT
    + """
if ARGV[3] == '1' and redis.call('LLEN', KEYS[3]) > 0 then
  while redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT') do end
  return {'1', '1', redis.call('LMOVE', KEYS[3], KEYS[2], 'RIGHT', 'LEFT')}
end
local out = {'0', '0'}
local total = 0
if ARGV[2] == '1' then
  for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    out[#out + 1] = raw
    total = total + weight(raw)
  end
end
take(KEYS[1], KEYS[2], tonumber(ARGV[1]), total, out)
if redis.call('LLEN', KEYS[1]) > 0 then out[2] = '1' end
return out
"""
)

# KEYS: in-flight zset, queued index, busy marker. ARGV: now, worker, deadline, default ttl, job
# key prefix, batch deadline, '1' to index the jobs in flight, then per job: id, and '' when the
# producer wrote its record at submission, or else '1' and the record's fields: model, alias,
# pinned version or '', probabilities, ttl, raw message. Marks each job running (writing the
# record of a job sent by a stock Celery client, which has none yet), counts the attempt, indexes
# it in flight until ``deadline`` when asked (the batch consumer's claim list and busy marker
# already say where its jobs are and until when) and resolves its alias (once per alias per
# batch). Returns 5 values per job: status before ('new' if no record, 'expired' if its record
# expired while it was queued), attempts, alias version, submitted_at, reply list.
_START_FN = f"""
local function start(A, inflight_key, queued_key, busy_key)
  local out = {{}}
  local inflight = {{}}
  local resolved = {{}}
  local started = {{}}
  local b = 8
  while b <= #A do
    local id = A[b]
    local f = b + 2
    local given = A[b + 1] == '1'
    b = b + (given and 8 or 2)
    local key = A[5] .. id
    started[#started + 1] = id
    local rec = redis.call('HMGET', key, 'status', 'model', 'alias', 'version', 'attempts',
      'submitted_at', 'reply')
    local st = rec[1]
    if {_FINAL} then
      out[#out + 1] = st; out[#out + 1] = 0; out[#out + 1] = false; out[#out + 1] = false
      out[#out + 1] = false
    elseif not st and not given then
      out[#out + 1] = 'expired'; out[#out + 1] = 0; out[#out + 1] = false; out[#out + 1] = false
      out[#out + 1] = false
    else
      if not st then
        rec = {{false, A[f], A[f + 1], A[f + 2], 0, A[1], false}}
        local ttl = A[f + 4] ~= '' and A[f + 4] or A[4]
        redis.call('HSET', key, 'model', rec[2], 'alias', rec[3], 'version', rec[4],
          'probabilities', A[f + 3], 'ttl', ttl, 'submitted_at', A[1],
          'payload', A[f + 5])
        redis.call('EXPIRE', key, ttl)
      end
      local attempts = (tonumber(rec[5]) or 0) + 1
      redis.call('HSET', key, 'status', 'running', 'started_at', A[1], 'worker', A[2],
        'attempts', attempts)
      inflight[#inflight + 1] = A[3]; inflight[#inflight + 1] = id
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
      out[#out + 1] = rec[6]; out[#out + 1] = rec[7]
    end
  end
  if A[7] == '1' then sliced('ZADD', inflight_key, inflight) end
  sliced('ZREM', queued_key, started)
  if #inflight > 0 then
    redis.call('SET', busy_key, A[6], 'EX', math.ceil(A[6] - A[1]) + 60)
  end
  return out
end
"""

START = rec.SLICED + _START_FN + "return start(ARGV, KEYS[1], KEYS[2], KEYS[3])\n"

# KEYS: queue, this process's claim list, isolation queue, then START's. ARGV: most jobs more,
# then START's ARGV for the jobs of the message a blocking LMOVE just parked on the claim list.
# Starts those jobs and takes more messages onto the list (as CLAIM does, without the isolation
# queue) in one round trip: a lone job costs the worker three round trips, not four. Returns
# '1' if either queue has more, the number n of messages taken, the n messages, then what START
# returns for the parked jobs.
CLAIM_START = (
    rec.SLICED
    + _WEIGHT
    + _START_FN
    + """
local taken = {}
take(KEYS[1], KEYS[2], tonumber(ARGV[1]), 0, taken)
local more = '0'
if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[3]) > 0 then more = '1' end
local started = start({unpack(ARGV, 2)}, KEYS[4], KEYS[5], KEYS[6])
local out = {more, #taken}
for _, raw in ipairs(taken) do out[#out + 1] = raw end
for _, v in ipairs(started) do out[#out + 1] = v end
return out
"""
)

# KEYS: in-flight zset, stats, claim list, busy marker. ARGV: now, default ttl, reply ttl, stats
# ttl, job key prefix, wake-up channel prefix, reply limit, '1' to leave the in-flight index,
# wake-up list prefix, its ttl, then per job: id, status, version, predictions, probabilities,
# error, the result's JSON for its reply list (or ''). Writes each final record once (a job
# that is already final keeps its result), wakes its waiters, leaves the in-flight index and
# empties the claim list. Returns 1/0 per job (0: a duplicate that wrote nothing).
FINISH = (
    rec.SLICED
    + f"""
local out = {{}}
local counts = {{}}
local replies = {{}}
local ids = {{}}
for b = 11, #ARGV, 7 do
  local id = ARGV[b]
  local key = ARGV[5] .. id
  ids[#ids + 1] = id
  local rec = redis.call('HMGET', key, 'status', 'ttl', 'reply')
  local st = rec[1]
  if {_FINAL} then
    out[#out + 1] = 0
  else
    local status = ARGV[b + 1]
    -- Only fields with a value: a smaller write, and the record stays compact.
    local fields = {{'status', status, 'finished_at', ARGV[1], 'payload', ''}}
    if ARGV[b + 3] ~= '' then fields[7] = 'predictions'; fields[8] = ARGV[b + 3] end
    if ARGV[b + 4] ~= '' then fields[#fields + 1] = 'proba'; fields[#fields + 1] = ARGV[b + 4] end
    if ARGV[b + 5] ~= '' then fields[#fields + 1] = 'error'; fields[#fields + 1] = ARGV[b + 5] end
    -- A job that failed before its version was known keeps the version it was pinned to.
    if ARGV[b + 2] ~= '' then
      fields[#fields + 1] = 'version'; fields[#fields + 1] = ARGV[b + 2]
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('EXPIRE', key, rec[2] or ARGV[2])
    redis.call('PUBLISH', ARGV[6] .. id, '1')
    if rec[3] then
      local list = replies[rec[3]]
      if not list then list = {{}}; replies[rec[3]] = list end
      -- The result itself, which saves its waiter a read.
      list[#list + 1] = ARGV[b + 6] ~= '' and ARGV[b + 6] or id
    end
    counts[status] = (counts[status] or 0) + 1
    out[#out + 1] = 1
  end
end
for reply, list in pairs(replies) do
  sliced('RPUSH', reply, list)
  if string.sub(reply, 1, #ARGV[9]) == ARGV[9] then
    redis.call('EXPIRE', reply, ARGV[10])  -- a job's own wake-up list
  else
    redis.call('LTRIM', reply, -tonumber(ARGV[7]), -1)
    redis.call('EXPIRE', reply, ARGV[3])
  end
end
for status, n in pairs(counts) do redis.call('HINCRBY', KEYS[2], status, n) end
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[8] == '1' then sliced('ZREM', KEYS[1], ids) end
redis.call('DEL', KEYS[3], KEYS[4])
return out
"""
)

JOB_PREFIX = keys.job("")
DONE_PREFIX = keys.done("")
