"""Celery task events for the jobs that batch consumers run, so that Flower shows them.

Celery's own consumer sends task events for the tasks it runs. Batch consumers claim jobs from
Redis themselves, so they send the same events: ``task-received`` and ``task-started`` when START
marks a job running, then ``task-succeeded`` (with its runtime) or ``task-failed`` (with the
error's code and message) when FINISH writes its record. The task ID is the job ID and the name
the documented task name. A job whose message could not be read gets no ``task-started``: it is
received and fails without running.

Events go out in bulk, as Celery's worker sends buffered task events (EventDispatcher's
``buffer_group`` and ``flush``): one message whose body is a list of events, routed as
``task.multi`` on the ``celeryev`` exchange of the app's broker connection; Celery's
EventReceiver (and so Flower) reads a list body event by event. The consumer thread only keeps
references to the jobs and hands them over once per batch (a finished batch and the next one
started travel together); a thread of its own builds and publishes the events. Sending never
stalls or fails a job: when that thread falls behind or Redis is away, events are dropped and
the drop is logged.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
from celery import Celery
from celery.events.event import get_exchange
from celery.utils.time import utcoffset
from kombu.messaging import Producer

from producer import TASK_NAME

from .batching import Job

__all__ = ["TaskEvents"]

log = logging.getLogger(__name__)

# Batches of events waiting for the sender thread; past this many, new ones are dropped.
_BACKLOG = 256
# And past this many jobs: a backlog holds the jobs themselves (rows, predictions), so a sender
# stuck on a slow or half-open broker connection must not hold 256 full batches' worth.
_BACKLOG_JOBS = 8192
# Seconds a publish may block on the broker's socket: kombu's Redis connection has no timeout by
# default, and a half-open one (a NAT drop, a demoted primary) would stall the sender for the
# kernel's ~15 minutes while the backlog fills.
_SOCKET_TIMEOUT = 10.0
# At most this many events in one message (a batch of 1024 jobs sends about 3000).
_MAX_EVENTS = 5000
# Characters of a job's predictions shown as the task's result.
_RESULT_CHARS = 200
_LOG_EVERY = 10.0

_STARTED, _FINISHED = "started", "finished"


class TaskEvents:
    """One pool process's task events: collected per batch, published by a thread of its own."""

    def __init__(self, app: Celery, hostname: str) -> None:
        """``hostname``: the Celery node's name, so that Flower files the jobs under it."""
        self.app = app
        self.hostname = hostname
        self._pending: list[tuple[str, Sequence[Job], float]] = []
        self._backlog: queue.Queue[list[tuple[str, Sequence[Job], float]]] = queue.Queue(_BACKLOG)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._producer: Producer | None = None
        self._dropped = 0
        self._said = -_LOG_EVERY
        self._queued_jobs = 0  # jobs in the backlog, under _lock (two threads update it)
        self._lock = threading.Lock()

    def started(self, jobs: Sequence[Job]) -> None:
        """Jobs START marked running (called by the consumer thread: keeps references only)."""
        if jobs:
            self._pending.append((_STARTED, tuple(jobs), time.time()))

    def finished(self, jobs: Sequence[Job], at: float) -> None:
        """Jobs whose records FINISH wrote at ``at``."""
        if jobs:
            self._pending.append((_FINISHED, tuple(jobs), at))

    def flush(self) -> None:
        """Hand what this batch collected to the sender thread, or drop it if it is behind."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._pid != os.getpid():
            # Threads do not survive a fork: each pool process starts its own sender.
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._send, name="predictq-task-events",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        jobs = sum(len(jobs) for _, jobs, _ in pending)
        with self._lock:
            full = self._queued_jobs + jobs > _BACKLOG_JOBS
            if not full:
                try:
                    self._backlog.put_nowait(pending)
                    self._queued_jobs += jobs
                except queue.Full:
                    full = True
        if full:
            self._drop(jobs, "the sender is behind")

    def drain(self, timeout: float = 2.0) -> None:
        """Give the sender a moment to publish what is queued, before this process exits."""
        deadline = time.monotonic() + timeout
        while self._backlog.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _drop(self, jobs: int, why: str) -> None:
        self._dropped += jobs
        now = time.monotonic()
        if now - self._said >= _LOG_EVERY:
            log.warning("task events of %d job(s) dropped since the last warning (%s)",
                        self._dropped, why)  # fmt: skip
            self._dropped, self._said = 0, now

    def _send(self) -> None:
        while True:
            items = [self._backlog.get()]
            # Whatever queued up meanwhile goes in the same message.
            while len(items) < _BACKLOG:
                try:
                    items.append(self._backlog.get_nowait())
                except queue.Empty:
                    break
            try:
                events = [e for batch in items for e in self._events(batch)]
                for i in range(0, len(events), _MAX_EVENTS):
                    self._publish(events[i : i + _MAX_EVENTS])
            except Exception as e:  # never let the sender die: the next batch tries afresh
                self._reset()
                self._drop(sum(len(jobs) for batch in items for _, jobs, _ in batch),
                           f"{type(e).__name__}: {e}")  # fmt: skip
            with self._lock:
                self._queued_jobs -= sum(len(jobs) for batch in items for _, jobs, _ in batch)
            for _ in items:
                self._backlog.task_done()

    def _events(self, batch: list[tuple[str, Sequence[Job], float]]) -> list[dict[str, Any]]:
        """The events of one batch, with the fields Celery's EventDispatcher adds to each
        (hostname, utcoffset, pid, clock), computed once for them all: this runs per job."""
        base = {"hostname": self.hostname, "utcoffset": utcoffset(), "pid": self._pid,
                "clock": self.app.clock.forward()}  # fmt: skip
        shown: dict[int, str] = {}  # the jobs of a batch message share one request
        events: list[dict[str, Any]] = []
        add = events.append
        for kind, jobs, at in batch:
            if kind == _STARTED:
                for job in jobs:
                    stamp = float(job.started_at or at)
                    kwargs = shown.get(id(job.request))
                    if kwargs is None:
                        kwargs = shown[id(job.request)] = _kwargs(job)
                    add({**base, "type": "task-received", "timestamp": stamp, "uuid": job.id,
                         "name": TASK_NAME, "args": "()", "kwargs": kwargs,
                         "retries": max(job.attempts - 1, 0), "root_id": job.id})  # fmt: skip
                    if job.request is not None:
                        add({**base, "type": "task-started", "timestamp": stamp, "uuid": job.id})
                continue
            for job in jobs:
                if job.status == "succeeded":
                    runtime = at - float(job.started_at) if job.started_at else None
                    result = job.predictions[:_RESULT_CHARS].decode(errors="replace")
                    add({**base, "type": "task-succeeded", "timestamp": at, "uuid": job.id,
                         "result": result, "runtime": runtime})  # fmt: skip
                else:
                    error = job.error
                    text = f"{error.code}: {error.message}" if error else job.status
                    add({**base, "type": "task-failed", "timestamp": at, "uuid": job.id,
                         "exception": text, "traceback": ""})  # fmt: skip
        return events

    def _publish(self, events: list[dict[str, Any]]) -> None:
        if self._producer is None:
            connection = self.app.connection_for_write(transport_options={
                "socket_timeout": _SOCKET_TIMEOUT, "socket_connect_timeout": _SOCKET_TIMEOUT,
            })  # fmt: skip
            self._exchange = get_exchange(connection, name=self.app.conf.event_exchange)
            self._producer = Producer(  # type: ignore[no-untyped-call]
                connection, exchange=self._exchange, auto_declare=False
            )
        # Encoded here with orjson (kombu's own JSON encoder costs several times more); the
        # content type tells every reader it is plain JSON, as Celery's events are.
        self._producer.publish(  # type: ignore[no-untyped-call]
            orjson.dumps(events), content_type="application/json", content_encoding="utf-8",
            routing_key="task.multi", exchange=self._exchange.name, declare=[self._exchange],
            headers={"hostname": self.hostname}, delivery_mode=1, retry=False,
        )  # fmt: skip

    def _reset(self) -> None:
        """Drop the connection after a failure; the next message opens a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.connection.release()
            except Exception:
                log.debug("closing the task events connection failed", exc_info=True)


def _kwargs(job: Job) -> str:
    """What Flower shows as the task's keyword arguments: the job's target, not its rows."""
    r = job.request
    if r is None:
        return repr({"model": job.model})
    rows = job.given if job.given is not None else r.rows
    target = {"version": r.version} if r.version is not None else {"alias": r.alias}
    shown: dict[str, Any] = {"model": r.model, **target,
                             "rows": len(rows) if isinstance(rows, list) else "?"}  # fmt: skip
    if r.probabilities:
        shown["probabilities"] = True
    return repr(shown)
