"""The job record in Redis, producer side: submit and cancel, and reading a record back.

Each transition is one Lua script, so it is atomic and costs one round trip; the worker's side
of the ledger is ``worker/ledger.py``.
"""

from __future__ import annotations

from typing import Any

import orjson

from registry import keys

from . import celery_results
from .contract import JobError, JobResult, timestamp

# Lua's unpack() is bounded by the C stack: variadic commands go out in slices of this size.
SLICED = """
local function sliced(cmd, key, list, first, last)
  first = first or 1
  last = last or #list
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
"""

# clock(): Redis's time as text, for the queued index and the messages' stamps (producers'
# clocks may differ). restamp(): a message with ``at`` as the time it was queued (its
# ``predictq_at`` header, near the start), spliced in rather than rewritten byte by byte.
STAMP = """
local function clock()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', t[2])
end
local function restamp(msg, at)
  local i = string.find(msg, '"predictq_at":', 1, true)
  if not i or i > 200 then return msg end
  local j = string.find(msg, ',', i + 14, true)
  if not j then return msg end
  return string.sub(msg, 1, i + 13) .. at .. string.sub(msg, j)
end
"""

# KEYS: queue, queued index. ARGV: now, reply list ('' for none, '*' for each job's own wake-up
# list), '1' to check for existing IDs, job key prefix, model, alias, pinned version or '',
# probabilities, ttl, wake-up list prefix, most jobs queued, jobs to admit (0: already admitted),
# message count m, the m messages, '1' to flag every record for a Celery result, dropping one
# left under its ID (PREDICTQ_CELERY_RESULTS; see celery_results.py), then per job: id, and its
# own message (a job sent alone; '' for a job in a batch message, whose claim list holds its
# message until it ends). Writes each record as 'queued', indexes it and pushes the messages,
# with the time it was queued on Redis's clock in the index and in each message's
# ``predictq_at``. With the check on and any ID taken, nothing is written: the caller leaves
# those jobs out of its messages and calls again. Returns
# 1 (enqueued) or 0 (ID exists) per job; or, when the queued index plus the jobs to admit (the
# whole submission, on its first call) would pass the most jobs queued, the number queued, and
# nothing is written. Generated IDs skip the check: it is a Redis call per job, and Redis time per
# job is what bounds throughput. Under maxmemory Redis refuses a script's first write with OOM and
# lets a script that has written finish, so each call writes all of its jobs or none.
SUBMIT = (
    SLICED
    + STAMP
    + """
local m = tonumber(ARGV[13])
local celery = ARGV[14 + m] == '1'
local first = 15 + m
local out = {}
if ARGV[3] == '1' then
  local taken = false
  for b = first, #ARGV, 2 do
    local exists = redis.call('EXISTS', ARGV[4] .. ARGV[b])
    out[#out + 1] = 1 - exists
    if exists == 1 then taken = true end
  end
  if taken then return out end
  out = {}
end
local admit = tonumber(ARGV[12])
if admit > 0 then
  local waiting = redis.call('ZCARD', KEYS[2])
  if waiting + admit > tonumber(ARGV[11]) then return waiting end
end
-- Redis's clock, not the producer's: the sweeper compares the time each job was queued with the
-- stamp of the oldest waiting message, and producers' clocks may differ.
local at = clock()
local queued = {}
for b = first, #ARGV, 2 do
  local key = ARGV[4] .. ARGV[b]
  redis.call('HSET', key, 'status', 'queued', 'model', ARGV[5], 'alias', ARGV[6],
    'version', ARGV[7], 'probabilities', ARGV[8], 'ttl', ARGV[9], 'submitted_at', ARGV[1],
    'attempts', '0', 'payload', restamp(ARGV[b + 1], at))
  if celery then
    -- A Celery result left under this ID (a job of that ID whose record expired while
    -- queued) is not this job's: its waiters wait for this one's.
    redis.call('HSET', key, '"""
    + celery_results.FLAG
    + """', '1')
    redis.call('DEL', '"""
    + keys.CELERY_META_PREFIX
    + """' .. ARGV[b])
  end
  if ARGV[2] == '*' then
    redis.call('HSET', key, 'reply', ARGV[10] .. ARGV[b])
  elseif ARGV[2] ~= '' then
    redis.call('HSET', key, 'reply', ARGV[2])
  end
  redis.call('EXPIRE', key, ARGV[9])
  queued[#queued + 1] = at; queued[#queued + 1] = ARGV[b]
  out[#out + 1] = 1
end
sliced('ZADD', KEYS[2], queued)
local messages = {}
for i = 14, 13 + m do messages[#messages + 1] = restamp(ARGV[i], at) end
sliced('LPUSH', KEYS[1], messages)
return out
"""
)

# KEYS: stats, queued index. ARGV: now, stats ttl, job key prefix, wake-up channel prefix, reply
# ttl, then job IDs. Cancels the queued ones, wakes their waiters and counts them in the minute's
# stats (in all and per model), and writes the Celery result of those flagged for one; a
# started or ended job is left alone (its message, still on the queue, is skipped by the worker).
# Returns each job's status before (nil: no such job). It runs when Redis is past maxmemory
# (allow-oom): cancelling frees memory, and undoes a submission that a later chunk's OOM refused.
CANCEL = (
    "#!lua flags=allow-oom\n"
    + celery_results.LUA
    + f"""
local out = {{}}
local cancelled = 0
local per_model = {{}}
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  local rec = redis.call('HMGET', key, 'status', 'model', '{celery_results.FLAG}', 'ttl')
  local st = rec[1]
  out[i - 5] = st
  if st == 'queued' then
    redis.call('HSET', key, 'status', 'cancelled', 'finished_at', ARGV[1], 'payload', '')
    if rec[3] then celery_result(key, id, ARGV[1], rec[4] or 86400) end
    redis.call('ZREM', KEYS[2], id)
    redis.call('PUBLISH', ARGV[4] .. id, '1')
    local reply = redis.call('HGET', key, 'reply')
    if reply then
      redis.call('RPUSH', reply, id)
      redis.call('EXPIRE', reply, ARGV[5])
    end
    cancelled = cancelled + 1
    local field = 'cancelled:' .. (rec[2] or '')
    per_model[field] = (per_model[field] or 0) + 1
  end
end
if cancelled > 0 then
  redis.call('HINCRBY', KEYS[1], 'cancelled', cancelled)
  for field, n in pairs(per_model) do redis.call('HINCRBY', KEYS[1], field, n) end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return out
"""
)

RECORD_FIELDS = (
    "status", "model", "alias", "version", "predictions", "proba", "error",
    "submitted_at", "started_at", "finished_at", "attempts", "worker", "classes",
)  # fmt: skip

# KEYS: none. ARGV: job key prefix, then job IDs. The ``RECORD_FIELDS`` of each job (all nil when
# it has no record): one command for thousands of records, where a pipeline costs the client a
# command each to encode and decode.
FETCH = f"""
local out = {{}}
for i = 2, #ARGV do
  out[i - 1] = redis.call('HMGET', ARGV[1] .. ARGV[i], {", ".join(f"'{f}'" for f in RECORD_FIELDS)})
end
return out
"""

# KEYS: none. ARGV: job key prefix, then job IDs. Each job's status (nil: no record).
STATUS = """
local out = {}
for i = 2, #ARGV do
  out[i - 1] = redis.call('HGET', ARGV[1] .. ARGV[i], 'status')
end
return out
"""


def stats_key(now: float) -> str:
    return keys.stats(int(now // 60))


_FIELDS_SET = frozenset(JobResult.model_fields)


def _result(**values: Any) -> JobResult:
    """A JobResult from values our own scripts wrote, without re-validating them.

    What ``model_construct`` does, minus its per-field defaults pass (every field is given):
    ``wait_many`` builds tens of thousands of these at a time, and that pass cost more than the
    rest of reading a result.
    """
    result = JobResult.__new__(JobResult)
    object.__setattr__(result, "__dict__", values)
    object.__setattr__(result, "__pydantic_fields_set__", set(_FIELDS_SET))
    object.__setattr__(result, "__pydantic_extra__", None)
    object.__setattr__(result, "__pydantic_private__", None)
    return result


def _built(
    job_id: str, status: str, model: str | None, alias: str | None, version: Any,
    predictions: Any, probabilities: Any, error: Any, submitted_at: Any,
    started_at: Any, finished_at: Any, attempts: Any, worker: str | None, classes: Any = None,
) -> JobResult:  # fmt: skip
    """A JobResult from a record's values, with its JSON fields already decoded."""
    return _result(
        id=job_id,
        status=status,
        model=model or "",
        alias=alias or None,
        version=int(version) if version else None,
        predictions=predictions,
        probabilities=probabilities,
        classes=classes,
        error=JobError.model_construct(**error) if error else None,
        submitted_at=timestamp(submitted_at),
        started_at=timestamp(started_at),
        finished_at=timestamp(finished_at),
        attempts=int(attempts or 0),
        worker=worker or None,
    )


def parse_record(job_id: str, values: list[Any]) -> JobResult | None:
    """A JobResult from the fields of ``RECORD_FIELDS`` (HMGET order); None when absent."""
    (status, model, alias, version, predictions, proba, error, submitted_at, started_at,
     finished_at, attempts, worker, classes) = values  # fmt: skip
    if not status:
        return None
    return _built(
        job_id, status, model, alias, version,
        orjson.loads(predictions) if predictions else None,
        orjson.loads(proba) if proba else None,
        orjson.loads(error) if error else None,
        submitted_at, started_at, finished_at, attempts, worker,
        orjson.loads(classes) if classes else None,
    )  # fmt: skip


def parse_told(raw: str) -> JobResult | None:
    """The result a worker pushed onto a job's own wake-up list; None for a bare job ID there
    (what cancellation and recovery push), which the waiter then reads from the record."""
    if not raw.startswith("{"):
        return None
    told = orjson.loads(raw)
    return _built(
        told["id"], told["status"], told["model"], told["alias"], told["version"],
        told["predictions"], told["probabilities"], told["error"], told["submitted_at"],
        told["started_at"], told["finished_at"], told["attempts"], told["worker"],
        told.get("classes"),
    )  # fmt: skip
