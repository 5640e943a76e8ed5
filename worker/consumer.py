"""The batch consumer: a thread in each pool process that claims jobs from the queue in batches.

Celery's own consumer fetches, dispatches and acknowledges one message at a time; at a few
microseconds per predicted row that overhead is the whole cost. This loop takes up to
``batch_max_rows`` Celery messages per round trip and predicts them together.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson
import redis

from registry import keys

from .runtime import Runtime

log = logging.getLogger(__name__)

_BLOCK = 1.0
# Seconds after the node's first heartbeat before its pool processes start consuming.
_SETTLE = 1.0


class BatchConsumer(threading.Thread):
    """Claim, predict, write back: until ``stop()``, finishing the batch in hand."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(name="predictq-batch-consumer", daemon=True)
        self.runtime = runtime
        self._stopping = threading.Event()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def _wait_for_node(self) -> None:
        """Start consuming only once the node has been up a moment.

        Celery treats a pool process that dies during the node's first start as a failed
        start and exits; a job that kills its process must not be able to do that.
        """
        node = self.runtime.worker.rpartition(":")[0]
        while not self._stopping.is_set():
            try:
                raw = self.runtime.redis.get(keys.worker(node))
                if raw is not None and time.time() - orjson.loads(raw)["started_at"] > _SETTLE:
                    return
            except redis.RedisError as e:
                log.warning("waiting for Redis: %s", e)
            self._stopping.wait(0.05)

    def run(self) -> None:
        self._wait_for_node()
        settings = self.runtime.settings
        window = settings.batch_window_ms / 1000
        limit = settings.batch_max_rows
        isolate = keys.isolate(settings.queue)
        while not self._stopping.is_set():
            try:
                # Jobs recovered from a crashed or stalled batch run alone first, so that a
                # job that kills its process takes no other job down with it again.
                suspect = self.runtime.claim(1, block=0, queue=isolate)
                if suspect:
                    self.runtime.run(suspect)
                    continue
                jobs = self.runtime.claim(limit, block=_BLOCK)
                if jobs and window > 0 and len(jobs) < limit:
                    deadline = time.monotonic() + window
                    while len(jobs) < limit and time.monotonic() < deadline:
                        jobs += self.runtime.claim(limit - len(jobs), block=0, fresh=False)
                self.runtime.run(jobs)
            except redis.ConnectionError as e:
                log.warning("batch consumer lost Redis (%s); retrying in 1s", e)
                self._stopping.wait(1.0)
            except Exception:
                log.exception("batch consumer failed; continuing")
                self._stopping.wait(0.1)
