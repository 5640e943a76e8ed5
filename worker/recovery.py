"""The recovery sweeper: the job ledger repairs what crashes, stalls and Redis data loss drop.

It runs in every worker node's main process, several copies at once are safe (each repair is
one atomic script that acts only on jobs still in the state it expects), and every pass:

- stops local pool processes whose batch ran past the time limit;
- recovers the claim lists of pool processes that died (SIGKILL, segfault, out of memory) and
  of nodes whose heartbeat is gone: their jobs go to the isolation queue to run one at a time,
  or fail as ``worker_lost`` (``timeout`` after a time-limit stop) after ``max_attempts``;
- requeues jobs that stayed ``running`` past the visibility timeout;
- pushes again, from the record, jobs still ``queued`` long after every queue ran dry (their
  message was purged or lost with Redis data), or fails those whose record keeps no message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import orjson
import redis

from producer.records import stats_key
from registry import Settings, keys

from . import envelope, ledger

log = logging.getLogger(__name__)

# Seconds both queues must stay empty before queued jobs count as having lost their message.
_QUIET = 5.0

# fail(): ends a job as failed with ``err`` (JSON), keeping it ``ttl`` more seconds, and tells
# its waiters (wake-up channel, reply list) and the per-minute stats.
_FAIL = """
local function fail(key, id, err, ttl, reply, now, done_prefix, reply_ttl, stats, stats_ttl)
  redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'error', err)
  redis.call('EXPIRE', key, ttl or 86400)
  redis.call('PUBLISH', done_prefix .. id, '1')
  if reply then
    redis.call('RPUSH', reply, id)
    redis.call('EXPIRE', reply, reply_ttl)
  end
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('EXPIRE', stats, stats_ttl)
end
"""

# KEYS: isolation queue, in-flight zset, dead letters, stats, queued index. ARGV: now, max
# attempts, job key prefix, wake-up channel prefix, dead limit, reply ttl, stats ttl, 'timeout' to
# fail now as a timeout (else count the attempt), worker_lost message, timeout message, then per
# job: id, raw message ('' to use the record's), expected worker ('' for any). Acts only on jobs
# still 'running' (on the expected worker), so a job that finished or was already recovered is
# left alone. Returns one word per job.
RECOVER = (
    _FAIL
    + """
local out = {}
for b = 11, #ARGV, 3 do
  local id = ARGV[b]
  local key = ARGV[3] .. id
  local rec = redis.call('HMGET', key, 'status', 'attempts', 'payload', 'reply', 'ttl', 'worker')
  local from_claim = ARGV[b + 2] ~= ''
  if from_claim and (not rec[1] or rec[1] == 'queued') and ARGV[b + 1] ~= '' then
    -- Claimed by the dead process but never started: hand the message back as it is.
    redis.call('LPUSH', KEYS[1], ARGV[b + 1])
    if rec[1] then redis.call('ZADD', KEYS[5], ARGV[1], id) end
    out[#out + 1] = 'requeued'
  elseif rec[1] ~= 'running' or (from_claim and rec[6] ~= ARGV[b + 2]) then
    if rec[1] ~= 'running' then redis.call('ZREM', KEYS[2], id) end
    out[#out + 1] = 'skipped'
  else
    redis.call('ZREM', KEYS[2], id)
    local msg = rec[3]
    if not msg or msg == '' then msg = ARGV[b + 1] end
    local attempts = tonumber(rec[2]) or 0
    if ARGV[8] == 'timeout' or attempts >= tonumber(ARGV[2]) or msg == '' then
      local err
      if ARGV[8] == 'timeout' then
        err = cjson.encode({code = 'timeout', message = ARGV[10]})
      else
        err = cjson.encode({code = 'worker_lost', message = ARGV[9]})
      end
      fail(key, id, err, rec[5], rec[4], ARGV[1], ARGV[4], ARGV[6], KEYS[4], ARGV[7])
      -- The record keeps the payload (it expires with the record) for `predictq dead retry`;
      -- the dead letter keeps a bounded excerpt, so dead letters stay small.
      redis.call('HSET', key, 'payload', msg)
      redis.call('LPUSH', KEYS[3], cjson.encode({id = id, error = cjson.decode(err),
        at = tonumber(ARGV[1]), attempts = attempts, message = string.sub(msg, 1, 65536)}))
      redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
      out[#out + 1] = 'failed'
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('LPUSH', KEYS[1], msg)
      redis.call('ZADD', KEYS[5], ARGV[1], id)
      out[#out + 1] = 'requeued'
    end
  end
end
return out
"""
)

# KEYS: queue, isolation queue, queued index, stats. ARGV: now, cutoff, job key prefix, wake-up
# channel prefix, reply ttl, stats ttl, error JSON. When both queues are empty, a job still
# 'queued' since before ``cutoff`` has no message left anywhere (the queue was purged, or Redis
# lost data): a job sent alone is pushed again from its record; a job of a batch message, whose
# record keeps no message, fails saying so. Entries of ended or expired jobs are dropped.
REQUEUE_LOST = (
    _FAIL
    + """
if redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[2]) > 0 then return 0 end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, 1000)) do
  local key = ARGV[3] .. id
  local rec = redis.call('HMGET', key, 'status', 'payload', 'reply', 'ttl')
  if rec[1] == 'queued' and rec[2] and rec[2] ~= '' then
    redis.call('LPUSH', KEYS[1], rec[2])
    redis.call('ZADD', KEYS[3], ARGV[1], id)
  else
    redis.call('ZREM', KEYS[3], id)
    if rec[1] == 'queued' then
      fail(key, id, ARGV[7], rec[4], rec[3], ARGV[1], ARGV[4], ARGV[5], KEYS[4], ARGV[6])
    end
  end
  n = n + 1
end
return n
"""
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sweeper(threading.Thread):
    """One node's recovery loop (see the module docstring)."""

    def __init__(self, client: redis.Redis, settings: Settings, hostname: str) -> None:
        super().__init__(name="predictq-sweeper", daemon=True)
        self.redis = client
        self.settings = settings
        self.hostname = hostname
        self._recover = client.register_script(RECOVER)
        self._requeue_lost = client.register_script(REQUEUE_LOST)
        self._stopped_for_time: set[str] = set()
        self._empty_since: float | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.wait(self.settings.sweep_interval):
            try:
                self.sweep()
            except redis.RedisError as e:
                log.warning("recovery sweep skipped: %s", e)
            except Exception:
                log.exception("recovery sweep failed")

    def sweep(self) -> dict[str, int]:
        """One pass; returns counts of what it did."""
        counts: dict[str, int] = {}
        self._stop_overdue()
        for landing in self.redis.scan_iter(match=keys.claiming("*"), count=1000):
            reason = self._dead_owner(str(landing))
            if reason:
                self._add(counts, self._recover_landing(str(landing), reason))
        now = time.time()
        overdue = self.redis.zrangebyscore(keys.INFLIGHT, "-inf", now, start=0, num=1000)
        if overdue:
            self._add(counts, self.recover([(str(i), "", "") for i in overdue], "lost"))
        lost = self._requeue_lost_after_quiet(now)
        if lost:
            log.warning("%d queued job(s) had lost their message: pushed again or failed", lost)
            counts["relost"] = int(lost)
        return counts

    def _requeue_lost_after_quiet(self, now: float) -> int:
        """Re-push lost queued jobs, once both queues have stayed empty for a while.

        A batch that was just claimed is still 'queued' until it starts; waiting for the
        queues to stay empty across sweeps keeps such jobs from being pushed twice.
        """
        queues = [self.settings.queue, keys.isolate(self.settings.queue)]
        if any(self.redis.llen(q) for q in queues):
            self._empty_since = None
            return 0
        if self._empty_since is None:
            self._empty_since = now
        if now - self._empty_since < _QUIET:
            return 0
        error = orjson.dumps({"code": "worker_lost", "message": (
            "the job's message left the queue without reaching a worker (the queue was purged, "
            "or Redis lost data): submit it again"
        )})  # fmt: skip
        return int(
            self._requeue_lost(
                keys=[*queues, keys.QUEUED, stats_key(now)],
                args=[f"{now:.6f}", now - self.settings.lost_queued_after, ledger.JOB_PREFIX,
                      ledger.DONE_PREFIX, keys.REPLY_TTL, keys.STATS_TTL, error],
            )
        )  # fmt: skip

    @staticmethod
    def _add(counts: dict[str, int], outcomes: list[str]) -> None:
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1

    def _owner(self, landing: str) -> tuple[str, int] | None:
        """(node, pid) of a claim list named ``predictq:claiming:{node}:{pid}``."""
        worker = landing.removeprefix(keys.claiming(""))
        node, _, pid = worker.rpartition(":")
        return (node, int(pid)) if node and pid.isdigit() else None

    def _dead_owner(self, landing: str) -> str | None:
        """Why the claim list's process is gone ('lost' or 'timeout'), or None if it lives."""
        owner = self._owner(landing)
        if owner is None:
            return None
        node, pid = owner
        if node == self.hostname:
            if _pid_alive(pid):
                return None
            worker = f"{node}:{pid}"
            return "timeout" if worker in self._stopped_for_time else "lost"
        # Another node's process: only a node whose heartbeat expired counts as gone, and not
        # while the process's own batch deadline says it may still be working.
        if self.redis.exists(keys.worker(node)):
            return None
        deadline = self.redis.get(keys.busy(f"{node}:{pid}"))
        return None if deadline is not None and float(deadline) > time.time() else "lost"

    def _stop_overdue(self) -> None:
        """SIGKILL local pool processes whose batch passed its deadline."""
        now = time.time()
        for key in self.redis.scan_iter(match=keys.busy(f"{self.hostname}:*"), count=1000):
            worker = str(key).removeprefix(keys.busy(""))
            deadline = self.redis.get(key)
            pid = int(worker.rpartition(":")[2])
            if deadline is None or float(deadline) > now or pid == os.getpid():
                continue
            log.error("stopping pool process %s: its batch passed the time limit", pid)
            self._stopped_for_time.add(worker)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.redis.delete(key)

    def _recover_landing(self, landing: str, reason: str) -> list[str]:
        raws = self.redis.lrange(landing, 0, -1)
        worker = landing.removeprefix(keys.claiming(""))
        # A batch message goes back as a message per job: each may need to run alone.
        jobs = [
            (job_id, message, worker)
            for raw in raws
            for job_id, message in envelope.singles(str(raw), self.settings.queue)
        ]
        # A time-limit stop of a batch of several jobs does not say which job was slow:
        # each gets another, lone, attempt.
        if reason == "timeout" and len(jobs) > 1:
            reason = "lost"
        outcomes = self.recover(jobs, reason) if jobs else []
        self.redis.delete(landing, keys.busy(worker))
        self._stopped_for_time.discard(worker)
        if jobs:
            log.warning("recovered %d job(s) of dead process %s: %s", len(jobs), worker,
                        {o: outcomes.count(o) for o in set(outcomes)})  # fmt: skip
        return outcomes

    def recover(self, jobs: list[tuple[str, str, str]], reason: str) -> list[str]:
        """Requeue (to the isolation queue) or fail each (id, raw, expected worker)."""
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
        ]  # fmt: skip
        for job_id, raw, worker in jobs:
            argv += [job_id, raw, worker]
        result = self._recover(
            keys=[keys.isolate(self.settings.queue), keys.INFLIGHT, keys.DEAD, stats_key(now),
                  keys.QUEUED],
            args=argv,
        )  # fmt: skip
        return [str(r) for r in result]
