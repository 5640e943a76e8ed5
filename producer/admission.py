"""Admission control: a submission past the queue-depth or memory high-water mark is refused whole.

Three guards, each raising ``Overloaded`` before anything of the submission is written:
- the SUBMIT script counts the queued index against ``PREDICTQ_MAX_QUEUED`` (``queue_full``);
- the client reads Redis memory at most every ``MEMORY_EVERY`` seconds (``MemoryGauge``);
- an OOM reply from Redis itself (``is_oom``, ``out_of_memory``).
"""

from __future__ import annotations

import time

import redis

from registry import Overloaded

# How stale the memory reading may be: one INFO per client per interval, never one per job.
MEMORY_EVERY = 0.5
# A full queue drains at the workers' pace; memory frees more slowly (records live their TTL).
QUEUE_RETRY_AFTER = 1
MEMORY_RETRY_AFTER = 5

_FIX = "wait and retry, add workers"


def queue_full(queued: int, submitting: int, max_queued: int) -> Overloaded:
    return Overloaded(
        f"the queue is full: {queued} queued, {submitting} more would pass PREDICTQ_MAX_QUEUED "
        f"({max_queued}); nothing was enqueued: {_FIX}, or raise PREDICTQ_MAX_QUEUED",
        retry_after=QUEUE_RETRY_AFTER,
    )


def out_of_memory(cancelled: int = 0) -> Overloaded:
    undone = (
        f"the {cancelled} jobs this submission had enqueued were cancelled (any a worker had "
        "already started runs to its end)"
        if cancelled
        else "nothing was written"
    )
    return Overloaded(
        f"Redis is out of memory (used_memory over maxmemory); {undone}: {_FIX}, or raise "
        "Redis maxmemory",
        retry_after=MEMORY_RETRY_AFTER,
    )


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing a write because it is past maxmemory."""
    return isinstance(error, redis.OutOfMemoryError) or (
        isinstance(error, redis.ResponseError) and str(error).startswith("OOM")
    )


class MemoryGauge:
    """Redis's used memory against its maxmemory, read with INFO at most every MEMORY_EVERY s."""

    def __init__(self, client: redis.Redis, high_water: float) -> None:
        self._redis = client
        self._high_water = high_water
        self._used = 0
        self._max = 0
        self._next_read = 0.0

    def due(self) -> bool:
        """Whether the next ``check`` reads Redis (else it only compares what it read)."""
        return time.monotonic() >= self._next_read

    def check(self) -> None:
        """Overloaded when used memory is past the high-water mark of maxmemory."""
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + MEMORY_EVERY
            try:
                info = self._redis.info("memory")
            except redis.ResponseError:
                # INFO denied to this user (ACLs): Redis's own OOM replies still refuse.
                info = {}
            self._used = int(info.get("used_memory", 0))
            self._max = int(info.get("maxmemory", 0))
        if self._max and self._used > self._high_water * self._max:
            raise Overloaded(
                f"Redis memory is {self._used / self._max:.0%} used, past the high-water mark "
                f"PREDICTQ_MEMORY_HIGH_WATER ({self._high_water:g}) of maxmemory "
                f"({self._max} bytes); nothing was enqueued: {_FIX}, or raise Redis maxmemory",
                retry_after=MEMORY_RETRY_AFTER,
            )
