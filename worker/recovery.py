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
from collections.abc import Callable
from typing import Any

import orjson
import redis

from producer.records import stats_key
from registry import Settings, keys

from . import ledger, metrics
from .events import TaskEvents
from .pids import pid_alive
from .takeover import FAIL, Recovery

log = logging.getLogger(__name__)

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
# saying so. Entries of ended or expired jobs are dropped. Returns how many jobs it repaired,
# then the model and version of each job it failed (for the metrics).
REQUEUE_LOST = (
    ledger.ALLOW_OOM
    + FAIL
    + """
if ARGV[7] == '1' and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('LLEN', KEYS[4]) > 0
    or redis.call('HLEN', KEYS[5]) > 0) then
  return {0}
end
local n = 0
local failed = {}
for b = 8, #ARGV, 2 do
  local id = ARGV[b]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) == tonumber(ARGV[b + 1]) then
    local key = ARGV[2] .. id
    local rec = redis.call('HMGET', key, 'status', 'payload', 'reply', 'ttl', 'model', 'version')
    if rec[1] == 'queued' and rec[2] and rec[2] ~= '' then
      -- To the front of the line, since it waited long enough already; with the time it was
      -- first queued, so that the queue's oldest stamp never moves forward past a waiting job.
      redis.call('RPUSH', KEYS[1], rec[2])
      redis.call('ZADD', KEYS[2], clock(), id)
      n = n + 1
    else
      redis.call('ZREM', KEYS[2], id)
      if rec[1] == 'queued' then
        fail(key, id, ARGV[6], rec[4], rec[3], ARGV[1], ARGV[3], ARGV[4], KEYS[3], ARGV[5])
        n = n + 1
        failed[#failed + 1] = rec[5] or ''
        failed[#failed + 1] = rec[6] or ''
      end
    end
  end
end
local out = {n}
for _, v in ipairs(failed) do out[#out + 1] = v end
return out
"""
)

_LOST_QUEUED = orjson.dumps({"code": "worker_lost", "message": (
    "the job's message left the queue without reaching a worker (the queue was purged, or "
    "Redis lost data): submit it again"
)})  # fmt: skip
# kombu's Redis transport keeps messages it delivered to Celery's consumer here until acked.
_KOMBU_UNACKED = "unacked"


def _owner(worker: str) -> tuple[str, int] | None:
    """(node, pid) of a worker process named ``{node}:{pid}``."""
    node, _, pid = worker.rpartition(":")
    return (node, int(pid)) if node and pid.isdigit() else None


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
        events: TaskEvents | None = None,
    ) -> None:
        super().__init__(name="predictq-sweeper", daemon=True)
        self.redis = client
        self.settings = settings
        self.hostname = hostname
        self.recovery = Recovery(client, settings, events)
        self._oldest = client.register_script(OLDEST)
        self._requeue_lost = client.register_script(REQUEUE_LOST)
        self._local_pids = local_pids
        self._empty_since: float | None = None
        self._suspects: dict[str, tuple[float, float]] = {}
        self._scanned = float("-inf")
        # Leases and heartbeats are not trusted until live workers had a chance to renew them.
        self._grace_until = self._after_grace()
        self._lost_redis = False
        self.replaced = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.wait(self.settings.sweep_interval):
            try:
                if self._lost_redis:
                    # Back from an outage: live workers need a lease period to renew theirs,
                    # so this very sweep already counts as in the grace period.
                    self.redis.ping()
                    self._grace_until = self._after_grace()
                    self._lost_redis = False
                    log.info("recovery sweeps resumed")
                self.sweep()
            except redis.RedisError as e:
                if not self._lost_redis:
                    log.warning("recovery sweeps paused: %s", e)
                self._lost_redis = True
            except Exception:
                log.exception("recovery sweep failed")

    @staticmethod
    def _after_grace() -> float:
        return time.monotonic() + ledger.LEASE_SECONDS + ledger.RENEW_EVERY

    def sweep(self) -> dict[str, int]:
        """One pass; returns counts of what it did."""
        counts: dict[str, int] = {}
        # Redis's clock, read once a pass: leases, the queued index and messages' stamps are
        # all kept on it.
        seconds, micros = self.redis.time()
        now = float(seconds) + micros / 1e6
        self._sweep_claim_lists(counts, now)
        for target in self.redis.zrangebyscore(keys.RECOVERING, "-inf", now, 0, 10):
            self._add(counts, self.recovery.retake(str(target)) or [])
        # The in-flight index of Celery's own consumer is kept on the workers' clocks.
        overdue = self.redis.zrangebyscore(keys.INFLIGHT, "-inf", time.time(), start=0, num=1000)
        if overdue:
            self._add(counts, self.recovery.recover([(str(i), "", "") for i in overdue], "lost"))
        lost = self._lost_queued(now)
        if lost:
            log.warning("%d queued job(s) had lost their message: pushed again or failed", lost)
            counts["relost"] = int(lost)
        return counts

    @staticmethod
    def _add(counts: dict[str, int], outcomes: list[str]) -> None:
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1

    def _workers(self) -> set[str]:
        """Every worker process that may hold a claim list."""
        workers = {str(w) for w in self.redis.hkeys(keys.CONSUMERS)}
        # A count for status and metrics: a key of the wrong type there (made by hand) must
        # not pause every recovery.
        with contextlib.suppress(redis.ResponseError):
            workers |= {str(w) for w in self.redis.hkeys(keys.RUNNING)}
        workers |= {str(w) for w in self.redis.zrange(keys.LEASES, 0, -1)}
        if time.monotonic() - self._scanned > _FULL_SCAN_EVERY:
            prefix = keys.claiming("")
            workers |= {
                str(k).removeprefix(prefix)
                for k in self.redis.scan_iter(match=keys.claiming("*"), count=1000)
            }
            self._scanned = time.monotonic()
        return workers

    def _sweep_claim_lists(self, counts: dict[str, int], now: float) -> None:
        workers = sorted(w for w in self._workers() if _owner(w) is not None)
        if not workers:
            return
        pipe = self.redis.pipeline(transaction=False)
        for w in workers:
            pipe.exists(keys.claiming(w))
            pipe.zscore(keys.LEASES, w)
            pipe.get(keys.busy(w))
        found = pipe.execute()
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
                alive = pid_alive(pid)
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
                        self._forget_running(w)
            elif exists and trusted and (expired or score is None):
                # The script checks again, atomically, that the lease ran out or that the
                # process has none and its node's heartbeat is gone.
                self._add(counts, self.recovery.take_over(w, "stale") or [])
            elif not exists and not self.redis.exists(keys.worker(node)) and trusted:
                self.redis.hdel(keys.CONSUMERS, w)
                self._forget_running(w)

    def _forget_running(self, worker: str) -> None:
        with contextlib.suppress(redis.ResponseError):
            self.redis.hdel(keys.RUNNING, worker)

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
            keys.queued(self.settings.queue), "-inf", cutoff, 0, 1000, withscores=True
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
            keys.queued(self.settings.queue), "-inf", cutoff, 0, 1000, withscores=True
        )
        return self._repair(now, [v for job_id, s in old for v in (str(job_id), repr(s))],
                            quiet=True)  # fmt: skip

    def _repair(self, now: float, pairs: list[Any], *, quiet: bool) -> int:
        if not pairs:
            return 0
        queue = self.settings.queue
        got = self._requeue_lost(
            keys=[queue, keys.queued(queue), stats_key(now), keys.isolate(queue),
                  _KOMBU_UNACKED],
            args=[f"{now:.6f}", ledger.JOB_PREFIX, ledger.DONE_PREFIX, keys.REPLY_TTL,
                  keys.STATS_TTL, _LOST_QUEUED, "1" if quiet else "", *pairs],
        )  # fmt: skip
        failed = [str(v) for v in got[1:]]
        metrics.jobs_failed([(failed[i], failed[i + 1], "worker_lost")
                             for i in range(0, len(failed), 2)])  # fmt: skip
        return int(got[0])
