"""The recovery sweeper: the job ledger repairs what crashes, stalls and Redis data loss drop.

It runs in every worker node's main process, and several copies at once are safe: a claim list is
taken over by one atomic rename, so exactly one sweeper recovers it, and every repair acts only
on jobs still in the state it expects. Every pass:

- takes over the claim lists of pool processes that died (SIGKILL, segfault, out of memory, a
  time-limit stop), of processes whose lease ran out (a whole node gone, or a process stuck), and
  of nodes whose heartbeat is gone; a local process that is stuck, or whose batch another node
  took over, is killed so that the pool replaces it;
- recovers each taken-over list: its jobs go to the isolation queue to run one at a time, or fail
  as ``worker_lost`` (``timeout`` after a time-limit stop) after ``max_attempts`` deliveries; a
  crash before a job started counts as a delivery too, so poison that kills its process while it
  is decoded is contained as well;
- requeues jobs of Celery's own consumer (``PREDICTQ_BATCHING=false``) that stayed ``running``
  past the visibility timeout;
- finds jobs still ``queued`` whose message is in no queue, by their own age: a job queued before
  the oldest message still waiting (messages carry the time they were queued) has no message left
  there. A job sent alone is pushed again from its record; a job of a batch message, whose record
  keeps no message, fails saying so.

After it loses Redis, a sweeper waits one lease period before it takes anything over on the
strength of a lease or a heartbeat: live workers need that long to renew theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis

from producer.records import stats_key
from registry import Settings, keys

from . import envelope, ledger

log = logging.getLogger(__name__)

# A taken-over list not recovered within this many seconds (its sweeper died) is taken again.
_RECOVER_WITHIN = 60
# Batching off: seconds both queues must stay empty before queued jobs count as lost.
_QUIET = 5.0
# A job counts as lost only when it was queued this long before the oldest waiting message
# (clocks of different producers may differ by that much), and is still so a sweep later.
_SKEW = 5.0
_CONFIRM = 5.0
# How many messages from a queue's tail the sweeper looks at to find the oldest stamped one.
_STAMP_DEPTH = 16
# Every so often a pass also scans the keyspace for claim lists of processes it never heard of.
_FULL_SCAN_EVERY = 60.0

# fail(): ends a job as failed with ``err`` (JSON), keeping it ``ttl`` more seconds, and tells
# its waiters (wake-up channel, reply list) and the per-minute stats. restamp(): a message with
# its queued time set to now, for the lost-queued check.
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
local function restamp(msg, now)
  return (string.gsub(msg, '"predictq_at":[%d%.]+', '"predictq_at":' .. now, 1))
end
"""

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
    + _FAIL
    + """
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[6]) == 0 then return {} end
local out = {}
local max = tonumber(ARGV[2])
local function contain(key, id, err, rec, msg, attempts)
  fail(key, id, err, rec[5] or ARGV[12], rec[4], ARGV[1], ARGV[4], ARGV[6], KEYS[4], ARGV[7])
  -- The record keeps the payload (it expires with the record) for `predictq dead retry`;
  -- the dead letter keeps a bounded excerpt, so dead letters stay small.
  redis.call('HSET', key, 'payload', msg, 'attempts', attempts)
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
        redis.call('HSET', key, 'model', '', 'submitted_at', ARGV[1], 'ttl', ARGV[12])
      end
      contain(key, id, lost, rec, ARGV[b + 1], attempts)
      out[#out + 1] = 'failed'
    else
      redis.call('LPUSH', KEYS[1], restamp(ARGV[b + 1], ARGV[1]))
      if rec[1] then redis.call('ZADD', KEYS[5], ARGV[1], id) end
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
      redis.call('LPUSH', KEYS[1], restamp(msg, ARGV[1]))
      redis.call('ZADD', KEYS[5], ARGV[1], id)
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

# KEYS: the claim list, the list to rename it to, the index of taken-over lists, busy key,
# leases, heartbeat of the owner's node, dead letters. ARGV: worker, 'dead' (its process is
# known to be gone) or 'stale' (take it only if its lease ran out, or it has none and the node's
# heartbeat is gone: checked here, atomically), seconds to recover it in, dead limit. Renames the
# list, so exactly one sweeper gets it and a live owner's later claims start a fresh one; marks
# the owner's busy key 'taken' after a stale takeover (a live owner's FINISH then leaves its new
# list alone, and its own node replaces it). Returns false, or why ('timeout' after a time-limit
# stop, else 'lost') followed by the messages that are text (the rest are dead-lettered).
TAKEOVER = (
    ledger.ALLOW_OOM
    + ledger.COMMON
    + """
local t = now()
local score = redis.call('ZSCORE', KEYS[5], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] == 'dead' or (score and tonumber(score) <= t) then
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
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
    dead(KEYS[7], ARGV[4], m, 'the queue element is not UTF-8 text')
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

# KEYS: a queue. ARGV: how many messages from its tail to look at. The queued time of the oldest
# waiting message that carries one: '' when the queue is empty, 'unknown' when none of those
# messages does (a stock client's).
OLDEST = """
if redis.call('LLEN', KEYS[1]) == 0 then return '' end
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('LINDEX', KEYS[1], -i)
  if not m then break end
  local at = string.match(string.sub(m, 1, 100), '"predictq_at":([%d%.]+)')
  if at then return at end
end
return 'unknown'
"""

# KEYS: queue, queued index, stats, isolation queue, kombu's unacked hash. ARGV: now, job key
# prefix, wake-up channel prefix, reply ttl, stats ttl, error JSON, '1' to act only while both
# queues and kombu's unacked hash are empty, then per job: id, the queued-index score it was
# found lost with. A job still 'queued' with that very score (no other sweeper acted, nothing
# requeued it meanwhile) is pushed again from its record when it was sent alone, or fails
# saying so. Entries of ended or expired jobs are dropped. Returns how many jobs it repaired.
REQUEUE_LOST = (
    ledger.ALLOW_OOM
    + _FAIL
    + """
if ARGV[7] == '1' and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[4]) > 0
    or redis.call('HLEN', KEYS[5]) > 0) then
  return 0
end
local n = 0
for b = 8, #ARGV, 2 do
  local id = ARGV[b]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) == tonumber(ARGV[b + 1]) then
    local key = ARGV[2] .. id
    local rec = redis.call('HMGET', key, 'status', 'payload', 'reply', 'ttl')
    if rec[1] == 'queued' and rec[2] and rec[2] ~= '' then
      -- To the front of the line, since it waited long enough already; with the time it was
      -- first queued, so that the queue's oldest stamp never moves forward past a waiting job.
      redis.call('RPUSH', KEYS[1], rec[2])
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      n = n + 1
    else
      redis.call('ZREM', KEYS[2], id)
      if rec[1] == 'queued' then
        fail(key, id, ARGV[6], rec[4], rec[3], ARGV[1], ARGV[3], ARGV[4], KEYS[3], ARGV[5])
        n = n + 1
      end
    end
  end
end
return n
"""
)

_LOST_QUEUED = orjson.dumps({"code": "worker_lost", "message": (
    "the job's message left the queue without reaching a worker (the queue was purged, or "
    "Redis lost data): submit it again"
)})  # fmt: skip
# kombu's Redis transport keeps messages it delivered to Celery's consumer here until acked.
_KOMBU_UNACKED = "unacked"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(worker: str) -> tuple[str, int] | None:
    """(node, pid) of a worker process named ``{node}:{pid}``."""
    node, _, pid = worker.rpartition(":")
    return (node, int(pid)) if node and pid.isdigit() else None


class Recovery:
    """Taking claim lists over and recovering their jobs: what the sweeper and a consumer that
    gives up on its own batch share."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._takeover = client.register_script(TAKEOVER)
        self._retake = client.register_script(RETAKE)
        self._recover = client.register_script(RECOVER)

    def take_over(self, worker: str, mode: str) -> list[str] | None:
        """Take ``worker``'s claim list over and recover it; None when there was nothing to
        take (or, with ``mode`` 'stale', its owner turned out to be alive)."""
        node = worker.rpartition(":")[0]
        target = keys.recovering(worker, uuid.uuid4().hex[:12])
        got = self._takeover(
            keys=[keys.claiming(worker), target, keys.RECOVERING, keys.busy(worker), keys.LEASES,
                  keys.worker(node), keys.DEAD],
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
        jobs = [
            (job_id, message, worker)
            for raw in raws
            for job_id, message in envelope.singles(raw, self.settings.queue)
        ]
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
                  keys.QUEUED, target or keys.RECOVERING, keys.RECOVERING],
            args=argv,
        )  # fmt: skip
        return [str(r) for r in result]


def surrender(client: redis.Redis, settings: Settings, worker: str) -> dict[str, int]:
    """Hand ``worker``'s own batch to recovery (called by its consumer, which gives up on it)."""
    outcomes = Recovery(client, settings).take_over(worker, "dead") or []
    return {o: outcomes.count(o) for o in set(outcomes)}


class Sweeper(threading.Thread):
    """One node's recovery loop (see the module docstring).

    ``local_pids``: the pids of this node's pool processes, which tell a live process from a
    dead one whose pid the system gave to another; when it returns None, a pid counts as live
    while some process has it.
    """

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        hostname: str,
        local_pids: Callable[[], list[int] | None] | None = None,
    ) -> None:
        super().__init__(name="predictq-sweeper", daemon=True)
        self.redis = client
        self.settings = settings
        self.hostname = hostname
        self.recovery = Recovery(client, settings)
        self._oldest = client.register_script(OLDEST)
        self._requeue_lost = client.register_script(REQUEUE_LOST)
        self._local_pids = local_pids
        self._empty_since: float | None = None
        self._suspects: dict[str, tuple[float, float]] = {}
        self._scanned = float("-inf")
        # Leases and heartbeats are not trusted until live workers had a chance to renew them.
        self._grace_until = time.monotonic() + ledger.LEASE_SECONDS + ledger.RENEW_EVERY
        self._lost_redis = False
        self.replaced = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.wait(self.settings.sweep_interval):
            try:
                self.sweep()
            except redis.RedisError as e:
                if not self._lost_redis:
                    log.warning("recovery sweeps paused: %s", e)
                self._lost_redis = True
            except Exception:
                log.exception("recovery sweep failed")
            else:
                if self._lost_redis:
                    log.info("recovery sweeps resumed")
                    self._grace_until = time.monotonic() + ledger.LEASE_SECONDS + ledger.RENEW_EVERY
                    self._lost_redis = False

    def sweep(self) -> dict[str, int]:
        """One pass; returns counts of what it did."""
        counts: dict[str, int] = {}
        self._sweep_claim_lists(counts)
        for target in self.redis.zrangebyscore(keys.RECOVERING, "-inf", self._now(), 0, 10):
            self._add(counts, self.recovery.retake(str(target)) or [])
        now = time.time()
        overdue = self.redis.zrangebyscore(keys.INFLIGHT, "-inf", now, start=0, num=1000)
        if overdue:
            self._add(counts, self.recovery.recover([(str(i), "", "") for i in overdue], "lost"))
        lost = self._lost_queued(now)
        if lost:
            log.warning("%d queued job(s) had lost their message: pushed again or failed", lost)
            counts["relost"] = int(lost)
        return counts

    def _now(self) -> float:
        """Redis's clock, which leases are kept on."""
        seconds, micros = self.redis.time()
        return float(seconds) + micros / 1e6

    @staticmethod
    def _add(counts: dict[str, int], outcomes: list[str]) -> None:
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1

    def _workers(self) -> set[str]:
        """Every worker process that may hold a claim list."""
        workers = {str(w) for w in self.redis.hkeys(keys.CONSUMERS)}
        workers |= {str(w) for w in self.redis.zrange(keys.LEASES, 0, -1)}
        if time.monotonic() - self._scanned > _FULL_SCAN_EVERY:
            prefix = keys.claiming("")
            workers |= {
                str(k).removeprefix(prefix)
                for k in self.redis.scan_iter(match=keys.claiming("*"), count=1000)
            }
            self._scanned = time.monotonic()
        return workers

    def _sweep_claim_lists(self, counts: dict[str, int]) -> None:
        workers = sorted(w for w in self._workers() if _owner(w) is not None)
        if not workers:
            return
        pipe = self.redis.pipeline(transaction=False)
        for w in workers:
            pipe.exists(keys.claiming(w))
            pipe.zscore(keys.LEASES, w)
            pipe.get(keys.busy(w))
        found = pipe.execute()
        now = self._now()
        trusted = time.monotonic() >= self._grace_until
        pids = self._local_pids() if self._local_pids else None
        local = set(pids) if pids is not None else None
        for i, w in enumerate(workers):
            exists, score, busy = found[3 * i : 3 * i + 3]
            node, pid = _owner(w) or ("", 0)
            expired = score is not None and float(score) <= now
            if node == self.hostname:
                # The pool's own list tells a pool process from an unrelated one that got a
                # dead one's pid, before anything is killed; a process forked a moment ago may
                # not be on that list yet, so whether one lives is asked of the system.
                alive = _pid_alive(pid)
                ours = local is None or pid in local
                if (
                    alive
                    and ours
                    and pid != os.getpid()
                    and (busy == "taken" or (expired and trusted))
                ):
                    self._replace(pid, "its batch was taken over" if busy == "taken" else
                                  "it stopped renewing the lease on its batch")  # fmt: skip
                    alive = False
                if not alive:
                    self._add(counts, self.recovery.take_over(w, "dead") or [])
                    if not exists:
                        self.redis.hdel(keys.CONSUMERS, w)
            elif exists and trusted and (expired or score is None):
                # The script checks again, atomically, that the lease ran out or that the
                # process has none and its node's heartbeat is gone.
                self._add(counts, self.recovery.take_over(w, "stale") or [])
            elif not exists and not self.redis.exists(keys.worker(node)) and trusted:
                self.redis.hdel(keys.CONSUMERS, w)

    def _replace(self, pid: int, why: str) -> None:
        """SIGKILL a local pool process that no longer consumes: the pool forks a new one."""
        log.error("replacing pool process %d: %s", pid, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.replaced += 1

    def _lost_queued(self, now: float) -> int:
        """Repair queued jobs whose message is in no queue (see the module docstring)."""
        if not self.settings.batching:
            return self._lost_when_quiet(now)
        cutoff = now - self.settings.lost_queued_after
        old: list[Any] = self.redis.zrangebyscore(
            keys.QUEUED, "-inf", cutoff, 0, 1000, withscores=True
        )
        if not old:
            self._suspects.clear()
            return 0
        horizon = float("inf")
        for queue in (self.settings.queue, keys.isolate(self.settings.queue)):
            oldest = str(self._oldest(keys=[queue], args=[_STAMP_DEPTH]))
            if oldest == "unknown":
                return 0  # a stock client's messages at the tail: look again next pass
            if oldest:
                horizon = min(horizon, float(oldest) - _SKEW)
        suspects: dict[str, tuple[float, float]] = {}
        confirmed: list[Any] = []
        for job_id, raw_score in old:
            score = float(raw_score)
            if score >= horizon:
                continue
            seen = self._suspects.get(str(job_id))
            first = seen[1] if seen is not None and seen[0] == score else now
            suspects[str(job_id)] = (score, first)
            if now - first >= _CONFIRM:
                confirmed += [str(job_id), repr(score)]
        self._suspects = suspects
        if not confirmed:
            return 0
        return self._repair(now, confirmed, quiet=False)

    def _lost_when_quiet(self, now: float) -> int:
        """With batching off, Celery's consumer holds delivered messages outside the queue
        (kombu's unacked hash) for a while: jobs count as lost only once both queues and that
        hash stayed empty for a while."""
        queues = [self.settings.queue, keys.isolate(self.settings.queue)]
        if any(self.redis.llen(q) for q in queues) or self.redis.hlen(_KOMBU_UNACKED):
            self._empty_since = None
            return 0
        if self._empty_since is None:
            self._empty_since = now
        if now - self._empty_since < _QUIET:
            return 0
        cutoff = now - self.settings.lost_queued_after
        old: list[Any] = self.redis.zrangebyscore(
            keys.QUEUED, "-inf", cutoff, 0, 1000, withscores=True
        )
        return self._repair(now, [v for job_id, s in old for v in (str(job_id), repr(s))],
                            quiet=True)  # fmt: skip

    def _repair(self, now: float, pairs: list[Any], *, quiet: bool) -> int:
        if not pairs:
            return 0
        queue = self.settings.queue
        return int(
            self._requeue_lost(
                keys=[queue, keys.QUEUED, stats_key(now), keys.isolate(queue), _KOMBU_UNACKED],
                args=[f"{now:.6f}", ledger.JOB_PREFIX, ledger.DONE_PREFIX, keys.REPLY_TTL,
                      keys.STATS_TTL, _LOST_QUEUED, "1" if quiet else "", *pairs],
            )
        )  # fmt: skip
