"""The worker's side of the job ledger: claim a batch, mark it running, finish it.

Each script is atomic and costs one round trip for a whole batch. Work that does not depend on
the job (leases, stats, reply lists) is done once per batch, not once per job: Redis time per job
is what bounds throughput. A final status is never overwritten, which is what makes redelivered
jobs harmless under at-least-once delivery.

A pool process holds one batch at a time. Its messages sit on the process's claim list from the
moment they leave the queue until their results are written, under a lease: a token (the
``busy`` key) and a deadline in ``predictq:leases`` that the process renews while it works. A
batch always starts from the whole claim list, so that nothing left there by an error is ever
skipped; messages parked later go on its left, and FINISH removes only the batch's own messages,
from the right, and only while the process still holds the lease. Whatever else happens, a
sweeper takes a claim list over once its process is gone or its lease ran out.

Every script that a full Redis must not stop is flagged ``allow-oom`` (Redis >= 7): claiming,
starting and finishing free queue memory or change records in place, so under ``noeviction`` a
full Redis drains itself instead of deadlocking.
"""

from __future__ import annotations

import time

import orjson

from producer import celery_results
from producer import records as rec
from registry import PredictqError, keys

# The lease on a claim list lasts this long past its last renewal, and a working process renews
# it this often: a process (or a whole node) that dies has its batch recovered within about
# LEASE_SECONDS plus a sweep.
LEASE_SECONDS = 10.0
RENEW_EVERY = 2.0
# The busy key outlives its lease by far: it is deleted by FINISH or a takeover, and only needs a
# TTL so that a lost one cannot stay behind for good.
BUSY_TTL = 24 * 3600

ALLOW_OOM = "#!lua flags=allow-oom\n"

_FINAL = "st == 'succeeded' or st == 'failed' or st == 'cancelled'"

# now(): Redis's own clock, so that leases mean the same on every host. weight(): the jobs a
# message carries, from its first header.
COMMON = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function weight(raw)
  return tonumber(string.match(raw, '^{"headers":{"predictq_jobs":(%d+)')) or 1
end
"""

NOT_TEXT = "the queue element is not UTF-8 text, so it cannot be a JSON Celery message"
# How much of a refused message a dead letter keeps: enough to see what it was.
DEAD_EXCERPT = 4096

# utf8(): whether a queue element is UTF-8 text (anything else cannot be a JSON message, and would
# break every client that reads it as text). A scan per byte, so only taking a claim list over
# uses it: the claiming worker decodes what it claimed as bytes, which costs far less (runtime).
# dead(): keep a refused element in the dead letters, as an excerpt with its bytes made printable.
TEXT = f"""
local function utf8(s)
  local i = 1
  local n = #s
  while true do
    i = string.find(s, '[\\128-\\255]', i)
    if not i then return true end
    local c = string.byte(s, i)
    local len = 0
    if c >= 194 and c <= 223 then len = 2
    elseif c >= 224 and c <= 239 then len = 3
    elseif c >= 240 and c <= 244 then len = 4
    else return false end
    if i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local cc = string.byte(s, k)
      if cc < 128 or cc > 191 then return false end
    end
    local c2 = string.byte(s, i + 1)
    if (c == 224 and c2 < 160) or (c == 237 and c2 > 159) or (c == 240 and c2 < 144)
        or (c == 244 and c2 > 143) then
      return false
    end
    i = i + len
  end
end
local function dead(dead_key, limit, raw)
  local excerpt = string.gsub(string.sub(raw, 1, {DEAD_EXCERPT}), '[\\128-\\255]', '?')
  redis.call('LPUSH', dead_key, cjson.encode({{id = cjson.null, at = now(), message = excerpt,
    error = {{code = 'invalid_input', message = '{NOT_TEXT}'}}}}))
  redis.call('LTRIM', dead_key, 0, tonumber(limit) - 1)
end
"""

# take(): moves messages from the queue onto the claim list, appending them to ``out``, until
# they carry ``limit`` jobs (past ``total`` already held). Each message is weighed on its own, and
# one that would pass the limit stays queued unless the batch is still empty: mixing lone jobs
# with batch messages never makes one claim take many times its share. lease(): the batch's token
# and deadline.
_TAKE = f"""
local function take(queue, claim_list, limit, total, out)
  while total < limit do
    local nxt = redis.call('LINDEX', queue, -1)
    if not nxt then return total end
    local w = weight(nxt)
    if total > 0 and total + w > limit then return total end
    redis.call('LMOVE', queue, claim_list, 'RIGHT', 'LEFT')
    out[#out + 1] = nxt
    total = total + w
  end
  return total
end
local function lease(busy_key, leases_key, token, seconds, worker)
  redis.call('SET', busy_key, token, 'EX', {BUSY_TTL})
  redis.call('ZADD', leases_key, now() + tonumber(seconds), worker)
end
"""

# KEYS: queue, this process's claim list, isolation queue, busy key, leases. ARGV: most jobs, '1'
# to start a batch (it then includes whatever the claim list holds), '1' to look at the isolation
# queue first (when the claim list is empty), the batch token, lease seconds, worker, jobs the
# batch already holds (a top-up). Moves messages
# onto the claim list and returns two flags, then the messages: '1' if they are one message from
# the isolation queue, to run alone, and '1' if the queue has more. Until the batch is finished
# its messages live on that list, so a process that dies mid-batch leaves them where the sweeper
# finds them.
CLAIM = (
    ALLOW_OOM
    + rec.SLICED
    + COMMON
    + _TAKE
    + """
local out = {'0', '0'}
-- Only with nothing on the claim list: what is there was claimed already (perhaps started, by
-- this process), and is run first.
if ARGV[3] == '1' and redis.call('LLEN', KEYS[2]) == 0 and redis.call('LLEN', KEYS[3]) > 0 then
  local nxt = redis.call('LMOVE', KEYS[3], KEYS[2], 'RIGHT', 'LEFT')
  lease(KEYS[4], KEYS[5], ARGV[4], ARGV[5], ARGV[6])
  return {'1', '1', nxt}
end
local total = tonumber(ARGV[7]) or 0
if ARGV[2] == '1' then
  for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    out[#out + 1] = raw
    total = total + weight(raw)
  end
end
take(KEYS[1], KEYS[2], tonumber(ARGV[1]), total, out)
if #out > 2 then
  lease(KEYS[4], KEYS[5], ARGV[4], ARGV[5], ARGV[6])
elseif ARGV[2] == '1' then
  -- A batch that starts empty: the process holds nothing, so it has no lease either.
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[6])
end
if redis.call('LLEN', KEYS[1]) > 0 then out[2] = '1' end
return out
"""
)

# KEYS: in-flight zset, queued index, running hash. ARGV: now, worker, deadline, default ttl, job
# key prefix, '1' to index the jobs in flight, '1' when every job gets a Celery result
# (PREDICTQ_CELERY_RESULTS), then per job: id, and '' when the producer wrote its record at
# submission ('c' when it also flagged it for a Celery result), or else '1' and the record's fields:
# model, alias, pinned version or '', probabilities, ttl, raw message. Marks each job running
# (writing the record of a job sent by a stock Celery client, which has none yet, flagged for a
# Celery result; with the setting, every record is flagged: see producer/celery_results.py), counts
# the attempt, indexes it in flight until ``deadline`` when asked (a claim list's lease already
# covers the batch consumer's jobs) and resolves its alias (once per alias per batch). A job this
# very process already runs (its claim list was read again after an error) counts no new attempt,
# and is not counted again in the running hash, which holds per process how many jobs it started and
# has not finished. Returns 5 values per job: status before ('new' if no record, 'expired' if its
# record expired while it was queued; 'seen' for a cancelled job whose message was met before, so
# that metrics count each cancellation once), attempts, alias version, submitted_at, reply list.
_START_FN = f"""
local function start(A, inflight_key, queued_key, running_key)
  local out = {{}}
  local newly = 0
  local inflight = {{}}
  local resolved = {{}}
  local started = {{}}
  local b = 8
  while b <= #A do
    local id = A[b]
    local f = b + 2
    local mark = A[b + 1]
    local given = mark == '1'
    b = b + (given and 8 or 2)
    local key = A[5] .. id
    started[#started + 1] = id
    local rec = redis.call('HMGET', key, 'status', 'model', 'alias', 'version', 'attempts',
      'submitted_at', 'reply', 'worker')
    local st = rec[1]
    if {_FINAL} then
      if st == 'cancelled' and redis.call('HSETNX', key, 'seen', '1') == 0 then st = 'seen' end
      out[#out + 1] = st; out[#out + 1] = 0; out[#out + 1] = false; out[#out + 1] = false
      out[#out + 1] = false
    elseif not st and not given then
      -- Its record expired while it was queued: a Celery result, if every job gets one, is
      -- all that is left to tell its waiter.
      if A[7] == '1' or mark == 'c' then celery_gone(id, A[1], A[4]) end
      out[#out + 1] = 'expired'; out[#out + 1] = 0; out[#out + 1] = false; out[#out + 1] = false
      out[#out + 1] = false
    else
      if not st then
        -- A stock client's job: it waits on a Celery result, whatever the setting.
        rec = {{false, A[f], A[f + 1], A[f + 2], 0, A[1], false, false}}
        local ttl = A[f + 4] ~= '' and A[f + 4] or A[4]
        redis.call('HSET', key, 'model', rec[2], 'alias', rec[3], 'version', rec[4],
          'probabilities', A[f + 3], 'ttl', ttl, 'submitted_at', A[1],
          'payload', A[f + 5], '{celery_results.FLAG}', '1')
        redis.call('EXPIRE', key, ttl)
      elseif A[7] == '1' then
        redis.call('HSET', key, '{celery_results.FLAG}', '1')
      end
      local attempts = tonumber(rec[5]) or 0
      if not (st == 'running' and rec[8] == A[2]) then
        attempts = attempts + 1
        newly = newly + 1
      end
      redis.call('HSET', key, 'status', 'running', 'started_at', A[1], 'worker', A[2],
        'attempts', attempts)
      inflight[#inflight + 1] = A[3]; inflight[#inflight + 1] = id
      local v = false
      if (not rec[4] or rec[4] == '') and rec[2] and rec[3] then
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
  if A[6] == '1' then sliced('ZADD', inflight_key, inflight) end
  sliced('ZREM', queued_key, started)
  -- pcall: the running hash is a count for status and metrics; a key of the wrong type (made by
  -- hand) must not fail the START of jobs it has already marked running.
  if newly > 0 then redis.pcall('HINCRBY', running_key, A[2], newly) end
  return out
end
"""

START = (
    ALLOW_OOM
    + rec.SLICED
    + celery_results.LUA
    + _START_FN
    + "return start(ARGV, KEYS[1], KEYS[2], KEYS[3])\n"
)

# KEYS: queue, this process's claim list, isolation queue, in-flight zset, queued index, busy key,
# leases, running hash. ARGV: most jobs, jobs the parked message holds, the batch token, lease
# seconds, worker, then START's ARGV for the jobs of the message a blocking LMOVE just parked on the
# claim list. Starts those jobs and takes more messages onto the list (as CLAIM does, without the
# isolation queue) in one round trip. Returns '1' if either queue has more, the number n of messages
# taken, the n messages, then what START returns for the parked jobs. When the claim list holds more
# than the parked message (left there by an error, or parked twice by a retried command), it does
# nothing and returns 'stale': the caller then claims the whole list.
CLAIM_START = (
    ALLOW_OOM
    + rec.SLICED
    + celery_results.LUA
    + COMMON
    + _TAKE
    + _START_FN
    + """
if redis.call('LLEN', KEYS[2]) ~= 1 then return {'stale'} end
local taken = {}
take(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), taken)
local more = '0'
if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[3]) > 0 then more = '1' end
lease(KEYS[6], KEYS[7], ARGV[3], ARGV[4], ARGV[5])
-- A loop, not unpack(): a message of thousands of jobs has more arguments than Lua's stack.
local A = {}
for i = 6, #ARGV do A[#A + 1] = ARGV[i] end
local started = start(A, KEYS[4], KEYS[5], KEYS[8])
local out = {more, #taken}
for _, raw in ipairs(taken) do out[#out + 1] = raw end
for _, v in ipairs(started) do out[#out + 1] = v end
return out
"""
)

# KEYS: in-flight zset, stats, claim list, busy key, leases, running hash. ARGV: now, default ttl,
# reply ttl, stats ttl, job key prefix, wake-up channel prefix, reply limit, '1' to leave the
# in-flight index, wake-up list prefix, its ttl, the batch token ('' for none), how many messages
# the batch holds, worker, then per job: id, status, version, predictions, probabilities, error, the
# result's JSON for its reply list (or ''). Writes each final record once (a job that is already
# final keeps its result), wakes its waiters, counts it in the minute's stats (in all and per model)
# and leaves the in-flight index. Then, while the process still holds the lease, it takes the
# batch's messages (the oldest, rightmost ones) off the claim list, drops the lease and its count in
# the running hash (a process runs one batch at a time); without a batch token (Celery's task path)
# it takes off that count every job it was given: the caller passes exactly the jobs its START
# counted, including a copy that another process took over or finished first (counting only the
# records still running on this process left such copies counted for good). Returns 1/0 per job
# (0: a duplicate that wrote nothing). FINISH_CELERY is the same script that also writes the
# Celery result of each job whose record is flagged for one. The worker sends it only for a batch
# that may hold such a job, which it knows without reading the records (a stock client's message,
# a message whose producer said so in ``predictq_celery``, or the worker's own setting on): other
# batches pay nothing for it, not even the bytes of its Lua (the pipelined FINISH goes out as
# EVAL).
_FINISH = """
local out = {{}}
local counts = {{}}
local replies = {{}}
local ids = {{}}
for b = 14, #ARGV, 8 do
  local id = ARGV[b]
  local key = ARGV[5] .. id
  ids[#ids + 1] = id
  local rec = redis.call('HMGET', key, 'status', 'ttl', 'reply', 'model'{flag})
  local st = rec[1]
  if {final} then
    out[#out + 1] = 0
  else
    local status = ARGV[b + 1]
    -- Only fields with a value: a smaller write, and the record stays compact.
    local fields = {{'status', status, 'finished_at', ARGV[1], 'payload', ''}}
    if ARGV[b + 3] ~= '' then fields[7] = 'predictions'; fields[8] = ARGV[b + 3] end
    if ARGV[b + 4] ~= '' then fields[#fields + 1] = 'proba'; fields[#fields + 1] = ARGV[b + 4] end
    if ARGV[b + 7] ~= '' then
      fields[#fields + 1] = 'classes'; fields[#fields + 1] = ARGV[b + 7]
    end
    if ARGV[b + 5] ~= '' then fields[#fields + 1] = 'error'; fields[#fields + 1] = ARGV[b + 5] end
    -- A job that failed before its version was known keeps the version it was pinned to.
    if ARGV[b + 2] ~= '' then
      fields[#fields + 1] = 'version'; fields[#fields + 1] = ARGV[b + 2]
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('EXPIRE', key, rec[2] or ARGV[2]){celery}
    redis.call('PUBLISH', ARGV[6] .. id, '1')
    if rec[3] then
      local list = replies[rec[3]]
      if not list then list = {{}}; replies[rec[3]] = list end
      -- The result itself, which saves its waiter a read.
      list[#list + 1] = ARGV[b + 6] ~= '' and ARGV[b + 6] or id
    end
    counts[status] = (counts[status] or 0) + 1
    local per_model = status .. ':' .. (rec[4] or '')
    counts[per_model] = (counts[per_model] or 0) + 1
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
if ARGV[11] ~= '' then
  if redis.call('GET', KEYS[4]) == ARGV[11] then
    local n = tonumber(ARGV[12])
    if n > 0 then redis.call('LTRIM', KEYS[3], 0, -(n + 1)) end
    redis.call('DEL', KEYS[4])
    redis.call('ZREM', KEYS[5], ARGV[13])
    redis.pcall('HDEL', KEYS[6], ARGV[13])  -- pcall: see START
  end
elseif #ids > 0 then
  local left = redis.pcall('HINCRBY', KEYS[6], ARGV[13], -#ids)
  if type(left) == 'number' and left <= 0 then redis.pcall('HDEL', KEYS[6], ARGV[13]) end
end
return out
"""
FINISH = ALLOW_OOM + rec.SLICED + _FINISH.format(final=_FINAL, flag="", celery="")
FINISH_CELERY = (
    ALLOW_OOM
    + rec.SLICED
    + celery_results.LUA
    + _FINISH.format(
        final=_FINAL,
        flag=f", '{celery_results.FLAG}'",
        celery="\n    if rec[5] then celery_result(key, id, ARGV[1], rec[2] or ARGV[2]) end",
    )
)

# KEYS: busy key, leases. ARGV: the batch token, lease seconds, worker. Extends the lease while
# the process still holds it; returns 1, or 0 when it no longer does.
RENEW = (
    ALLOW_OOM
    + COMMON
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], now() + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

# KEYS: the key. ARGV: value, seconds. A SET that a full Redis still takes: heartbeats and
# consumer reports are what keep live workers from being taken for dead while Redis drains.
SET_EX = ALLOW_OOM + "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\nreturn 1\n"
# KEYS: the node's heartbeat key, the nodes zset. ARGV: heartbeat JSON, seconds, node name. A
# heartbeat, and the node's entry in the zset readers find nodes by (entries a node left more than
# ten minutes ago are dropped, so the zset holds little more than the live nodes).
HEARTBEAT = (
    ALLOW_OOM
    + COMMON
    + """
local t = now()
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], t, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t - 600)
return 1
"""
)
# KEYS: the hash. ARGV: field, value. The same for a hash field.
HSET = ALLOW_OOM + "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS: dead letters. ARGV: entry, limit. Under a full Redis too: a refused message must leave
# the claim list, or it would be read again and again.
DEAD_LETTER = (
    ALLOW_OOM
    + """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""
)


def dead_entry(job_id: str | None, raw: str, error: PredictqError) -> bytes:
    """A dead letter's JSON: the job (if known), the error and an excerpt of the message."""
    return orjson.dumps({"id": job_id, "error": error.to_dict(), "at": time.time(),
                         "message": raw[:DEAD_EXCERPT]})  # fmt: skip


JOB_PREFIX = keys.job("")
DONE_PREFIX = keys.done("")
