"""Reading jobs and long-polling them, on the event loop, for every request of one process.

Each gateway process has one reply list of its own (``predictq:reply:api-<uuid>``). The jobs it
submits name that list, so the worker that ends one pushes its result there, in the script that
writes the record (see worker/ledger.py). One listener task per process drains the list and hands
each result to the requests waiting on that job: a long-poll costs no subscription, and its answer
no second read. A job this process did not submit (another gateway process, the Python client, a
stock Celery client) is woken instead through its own pub/sub channel, on one subscriber
connection that the process shares. Either way a waiter re-reads its records at least every
``_RECHECK`` seconds, so a missed wake-up (a Redis restart, a trimmed list) costs latency, never
a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from registry import keys

from ..contract import FINAL_STATUSES, JobResult
from ..records import RECORD_FIELDS, parse_record, parse_told

log = logging.getLogger("predictq.api")

_RECHECK = 1.0
# Jobs submitted alone through this process, remembered (newest last) with their owner, so that
# the long-poll that follows is answered from the result the listener takes off the reply list,
# with no read of the record. At most _MINE of them; a result nobody asked for yet is kept
# _KEEP seconds (at most the job's TTL), _UNCLAIMED at most. A job forgotten takes the usual
# path: one read, then the wait.
_MINE = 50_000
_UNCLAIMED = 10_000
_KEEP = 10.0
# Results taken off the reply list per round trip.
_DRAIN = 512
# Between two log lines about a Redis the listener cannot reach.
_QUIET = 30.0

# ARGV: job key prefix, owner key prefix ('' when the caller may see every job), then job IDs.
# For each job: its RECORD_FIELDS, the reply list its end is told on, then (with an owner prefix)
# the name of the API key that owns it. One call for a thousand jobs.
READ = f"""
local out = {{}}
for i = 3, #ARGV do
  local rec = redis.call('HMGET', ARGV[1] .. ARGV[i],
    {", ".join(f"'{f}'" for f in RECORD_FIELDS)}, 'reply')
  if ARGV[2] ~= '' then rec[{len(RECORD_FIELDS) + 2}] = redis.call('GET', ARGV[2] .. ARGV[i]) end
  out[i - 2] = rec
end
return out
"""
_JOB_PREFIX = keys.job("")
_OWNER_PREFIX = keys.owner("")
_N = len(RECORD_FIELDS)


@dataclass
class Found:
    """A job as read: its record (None when it has none), and where its end is told."""

    record: JobResult | None
    reply: str | None = None
    owner: str | None = None


@dataclass(eq=False)
class Watch:
    """Jobs some requests wait on; told results land in ``told`` (None: read the record)."""

    ids: frozenset[str]
    told: dict[str, JobResult | None] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> dict[str, JobResult | None]:
        told, self.told = self.told, {}
        self.changed.clear()
        return told


class Waiters:
    """The process's reply list, its listener, and the shared subscriber for other jobs."""

    def __init__(self, aio: redis.asyncio.Redis) -> None:
        self._redis = aio
        self.reply = keys.reply(f"api-{uuid.uuid4().hex}")
        self._read = aio.register_script(READ)
        self._watches: dict[str, set[Watch]] = {}
        # job ID -> (owner, ttl, when its record expires unless the job ends first)
        self._mine: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self._unclaimed: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._complained = 0.0

    # -- reading ---------------------------------------------------------------------------

    async def read(self, job_ids: Sequence[str], *, owners: bool) -> list[Found]:
        """The jobs as they are now, in one round trip; with ``owners``, who owns each."""
        flat = await self._read(args=[_JOB_PREFIX, _OWNER_PREFIX if owners else "", *job_ids])
        out = []
        for job_id, values in zip(job_ids, flat, strict=True):
            values = list(values) + [None] * (_N + 2 - len(values))
            out.append(Found(parse_record(job_id, values[:_N]), values[_N], values[_N + 1]))
        return out

    # -- waiting ---------------------------------------------------------------------------

    async def lookup(
        self, job_ids: Sequence[str], timeout: float, owner: str | None
    ) -> dict[str, JobResult | None]:
        """Each job's record once every one is final, or when ``timeout`` seconds have passed
        (0: at once). With ``owner``, a job another API key owns is None, as an unknown one is,
        and is not waited on."""
        if len(job_ids) == 1 and job_ids[0] in self._mine:
            told, waited = await self._told_mine(job_ids[0], timeout, owner)
            if told is not None:
                return {job_ids[0]: told}
            timeout -= waited
        watch = self.watch(job_ids) if timeout > 0 else None
        try:
            # Read once watching: a job that ends in between is told to the watch.
            found = await self.read(job_ids, owners=owner is not None)
            now: dict[str, JobResult | None] = {}
            for job_id, f in zip(job_ids, found, strict=True):
                seen = owner is None or f.owner == owner
                now[job_id] = f.record if seen else None
            if watch is not None:
                replies = {j: f.reply for j, f in zip(job_ids, found, strict=True)}
                await self._settle(watch, now, replies, timeout)
            return now
        finally:
            if watch is not None:
                await self._forget(watch)

    def submitting(self, job_id: str, owner: str, ttl: int) -> None:
        """``job_id`` is being written by this process, for ``owner``; its end is told here.
        Said before the write: a worker may end it before the write's answer is back."""
        self._mine[job_id] = (owner, ttl, time.monotonic() + ttl)
        # A result still held under this ID is an earlier job's, whose record is gone (Redis
        # lost it): this job's must be awaited, not answered with that one.
        self._unclaimed.pop(job_id, None)
        if len(self._mine) > _MINE:
            self._mine.popitem(last=False)

    def not_submitted(self, job_id: str) -> None:
        """The write ``submitting`` announced did not happen (refused, or the ID existed)."""
        self._mine.pop(job_id, None)
        self._unclaimed.pop(job_id, None)

    async def _told_mine(
        self, job_id: str, timeout: float, owner: str | None
    ) -> tuple[JobResult | None, float]:
        """The result of a job this process submitted, as told (None: read it instead), and
        how long that took."""
        mine, _, expires = self._mine[job_id]
        if owner is not None and mine != owner:
            return None, 0.0  # the usual path answers as for an unknown job
        if job_id in self._unclaimed:
            raw, until = self._unclaimed.pop(job_id)
            del self._mine[job_id]
            if raw is None or until <= time.monotonic():
                return None, 0.0
            return parse_told(raw), 0.0
        if timeout <= 0:
            return None, 0.0
        if expires <= time.monotonic():
            # Its record expired while it waited in the queue (or ran): no result comes, and
            # its read answers at once.
            del self._mine[job_id]
            return None, 0.0
        loop = asyncio.get_running_loop()
        began = loop.time()
        watch = self.watch([job_id])
        try:
            # At most _RECHECK: a result that never comes (a trimmed or lost list) costs that.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), min(timeout, _RECHECK))
            return watch.told.get(job_id), loop.time() - began
        finally:
            await self._forget(watch)

    async def _settle(
        self,
        watch: Watch,
        now: dict[str, JobResult | None],
        replies: dict[str, str | None],
        timeout: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = {j for j, record in now.items() if _open(record)}
        # Jobs whose end is not told on this process's list: their channels, then a read, since
        # one that ended before the subscription published to nobody.
        foreign = [j for j in pending if replies[j] != self.reply]
        if foreign and await self._subscribe(foreign):
            for job_id, f in zip(foreign, await self.read(foreign, owners=False), strict=True):
                now[job_id] = f.record
            pending = {j for j in pending if _open(now[j])}
        while pending and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), min(left, _RECHECK))
            told = watch.take()
            reread = [j for j, result in told.items() if j in pending and result is None]
            for job_id, result in told.items():
                if result is not None and job_id in pending:
                    now[job_id] = result
            if not told:
                reread = list(pending)
            if reread:
                for job_id, f in zip(reread, await self.read(reread, owners=False), strict=True):
                    now[job_id] = f.record
            pending = {j for j in pending if _open(now[j])}

    def start(self) -> None:
        """Drain the reply list from now on, waited on or not: it must not fill up."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())

    def watch(self, job_ids: Iterable[str]) -> Watch:
        """Start hearing of ``job_ids``' ends (told on this process's reply list)."""
        watch = Watch(frozenset(job_ids))
        for job_id in watch.ids:
            self._watches.setdefault(job_id, set()).add(watch)
        self.start()
        return watch

    async def _forget(self, watch: Watch) -> None:
        gone = []
        for job_id in watch.ids:
            watchers = self._watches.get(job_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[job_id]
                    if job_id in self._subscribed:
                        gone.append(job_id)
        if gone:
            self._subscribed.difference_update(gone)
            await self._unsubscribe([keys.done(j) for j in gone])

    def _tell(self, job_id: str, result: JobResult | None) -> None:
        for watch in self._watches.get(job_id, ()):
            watch.told[job_id] = result
            watch.changed.set()

    # -- this process's reply list -----------------------------------------------------------

    async def _listen(self) -> None:
        """Take results off the reply list for as long as the process serves."""
        many = True
        while True:
            try:
                if many:
                    # One round trip a wake-up, however many results it brings.
                    popped = await self._redis.blmpop(_RECHECK, 1, self.reply, direction="LEFT",
                                                      count=_DRAIN)  # fmt: skip
                    items = popped[1] if popped else []
                else:
                    items = await self._redis.lpop(self.reply, _DRAIN) or []
                    if not items:
                        one = await self._redis.blpop([self.reply], timeout=_RECHECK)
                        items = [one[1]] if one else []
            except redis.ResponseError as e:
                if many and "unknown command" in str(e).lower():
                    many = False  # BLMPOP came with Redis 7
                    continue
                self._complain(f"result listener: {e}; waiters re-read their jobs instead")
                await asyncio.sleep(_RECHECK)
                continue
            except (redis.RedisError, OSError) as e:
                self._complain(f"result listener: {e}; waiters re-read their jobs instead")
                await asyncio.sleep(_RECHECK)
                continue
            if not items:
                self._evict()  # a quiet moment: results held since are let go
            for raw in items:
                try:
                    self._told(str(raw))
                except (ValueError, KeyError, TypeError) as e:
                    # Not what a worker pushes: skipped, so that it stops no other wake-up.
                    self._complain(f"result listener: skipped an unreadable entry ({e})")

    def _told(self, raw: str) -> None:
        told: str | None = raw
        job_id = raw
        if raw.startswith("{"):
            job_id = _told_id(raw)
        else:
            told = None  # told without its result (cancelled, recovered): read it
        if job_id in self._watches:
            # Heard now, so a later read of it goes to Redis rather than wait for this again.
            self._mine.pop(job_id, None)
            self._tell(job_id, None if told is None else parse_told(told))
        elif job_id in self._mine:
            self._keep(job_id, told)

    def _keep(self, job_id: str, told: str | None) -> None:
        """Hold a result of this process's job until it is asked for (see _MINE)."""
        self._unclaimed[job_id] = (told, time.monotonic() + min(_KEEP, self._mine[job_id][1]))
        self._evict()

    def _evict(self) -> None:
        """Drop held results past their time, and the oldest past _UNCLAIMED."""
        now = time.monotonic()
        while self._unclaimed:
            oldest, (_, until) = next(iter(self._unclaimed.items()))
            if until > now and len(self._unclaimed) <= _UNCLAIMED:
                break
            del self._unclaimed[oldest]
            self._mine.pop(oldest, None)

    def _complain(self, message: str) -> None:
        now = time.monotonic()
        if now - self._complained > _QUIET:
            self._complained = now
            log.warning("%s", message)

    # -- other jobs: their pub/sub channels ----------------------------------------------------

    async def _subscribe(self, job_ids: list[str]) -> bool:
        """Subscribe to the channels of ``job_ids``; False when Redis refused (then the
        waiters re-read their jobs every _RECHECK seconds)."""
        new = [j for j in job_ids if j not in self._subscribed]
        if not new:
            return True
        try:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(*(keys.done(j) for j in new))
        except (redis.RedisError, OSError) as e:
            self._complain(f"long-poll subscriber: {e}; polling instead")
            await self._drop()
            return False
        self._subscribed.update(new)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_channels())
        return True

    async def _unsubscribe(self, channels: list[str]) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(*channels)
            except (redis.RedisError, OSError):
                await self._drop()

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._subscribed.clear()
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_channels(self) -> None:
        """Wake the waiters of each job whose channel is published to, while any subscribe."""
        done_prefix = keys.done("")
        while self._subscribed:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = await pubsub.get_message(timeout=_RECHECK)
            except (redis.RedisError, OSError, RuntimeError) as e:
                self._complain(f"long-poll subscriber lost: {e}")
                await self._drop()
                return
            if message is not None and message["type"] == "message":
                self._tell(str(message["channel"])[len(done_prefix) :], None)

    async def close(self) -> None:
        for task in (self._listener, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drop()


def _open(record: JobResult | None) -> bool:
    return record is not None and record.status not in FINAL_STATUSES


def _told_id(raw: str) -> str:
    """The ``id`` of a told result, which the worker writes first (worker/runtime.py _told)."""
    if raw.startswith('{"id":"'):
        end = raw.find('"', 7)
        if end > 0 and "\\" not in raw[7:end]:
            return raw[7:end]
    return str(orjson.loads(raw)["id"])
