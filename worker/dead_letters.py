"""Dead letters: jobs contained after crashing or stalling their workers, and refused messages."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from producer import celery_results
from producer import records as rec
from registry import Settings, keys

from . import ledger

# KEYS: queue, dead letters, queued index. ARGV: now, job key prefix, the entry as stored, id,
# message. Takes the entry off the dead-letter list and queues its failed job afresh (attempts
# reset, the message stamped with the time it was queued again; its Celery result, if it gets one,
# is deleted: that job is pending again). Returns 'retried', 'gone'
# (someone else took the entry), 'expired' (no record left) or the job's status when it is not
# 'failed' (a job that ran again meanwhile keeps its result).
RETRY = (
    rec.STAMP
    + """
local key = ARGV[2] .. ARGV[4]
local st = redis.call('HGET', key, 'status')
if st and st ~= 'failed' then return st end
if redis.call('LREM', KEYS[2], 1, ARGV[3]) == 0 then return 'gone' end
if not st then return 'expired' end
-- The record's payload is whole; the dead letter's may be an excerpt.
local msg = redis.call('HGET', key, 'payload')
if not msg or msg == '' then msg = ARGV[5] end
local at = clock()
msg = restamp(msg, at)
redis.call('HSET', key, 'status', 'queued', 'attempts', '0', 'error', '', 'payload', msg,
  'started_at', '', 'finished_at', '', 'submitted_at', ARGV[1])
redis.call('ZADD', KEYS[3], at, ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('LPUSH', KEYS[1], msg)
if redis.call('HGET', key, '"""
    + celery_results.FLAG
    + """') then redis.call('DEL', '"""
    + keys.CELERY_META_PREFIX
    + """' .. ARGV[4]) end
return 'retried'
"""
)


def list_dead(client: redis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters."""
    return [orjson.loads(e) for e in client.lrange(keys.DEAD, 0, limit - 1)]


# Outcomes of retry_dead that leave a job unretried: its record expired, or no message was kept.
UNRETRYABLE = frozenset({"expired", "no_message"})


def retry_dead(client: redis.Redis, settings: Settings, job_ids: set[str] | None) -> dict[str, str]:
    """Queue again the dead-lettered jobs in ``job_ids`` (all when None): id -> outcome.

    An outcome is ``retried``, ``gone`` (another retry took it), ``expired``, ``no_message`` or
    the job's status when it is no longer ``failed``. IDs with no dead letter have no outcome.
    """
    script = client.register_script(RETRY)
    outcomes: dict[str, str] = {}
    for raw in client.lrange(keys.DEAD, 0, -1):
        entry = orjson.loads(raw)
        job_id, message = entry.get("id"), entry.get("message")
        if not job_id or (job_ids is not None and job_id not in job_ids):
            continue
        if not message:
            outcomes[job_id] = "no_message"
            continue
        outcomes[job_id] = str(
            script(
                keys=[settings.queue, keys.DEAD, keys.queued(settings.queue), keys.tries(job_id)],
                args=[f"{time.time():.6f}", ledger.JOB_PREFIX, raw, job_id, message],
            )
        )
    return outcomes
