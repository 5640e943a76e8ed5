"""The job record in Redis: the ledger that submit, the worker and cancel move through statuses.

Each transition is one Lua script, so it is atomic and costs one round trip. A final status
(succeeded, failed, cancelled) is never overwritten: that is what makes redelivered jobs
harmless under at-least-once delivery.
"""

from __future__ import annotations

import json
from typing import Any

from registry import keys

from .contract import JobError, JobResult, timestamp

_FINAL = "st == 'succeeded' or st == 'failed' or st == 'cancelled'"

# KEYS: queue, job keys... ARGV: now, then per job (model, alias, version, probabilities, ttl,
# message). Writes each new record as 'queued' and pushes its message; an existing ID is left
# alone and nothing is pushed. Returns 1 (enqueued) or 0 (existed) per job.
SUBMIT = """
local out = {}
for i = 2, #KEYS do
  local b = 1 + (i - 2) * 6
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', KEYS[i], 'status', 'queued', 'model', ARGV[b + 1], 'alias', ARGV[b + 2],
      'version', ARGV[b + 3], 'probabilities', ARGV[b + 4], 'ttl', ARGV[b + 5],
      'submitted_at', ARGV[1], 'attempts', '0', 'payload', ARGV[b + 6])
    redis.call('EXPIRE', KEYS[i], ARGV[b + 5])
    redis.call('LPUSH', KEYS[1], ARGV[b + 6])
    out[#out + 1] = 1
  end
end
return out
"""

# KEYS: job, model aliases. ARGV: now, worker, model, alias, pinned version or '',
# probabilities, ttl. Marks the job running and resolves its alias in the same round trip.
# Returns {status before, attempts, resolved alias version or false}.
START = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if {_FINAL} then return {{st, 0, false}} end
if not st then
  -- Sent by a stock Celery client: no record was written at submission, so write it now.
  redis.call('HSET', KEYS[1], 'model', ARGV[3], 'alias', ARGV[4], 'version', ARGV[5],
    'probabilities', ARGV[6], 'ttl', ARGV[7], 'submitted_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
local v = false
if ARGV[5] == '' then v = redis.call('HGET', KEYS[2], ARGV[4]) end
return {{st or 'new', attempts, v}}
"""

# KEYS: job, done list, stats. ARGV: status, now, version, predictions, probabilities, error,
# default ttl, done ttl, stats ttl. Returns 1 when written, 0 when the job was already final.
FINISH = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if {_FINAL} then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'version', ARGV[3],
  'predictions', ARGV[4], 'proba', ARGV[5], 'error', ARGV[6])
redis.call('HDEL', KEYS[1], 'payload')
redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl') or ARGV[7]))
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('EXPIRE', KEYS[3], ARGV[9])
return 1
"""

# KEYS: job, done list, stats. ARGV: now, done ttl, stats ttl.
# Cancels a queued job. Returns its status before (false when there is no such job).
CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' then return st end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'payload')
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return st
"""

RECORD_FIELDS = (
    "status", "model", "alias", "version", "predictions", "proba", "error",
    "submitted_at", "started_at", "finished_at", "attempts", "worker",
)  # fmt: skip


def stats_key(now: float) -> str:
    return keys.stats(int(now // 60))


def parse_record(job_id: str, values: list[Any]) -> JobResult | None:
    """A JobResult from the fields of ``RECORD_FIELDS`` (HMGET order); None when absent."""
    raw = dict(zip(RECORD_FIELDS, values, strict=True))
    if not raw["status"]:
        return None
    error = json.loads(raw["error"]) if raw["error"] else None
    return JobResult(
        id=job_id,
        status=raw["status"],
        model=raw["model"] or "",
        alias=raw["alias"] or None,
        version=int(raw["version"]) if raw["version"] else None,
        predictions=json.loads(raw["predictions"]) if raw["predictions"] else None,
        probabilities=json.loads(raw["proba"]) if raw["proba"] else None,
        error=JobError(**error) if error else None,
        submitted_at=timestamp(raw["submitted_at"]),
        started_at=timestamp(raw["started_at"]),
        finished_at=timestamp(raw["finished_at"]),
        attempts=int(raw["attempts"] or 0),
        worker=raw["worker"] or None,
    )
