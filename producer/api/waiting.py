"""Long-polls: wait for jobs to end on one shared subscriber, without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from registry import keys

from ..contract import FINAL_STATUSES

log = logging.getLogger("predictq.api")

# A waiter re-reads its job at least this often, so a missed wake-up (a Redis restart, say)
# costs at most this much latency and never a wrong answer.
_RECHECK = 1.0


class Waiters:
    """Every long-poll of one process shares one subscriber connection to the jobs' channels."""

    def __init__(self, aio: redis.asyncio.Redis) -> None:
        self._redis = aio
        self._pubsub: PubSub | None = None
        self._events: dict[str, set[asyncio.Event]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def wait(self, job_id: str, timeout: float) -> None:
        """Return once ``job_id`` is final or gone, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        channel = keys.done(job_id)
        event = asyncio.Event()
        watchers = self._events.setdefault(channel, set())
        watchers.add(event)
        try:
            if len(watchers) == 1:
                await self._subscribe(channel)
            while True:
                # Read after subscribing: a job that ended in between published to nobody.
                status = await self._redis.hget(keys.job(job_id), "status")
                left = deadline - loop.time()
                if status is None or status in FINAL_STATUSES or left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, _RECHECK))
                event.clear()
        finally:
            watchers.discard(event)
            if not watchers:
                del self._events[channel]
                await self._unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        try:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(channel)
        except redis.RedisError as e:
            log.warning("long-poll subscriber: %s; polling instead", e)
            await self._drop()
            return
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())

    async def _unsubscribe(self, channel: str) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(channel)
            except redis.RedisError:
                await self._drop()

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self) -> None:
        """Wake the waiters of each channel that is published to, while any are waiting."""
        while self._events:
            pubsub = self._pubsub
            if pubsub is None:
                await asyncio.sleep(_RECHECK)
                with contextlib.suppress(redis.RedisError):
                    self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    await self._pubsub.subscribe(*self._events)
                continue
            try:
                message = await pubsub.get_message(timeout=_RECHECK)
            except (redis.RedisError, OSError, RuntimeError) as e:
                log.warning("long-poll subscriber lost: %s", e)
                await self._drop()
                continue
            if message is not None and message["type"] == "message":
                for event in self._events.get(str(message["channel"]), ()):
                    event.set()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._drop()
