"""Taking a claim list over and recovering its jobs: what the sweeper does for processes that
are gone, and what a consumer does with a batch that keeps failing.

A takeover is one atomic rename of the claim list, so exactly one sweeper gets it and a live
owner's later claims start a fresh list. Recovering the renamed list is one script that runs
only while that list exists and deletes it at the end, so it happens once even when two
sweepers race, or when a sweeper that died half-way is followed by another (the index of
taken-over lists gives each a deadline). Each job goes to the isolation queue to run alone, or,
after ``max_attempts`` deliveries, fails as ``worker_lost`` (``timeout`` after a time-limit stop)
and is dead-lettered; a delivery that never reached START counts too.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
import redis

from producer import celery_results
from producer import records as rec
from producer.records import stats_key
from registry import InvalidInput, JobTimeout, Settings, WorkerLost, keys

from . import envelope, ledger, metrics
from .batching import Job
from .events import TaskEvents

log = logging.getLogger(__name__)

# A taken-over list not recovered within this many seconds (its sweeper died) is taken again.
_RECOVER_WITHIN = 60

# fail(): ends a job as failed with ``err`` (JSON), keeping it ``ttl`` more seconds, and tells its
# waiters (wake-up channel, reply list, its Celery result when it gets one) and the per-minute
# stats (in all and per model). With clock() and restamp() (records.STAMP): requeued jobs are
# indexed and stamped on Redis's clock, as SUBMIT does.
FAIL = (
    rec.STAMP
    + celery_results.LUA
    + f"""
local function fail(key, id, err, ttl, reply, now, done_prefix, reply_ttl, stats, stats_ttl)
  redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'error', err)
  redis.call('EXPIRE', key, ttl or 86400)
  if redis.call('HGET', key, '{celery_results.FLAG}') then
    celery_result(key, id, now, ttl or 86400)
  end
  redis.call('PUBLISH', done_prefix .. id, '1')
  if reply then
    redis.call('RPUSH', reply, id)
    redis.call('EXPIRE', reply, reply_ttl)
  end
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('HINCRBY', stats, 'failed:' .. (redis.call('HGET', key, 'model') or ''), 1)
  redis.call('EXPIRE', stats, stats_ttl)
end
"""
)

# KEYS: isolation queue, in-flight zset, dead letters, stats, queued index, the taken-over list
# (any key when none), the index of taken-over lists. ARGV: now, max attempts, job key prefix,
# wake-up channel prefix, dead limit, reply ttl, stats ttl, 'timeout' to fail now as a timeout
# (else count the attempt), worker_lost message, timeout message, '1' when recovering a list,
# default ttl, tries key prefix, then per job: id, raw message ('' to use the record's), expected
# worker ('' for any). A list is recovered once: when it is gone, another sweeper did it. Acts
# only on jobs still 'running' (on the expected worker), or claimed and never started, so a job
# that finished or was already recovered is left alone. Returns one word per job.
RECOVER = (
    ledger.ALLOW_OOM
    + FAIL
    + """
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[6]) == 0 then
  -- Recovered already, or emptied when its last element was dead-lettered: drop its entry.
  redis.call('ZREM', KEYS[7], KEYS[6])
  return {}
end
local at = clock()
local out = {}
local max = tonumber(ARGV[2])
local function contain(key, id, err, rec, msg, attempts)
  -- The record keeps the payload (it expires with the record) for `predictq dead retry`;
  -- the dead letter keeps a bounded excerpt, so dead letters stay small.
  redis.call('HSET', key, 'payload', msg, 'attempts', attempts)
  fail(key, id, err, rec[5] or ARGV[12], rec[4], ARGV[1], ARGV[4], ARGV[6], KEYS[4], ARGV[7])
  redis.call('ZREM', KEYS[5], id)
  redis.call('LPUSH', KEYS[3], cjson.encode({id = id, error = cjson.decode(err),
    at = tonumber(ARGV[1]), attempts = attempts, message = string.sub(msg, 1, 4096)}))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
end
local lost = cjson.encode({code = 'worker_lost', message = ARGV[9]})
for b = 14, #ARGV, 3 do
  local id = ARGV[b]
  local key = ARGV[3] .. id
  local rec = redis.call('HMGET', key, 'status', 'attempts', 'payload', 'reply', 'ttl', 'worker')
  local from_claim = ARGV[b + 2] ~= ''
  if from_claim and (not rec[1] or rec[1] == 'queued') and ARGV[b + 1] ~= '' then
    -- Claimed by the dead process but never started: still a delivery, since decoding it may
    -- be what killed the process. A job with no record yet counts on a key of its own.
    local attempts
    if rec[1] then
      attempts = redis.call('HINCRBY', key, 'attempts', 1)
    else
      attempts = redis.call('INCR', ARGV[13] .. id)
      redis.call('EXPIRE', ARGV[13] .. id, ARGV[12])
    end
    if attempts >= max then
      if not rec[1] then
        redis.call('HSET', key, 'model', '', 'alias', '', 'submitted_at', ARGV[1], 'ttl', ARGV[12])
        -- No record and not one of ours: a stock client's job, which waits on a Celery result.
        if not string.find(ARGV[b + 1], '"predictq_record":true', 1, true) then
          redis.call('HSET', key, '"""
    + celery_results.FLAG
    + """', '1')
        end
      end
      contain(key, id, lost, rec, ARGV[b + 1], attempts)
      out[#out + 1] = 'failed'
    else
      redis.call('LPUSH', KEYS[1], restamp(ARGV[b + 1], at))
      if rec[1] then redis.call('ZADD', KEYS[5], at, id) end
      out[#out + 1] = 'requeued'
    end
  elseif rec[1] ~= 'running' or (from_claim and rec[6] ~= ARGV[b + 2]) then
    if rec[1] ~= 'running' then redis.call('ZREM', KEYS[2], id) end
    out[#out + 1] = 'skipped'
  else
    redis.call('ZREM', KEYS[2], id)
    local msg = rec[3]
    if not msg or msg == '' then msg = ARGV[b + 1] end
    local attempts = tonumber(rec[2]) or 0
    if ARGV[8] == 'timeout' or attempts >= max or msg == '' then
      local err = lost
      if ARGV[8] == 'timeout' then
        err = cjson.encode({code = 'timeout', message = ARGV[10]})
      end
      contain(key, id, err, rec, msg, attempts)
      out[#out + 1] = 'failed'
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('LPUSH', KEYS[1], restamp(msg, at))
      redis.call('ZADD', KEYS[5], at, id)
      out[#out + 1] = 'requeued'
    end
  end
end
if ARGV[11] == '1' then
  redis.call('DEL', KEYS[6])
  redis.call('ZREM', KEYS[7], KEYS[6])
end
return out
"""
)

# KEYS: the claim list, the list to rename it to, the index of taken-over lists, busy key, leases,
# heartbeat of the owner's node, dead letters, running hash. ARGV: worker, 'dead' (its process is
# known to be gone) or 'stale' (take it only if its lease ran out, or it has none and the node's
# heartbeat is gone: checked here, atomically), seconds to recover it in, dead limit. Renames the
# list, so exactly one sweeper gets it and a live owner's later claims start a fresh one; marks the
# owner's busy key 'taken' after a stale takeover (a live owner's FINISH then leaves its new list
# alone, and its own node replaces it). Returns false, or why ('timeout' after a time-limit stop,
# else 'lost') followed by the messages that are text (the rest are dead-lettered). The owner's
# count in the running hash goes with its list (and with the process, when it is dead).
TAKEOVER = (
    ledger.ALLOW_OOM
    + ledger.COMMON
    + ledger.TEXT
    + """
local t = now()
local score = redis.call('ZSCORE', KEYS[5], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] == 'dead' or (score and tonumber(score) <= t) then
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
  if ARGV[2] == 'dead' then redis.pcall('HDEL', KEYS[8], ARGV[1]) end  -- a count (see START)
  return false
end
if ARGV[2] == 'stale' then
  if score and tonumber(score) > t then return false end
  if not score and redis.call('EXISTS', KEYS[6]) == 1 then return false end
end
local why = redis.call('GET', KEYS[4])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], t + tonumber(ARGV[3]), KEYS[2])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.pcall('HDEL', KEYS[8], ARGV[1])
if ARGV[2] == 'stale' and why ~= 'timeout' then
  redis.call('SET', KEYS[4], 'taken', 'EX', 3600)
else
  redis.call('DEL', KEYS[4])
end
local out = {why == 'timeout' and 'timeout' or 'lost'}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if utf8(m) then
    out[#out + 1] = m
  else
    redis.call('LREM', KEYS[2], 1, m)
    dead(KEYS[7], ARGV[4], m)
  end
end
return out
"""
)

# KEYS: the index of taken-over lists, a list in it. ARGV: seconds to recover it in. A list
# whose sweeper did not finish in time: takes it (one sweeper wins) and returns its messages.
RETAKE = (
    ledger.ALLOW_OOM
    + ledger.COMMON
    + """
local t = now()
local score = redis.call('ZSCORE', KEYS[1], KEYS[2])
if not score or tonumber(score) > t then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], KEYS[2])
  return false
end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[1]), KEYS[2])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
)


class Recovery:
    """Taking claim lists over and recovering their jobs: what the sweeper and a consumer that
    gives up on its own batch share."""

    def __init__(
        self, client: redis.Redis, settings: Settings, events: TaskEvents | None = None
    ) -> None:
        """``events``: where the jobs it fails are told as failed tasks (task events on)."""
        self.redis = client
        self.settings = settings
        self.events = events
        self._takeover = client.register_script(TAKEOVER)
        self._retake = client.register_script(RETAKE)
        self._recover = client.register_script(RECOVER)
        self._dead = client.register_script(ledger.DEAD_LETTER)

    def take_over(self, worker: str, mode: str) -> list[str] | None:
        """Take ``worker``'s claim list over and recover it; None when there was nothing to
        take (or, with ``mode`` 'stale', its owner turned out to be alive)."""
        node = worker.rpartition(":")[0]
        target = keys.recovering(worker, uuid.uuid4().hex[:12])
        got = self._takeover(
            keys=[keys.claiming(worker), target, keys.RECOVERING, keys.busy(worker), keys.LEASES,
                  keys.worker(node), keys.DEAD, keys.RUNNING],
            args=[worker, mode, _RECOVER_WITHIN, keys.DEAD_LIMIT],
        )  # fmt: skip
        if not got:
            return None
        return self.recover_list(target, worker, str(got[0]), [str(m) for m in got[1:]])

    def retake(self, target: str) -> list[str] | None:
        """Recover a taken-over list whose sweeper did not finish; None if not due."""
        got = self._retake(keys=[keys.RECOVERING, target], args=[_RECOVER_WITHIN])
        if not got:
            return None
        worker = target.removeprefix(keys.recovering("", "")[:-1]).rpartition(":")[0]
        return self.recover_list(target, worker, "lost", [str(m) for m in got])

    def recover_list(self, target: str, worker: str, reason: str, raws: list[str]) -> list[str]:
        # A batch message goes back as a message per job: each may need to run alone.
        jobs = []
        for raw in raws:
            try:
                singles = envelope.singles(raw, self.settings.queue)
            except Exception as e:  # anything a hostile message makes the split raise
                error = InvalidInput(f"message could not be split ({type(e).__name__}: {e})")
                log.error("dead-lettered a message of %s: %s", worker, error.message)
                self._dead(keys=[keys.DEAD], args=[ledger.dead_entry(None, raw, error),
                                                   keys.DEAD_LIMIT])  # fmt: skip
                continue
            jobs += [(job_id, message, worker) for job_id, message in singles]
        # A time-limit stop of a batch of several jobs does not say which job was slow:
        # each gets another, lone, attempt.
        if reason == "timeout" and len(jobs) > 1:
            reason = "lost"
        outcomes = self.recover(jobs, reason, target=target)
        if jobs:
            log.warning("recovered %d job(s) of %s: %s", len(jobs), worker,
                        {o: outcomes.count(o) for o in set(outcomes)})  # fmt: skip
        return outcomes

    def recover(
        self, jobs: list[tuple[str, str, str]], reason: str, *, target: str | None = None
    ) -> list[str]:
        """Requeue (to the isolation queue) or fail each (id, raw, expected worker); with
        ``target``, only if that taken-over list is still there, and delete it."""
        now = time.time()
        attempts = self.settings.max_attempts
        argv: list[Any] = [
            f"{now:.6f}", attempts, ledger.JOB_PREFIX, ledger.DONE_PREFIX, keys.DEAD_LIMIT,
            keys.REPLY_TTL, keys.STATS_TTL, reason,
            f"the job was running when its worker process died or stalled, and it was "
            f"contained after {attempts} attempt(s); see `predictq dead list`, fix the input "
            "or the model, then `predictq dead retry`",
            f"the job ran past the time limit of {self.settings.time_limit:g}s and its process "
            "was stopped; raise PREDICTQ_TIME_LIMIT or send fewer rows per job",
            "1" if target else "", self.settings.result_ttl, keys.tries(""),
        ]  # fmt: skip
        for job_id, raw, worker in jobs:
            argv += [job_id, raw, worker]
        result = self._recover(
            keys=[keys.isolate(self.settings.queue), keys.INFLIGHT, keys.DEAD, stats_key(now),
                  keys.queued(self.settings.queue), target or keys.RECOVERING, keys.RECOVERING],
            args=argv,
        )  # fmt: skip
        outcomes = [str(r) for r in result]
        if self.events is not None and "failed" in outcomes:
            # Their task-started was sent when they were claimed: end them in Flower too.
            error = JobTimeout(argv[9]) if reason == "timeout" else WorkerLost(argv[8])
            failed = [Job(job_id, None, error=error)
                      for (job_id, _, _), outcome in zip(jobs, outcomes, strict=False)
                      if outcome == "failed"]  # fmt: skip
            self.events.finished(failed, now)
            self.events.flush()
        # An empty reply means another sweeper recovered the list first (and counted it).
        if metrics.enabled() and len(outcomes) == len(jobs):
            self._count_failed([j for (j, _, _), o in zip(jobs, outcomes, strict=True)
                                if o == "failed"])  # fmt: skip
        return outcomes

    def _count_failed(self, job_ids: list[str]) -> None:
        """Count the jobs recovery failed, as read back from their records (a round trip
        that recovery, never the job path, pays; and only with metrics on)."""
        if not job_ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "model", "version", "error")
        ended = []
        for model, version, error in pipe.execute():
            code = "worker_lost"
            if error:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    code = str(orjson.loads(error)["code"])
            ended.append((str(model or ""), str(version or ""), code))
        metrics.jobs_failed(ended)


def surrender(
    client: redis.Redis, settings: Settings, worker: str, events: TaskEvents | None = None
) -> dict[str, int]:
    """Hand ``worker``'s own batch to recovery (called by its consumer, which gives up on it)."""
    outcomes = Recovery(client, settings, events).take_over(worker, "dead") or []
    return {o: outcomes.count(o) for o in set(outcomes)}
