"""The batch consumer: a thread in each pool process that claims jobs from the queue in batches.

Celery's own consumer fetches, dispatches and acknowledges one message at a time; at a few
microseconds per predicted row that overhead is the whole cost. This loop takes up to
``batch_max_rows`` jobs' worth of Celery messages per round trip and predicts them together.

The loop never dies of what it meets: an error is logged (at most every few seconds), the loop
backs off and claims again, and that claim re-reads the claim list, so nothing claimed before the
error is skipped. A batch that keeps failing is handed to recovery, which contains poison. If the
thread ends anyway, the process exits, so that the pool replaces it with a fresh one. Each
consumer reports its state in ``predictq:consumers`` for ``predictq status`` and ``/readyz``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import orjson
import redis

from producer.admission import is_oom
from registry import keys

from . import ledger
from .batching import configure_sklearn
from .runtime import Claim, Runtime
from .takeover import surrender

log = logging.getLogger(__name__)

_BLOCK = 1.0
# Seconds after the node's first heartbeat before its pool processes start consuming.
_SETTLE = 1.0
# Consecutive failures of the same batch after which it is handed to recovery.
_GIVE_UP_AFTER = 3
_MAX_BACKOFF = 5.0
# A full Redis refuses blocking moves: poll with the claim script (which it still runs) for a
# while after such a refusal.
_POLL_AFTER_OOM = 10.0
# The same warning is logged at most once per this many seconds.
_LOG_EVERY = 5.0
# A consumer reports its state at least this often (and at once when the state changes).
REPORT_EVERY = 5.0


class Throttled:
    """A logger that says the same thing at most once per ``_LOG_EVERY`` seconds."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -_LOG_EVERY) < _LOG_EVERY:
            self._muted[key] = self._muted.get(key, 0) + 1
            return
        muted = self._muted.pop(key, 0)
        self._last[key] = now
        suffix = f" ({muted} more like it since)" if muted else ""
        self.logger.warning(message + suffix, *args)


# Error replies that say Redis is full, read-only or changing roles (a failover), not that
# anything is wrong with the batch.
_TRANSIENT_REPLIES = ("OOM", "READONLY", "UNBLOCKED", "LOADING", "MASTERDOWN", "NOREPLICAS")


def _transient(error: Exception) -> bool:
    """Whether an error is Redis being away, full or failing over."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith(_TRANSIENT_REPLIES)


class BatchConsumer(threading.Thread):
    """Claim, predict, write back: until ``stop()``, finishing the batch in hand."""

    def __init__(self, runtime: Runtime, generation: Any = None) -> None:
        """``generation``: shared memory the node bumps to recycle this pool process."""
        super().__init__(name="predictq-batch-consumer", daemon=True)
        self.runtime = runtime
        self._stopping = threading.Event()
        self._generation = generation
        self._born = generation.value if generation is not None else None
        self._log = Throttled(log)
        self._poll_until = 0.0
        self._state = ""
        self._reported = 0.0
        self._report_script = runtime.redis.register_script(ledger.HSET)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def _recycled(self) -> bool:
        """Whether the node loaded (or forgot) a version since this process was forked."""
        return self._generation is not None and self._generation.value != self._born

    def _exit_if_recycled(self) -> None:
        """Exit between batches once the node loaded a new version, so that the pool forks a
        fresh process that shares it instead of this one holding a private copy (or once it
        forgot an archived or deleted one, which this process may hold)."""
        if self._recycled():
            log.info("pool process exiting to be forked again from the node's main process")
            if self.runtime.events is not None:
                self.runtime.events.drain()  # the task events of the batch just finished
            logging.shutdown()
            os._exit(0)

    def _report(self, state: str, error: str | None = None) -> None:
        """Tell ``predictq status`` what this consumer is doing (rate-limited; best effort)."""
        now = time.monotonic()
        if state == self._state and now - self._reported < REPORT_EVERY:
            return
        entry = {"state": state, "at": time.time(), "error": error}
        try:
            self._report_script(keys=[keys.CONSUMERS], args=[self.runtime.worker,
                                                             orjson.dumps(entry)])  # fmt: skip
        except redis.RedisError:
            return
        self._state, self._reported = state, now

    def _wait_for_node(self) -> None:
        """Start consuming only once the node has been up a moment.

        Celery treats a pool process that dies during the node's first start as a failed
        start and exits; a job that kills its process must not be able to do that.
        """
        node = self.runtime.worker.rpartition(":")[0]
        while not self._stopping.is_set():
            self._exit_if_recycled()
            try:
                raw = self.runtime.redis.get(keys.worker(node))
                if raw is not None and time.time() - orjson.loads(raw)["started_at"] > _SETTLE:
                    return
            except redis.RedisError as e:
                self._log.warning("wait", "waiting for Redis: %s", e)
            self._stopping.wait(0.05)

    def run(self) -> None:
        try:
            configure_sklearn()
            self._wait_for_node()
            self._consume()
        except BaseException:
            # Nothing should get here; if something does, a pool process that no longer
            # consumes must not look healthy. Its replacement starts from its claim list.
            log.critical("batch consumer stopped unexpectedly: exiting this pool process so "
                         "that the pool replaces it", exc_info=True)  # fmt: skip
            logging.shutdown()
            os._exit(70)

    def _polling(self) -> bool:
        return time.monotonic() < self._poll_until

    def _consume(self) -> None:
        settings = self.runtime.settings
        window = settings.batch_window_ms / 1000
        limit = settings.batch_max_rows
        failures = 0
        hot = True
        claimed: Claim | None = None
        # A batch claimed along with the previous finish is run even when a stop or a recycle
        # came meanwhile: its jobs are already marked running.
        while claimed is not None or not self._stopping.is_set():
            if claimed is None:
                self._exit_if_recycled()
            try:
                if claimed is None:
                    # Under load a non-blocking claim takes a batch in one round trip; when the
                    # queue ran dry, a blocking move waits for the next message instead. Either
                    # way jobs recovered from a crashed or stalled batch come first, to run
                    # alone, so that a job that kills its process takes no other job down with
                    # it again.
                    claimed = self.runtime.claim(limit, block=0, isolate=True) if hot else None
                    if claimed is None and self._polling():
                        self._report("consuming")
                        hot = True
                        self._stopping.wait(_BLOCK / 4)
                        continue
                    if claimed is None:
                        claimed = self.runtime.claim(limit, block=_BLOCK, isolate=True)
                # Said only once a claim went through: a consumer whose every claim fails
                # must not look healthy between its attempts.
                self._report("consuming")
                # After an idle wait, look again without blocking: the isolation queue may
                # have filled while the blocking move watched only the job queue.
                hot = claimed is None or claimed.more
                if claimed is None or not claimed.jobs:
                    claimed = None
                    continue
                jobs, isolated = claimed.jobs, claimed.isolated
                claimed = None
                if not isolated and window > 0 and len(jobs) < limit:
                    deadline = time.monotonic() + window
                    while len(jobs) < limit and time.monotonic() < deadline:
                        more = self.runtime.claim(limit, block=0, fresh=False, held=len(jobs))
                        jobs += more.jobs if more else []
                if self._stopping.is_set() or self._recycled():
                    self.runtime.run(jobs)  # claim nothing more: this process is leaving
                    continue
                # Finishing this batch and claiming the next share a round trip.
                block = 0 if hot or self._polling() else _BLOCK
                claimed = self.runtime.run_and_claim(jobs, limit, block)
            except Exception as e:
                # Whatever was in hand is still on the claim list, and the next claim reads it
                # again: nothing claimed before an error is skipped or dropped.
                claimed, hot = None, True
                failures += 1
                self._failed(e, failures)
                if failures >= _GIVE_UP_AFTER and not _transient(e):
                    self._give_up()
                    failures = 0
                self._stopping.wait(min(_MAX_BACKOFF, 0.05 * 2**failures))
            else:
                failures = 0

    def _failed(self, error: Exception, failures: int) -> None:
        if is_oom(error):
            self._poll_until = time.monotonic() + _POLL_AFTER_OOM
            self._log.warning("full", "Redis is full (%s): draining without blocking moves",
                              error)  # fmt: skip
        elif _transient(error):
            self._log.warning("redis", "batch consumer cannot use Redis (%s); retrying", error)
        else:
            log.exception("batch consumer failed (%d in a row); retrying", failures)
        self._report("backing off", f"{type(error).__name__}: {error}"[:300])

    def _give_up(self) -> None:
        """The same batch keeps failing: hand it to recovery, which counts an attempt for each
        of its jobs and contains the ones that keep failing, rather than replay it forever."""
        try:
            outcomes = surrender(self.runtime.redis, self.runtime.settings, self.runtime.worker,
                                 self.runtime.events)  # fmt: skip
            log.error("gave up on the batch in hand after %d failures: %s", _GIVE_UP_AFTER,
                      outcomes)  # fmt: skip
        except Exception:
            log.exception("could not hand the failing batch to recovery; retrying it")
