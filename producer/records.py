"""The job record in Redis, producer side: submit and cancel, and reading a record back.

Each transition is one Lua script, so it is atomic and costs one round trip; the worker's side
of the ledger is ``worker/ledger.py``.
"""

from __future__ import annotations

import json
from typing import Any

from registry import keys

from .contract import JobError, JobResult, timestamp

# KEYS: queue, queued index. ARGV: now, reply list, '1' to check for existing IDs, job key prefix,
# then per job: id, model, alias, version, probabilities, ttl, message. Writes each new record as
# 'queued', indexes it and pushes its message; an existing ID is left alone and nothing is pushed.
# Returns 1 (enqueued) or 0 (existed) per job. Generated IDs skip the existence check: it is a
# Redis call per job, and Redis time per job is what bounds throughput.
SUBMIT = """
local out = {}
local messages = {}
local queued = {}
for b = 5, #ARGV, 7 do
  local key = ARGV[4] .. ARGV[b]
  if ARGV[3] == '1' and redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', key, 'status', 'queued', 'model', ARGV[b + 1], 'alias', ARGV[b + 2],
      'version', ARGV[b + 3], 'probabilities', ARGV[b + 4], 'ttl', ARGV[b + 5],
      'submitted_at', ARGV[1], 'attempts', '0', 'payload', ARGV[b + 6])
    if ARGV[2] ~= '' then redis.call('HSET', key, 'reply', ARGV[2]) end
    redis.call('EXPIRE', key, ARGV[b + 5])
    messages[#messages + 1] = ARGV[b + 6]
    queued[#queued + 1] = ARGV[1]; queued[#queued + 1] = ARGV[b]
    out[#out + 1] = 1
  end
end
for i = 1, #messages, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(messages, i, math.min(i + 999, #messages)))
  redis.call('ZADD', KEYS[2], unpack(queued, 2 * i - 1, math.min(2 * i + 1998, #queued)))
end
return out
"""

# KEYS: job, stats, queued index. ARGV: now, stats ttl, wake-up channel, job id, reply ttl.
# Cancels a queued job and wakes its waiters. Returns its status before (nil: no such job).
CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' then return st end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'payload', '')
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[3], '1')
local reply = redis.call('HGET', KEYS[1], 'reply')
if reply then
  redis.call('RPUSH', reply, ARGV[4])
  redis.call('EXPIRE', reply, ARGV[5])
end
redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
redis.call('EXPIRE', KEYS[2], ARGV[2])
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
    # Our own scripts wrote these fields, so construction skips re-validation: wait_many
    # builds tens of thousands of these at a time.
    return JobResult.model_construct(
        id=job_id,
        status=raw["status"],
        model=raw["model"] or "",
        alias=raw["alias"] or None,
        version=int(raw["version"]) if raw["version"] else None,
        predictions=json.loads(raw["predictions"]) if raw["predictions"] else None,
        probabilities=json.loads(raw["proba"]) if raw["proba"] else None,
        error=JobError.model_construct(**error) if error else None,
        submitted_at=timestamp(raw["submitted_at"]),
        started_at=timestamp(raw["started_at"]),
        finished_at=timestamp(raw["finished_at"]),
        attempts=int(raw["attempts"] or 0),
        worker=raw["worker"] or None,
    )
