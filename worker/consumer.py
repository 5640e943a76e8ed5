"""The batch consumer: a thread in each pool process that claims jobs from the queue in batches.

Celery's own consumer fetches, dispatches and acknowledges one message at a time; at a few
microseconds per predicted row that overhead is the whole cost. This loop takes up to
``batch_max_rows`` Celery messages per round trip and predicts them together.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import orjson
import redis

from registry import keys

from .batching import configure_sklearn
from .runtime import Claim, Runtime

log = logging.getLogger(__name__)

_BLOCK = 1.0
# Seconds after the node's first heartbeat before its pool processes start consuming.
_SETTLE = 1.0
# Consecutive unexpected failures after which the messages in hand are dead-lettered.
_GIVE_UP_AFTER = 3


class BatchConsumer(threading.Thread):
    """Claim, predict, write back: until ``stop()``, finishing the batch in hand."""

    def __init__(self, runtime: Runtime, generation: Any = None) -> None:
        """``generation``: shared memory the node bumps to recycle this pool process."""
        super().__init__(name="predictq-batch-consumer", daemon=True)
        self.runtime = runtime
        self._stopping = threading.Event()
        self._generation = generation
        self._born = generation.value if generation is not None else None

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def _recycled(self) -> bool:
        """Whether the node loaded a new version since this process was forked."""
        return self._generation is not None and self._generation.value != self._born

    def _exit_if_recycled(self) -> None:
        """Exit between batches once the node loaded a new version, so that the pool forks a
        fresh process that shares it instead of this one holding a private copy."""
        if self._recycled():
            log.info("pool process exiting to be forked again with the new version")
            logging.shutdown()
            os._exit(0)

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
                log.warning("waiting for Redis: %s", e)
            self._stopping.wait(0.05)

    def run(self) -> None:
        configure_sklearn()
        self._wait_for_node()
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
                    if claimed is None:
                        claimed = self.runtime.claim(limit, block=_BLOCK, isolate=True)
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
                        more = self.runtime.claim(limit - len(jobs), block=0, fresh=False)
                        jobs += more.jobs if more else []
                if self._stopping.is_set() or self._recycled():
                    self.runtime.run(jobs)  # claim nothing more: this process is leaving
                    continue
                # Finishing this batch and claiming the next share a round trip.
                claimed = self.runtime.run_and_claim(jobs, limit, 0 if hot else _BLOCK)
            except redis.ConnectionError as e:
                log.warning("batch consumer lost Redis (%s); retrying in 1s", e)
                self._stopping.wait(1.0)
            except Exception:
                log.exception("batch consumer failed; continuing")
                failures += 1
                if failures >= _GIVE_UP_AFTER:
                    # The same claim keeps failing: set it aside rather than replay it forever.
                    self.runtime.dead_letter_landing("the worker failed on this message repeatedly")
                    failures = 0
                self._stopping.wait(0.1)
            else:
                failures = 0
