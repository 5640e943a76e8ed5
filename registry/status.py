"""A snapshot of the whole system read from Redis, in two round trips: what ``predictq status``
shows (and prints with ``--json``), and what the scrape-time metric gauges report.

- queued jobs per queue: the job queue's from the queued index (jobs, not messages: a batch
  message carries many), less the isolation queue's, whose messages are one job each;
- running jobs: the ``predictq:running`` counts of the processes of live nodes (each process
  counts the jobs of the batch it holds; see ``worker/ledger.py``);
- workers: live nodes, found through ``predictq:nodes`` and their heartbeats (no SCAN);
- served versions: every model's aliases;
- recent throughput: the per-minute stats of the last minutes, in all and per model;
- load failures of live nodes only (a dead node's are left out).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import redis
from pydantic import BaseModel, Field

from . import keys
from .liveness import consumer_states
from .settings import Settings

__all__ = ["LoadFailure", "QueueDepth", "Recent", "Snapshot", "WorkerNode", "snapshot"]

FINAL = ("succeeded", "failed", "cancelled")


class QueueDepth(BaseModel):
    """One queue: jobs waiting in it, and the messages that carry them."""

    jobs: int
    messages: int


class WorkerNode(BaseModel):
    """A live worker node, from its heartbeat and its pool processes' reports."""

    name: str
    pid: int
    concurrency: int | None
    up_seconds: float
    serving: dict[str, int] = Field(description="'model:alias' -> version loaded")
    consumers: dict[str, int] = Field(description="consumer state -> pool processes in it")
    consumer_error: str | None = None
    replaced: int = 0


class Recent(BaseModel):
    """Jobs that ended over the last ``minutes`` (the current minute included)."""

    minutes: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    models: dict[str, dict[str, int]] = Field(default_factory=dict)


class LoadFailure(BaseModel):
    """A model version that failed to load in a process of a live node."""

    model: str
    version: int
    worker: str
    code: str
    message: str
    at: float


class Snapshot(BaseModel):
    """The system at one moment (``predictq status --json`` prints this)."""

    at: float
    queues: dict[str, QueueDepth]
    running: int
    dead_letters: int
    workers: list[WorkerNode]
    served: dict[str, dict[str, int]] = Field(description="model -> alias -> version")
    recent: Recent | None = None
    load_failures: list[LoadFailure] = Field(default_factory=list)


def _replies(pipe: Any, empty: list[Any]) -> list[Any]:
    """A pipeline's replies, with ``empty[i]`` in place of an error reply: a key of the wrong
    type (a hand-made mistake) must not hide everything else."""
    got = pipe.execute(raise_on_error=False)
    return [e if isinstance(v, redis.ResponseError) else v for v, e in zip(got, empty, strict=True)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _count(v: Any) -> int:
    """A count as predictq writes it; anything else (a hand-made mistake) counts as 0, rather
    than fail the whole snapshot, and with it every series of a node's scrape."""
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


def _heartbeat(raw: Any) -> dict[str, Any] | None:
    """A node's heartbeat, or None when there is none or it is not one predictq wrote."""
    if raw is None:
        return None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return info if isinstance(info, dict) else None


def snapshot(
    r: redis.Redis, settings: Settings, *, minutes: int = 5, full: bool = True
) -> Snapshot:
    """Read the snapshot; ``full`` False skips what the gauges do not need (stats, failures,
    consumer reports)."""
    queue, isolate = settings.queue, keys.isolate(settings.queue)
    now = time.time()
    minute = int(now // 60)
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.queued(queue))
    pipe.llen(queue)
    pipe.llen(isolate)
    pipe.hgetall(keys.RUNNING)
    pipe.llen(keys.DEAD)
    pipe.zrange(keys.NODES, 0, -1)
    pipe.smembers(keys.MODELS)
    if full:
        pipe.hgetall(keys.CONSUMERS)
        pipe.hgetall(keys.LOAD_FAILURES)
        for m in range(minute - minutes + 1, minute + 1):
            pipe.hgetall(keys.stats(m))
    empty: list[Any] = [0, 0, 0, {}, 0, [], set()]
    if full:
        empty += [{}] * (2 + minutes)
    got = _replies(pipe, empty)
    indexed, messages, isolated, running, dead, nodes, models = got[:7]
    names = sorted(_text(n) for n in nodes)
    model_names: list[str] = sorted(_text(m) for m in models)
    pipe = r.pipeline(transaction=False)
    if names:
        pipe.mget([keys.worker(n) for n in names])
    for name in model_names:
        pipe.hgetall(keys.model_aliases(name))
    empty = ([[None] * len(names)] if names else []) + [{}] * len(model_names)
    second = _replies(pipe, empty) if empty else []
    beats = second[0] if names else []
    alias_maps = second[1:] if names else second
    live: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, beats, strict=True):
        info = _heartbeat(raw)
        if info is not None:
            live[name] = info
    busy = sum(_count(n) for w, n in running.items() if _text(w).rpartition(":")[0] in live)
    snap = Snapshot(
        at=now,
        queues={
            queue: QueueDepth(jobs=max(0, int(indexed) - int(isolated)), messages=int(messages)),
            isolate: QueueDepth(jobs=int(isolated), messages=int(isolated)),
        },
        running=busy,
        dead_letters=int(dead),
        workers=[],
        served={
            m: {_text(a): int(v) for a, v in sorted(aliases.items()) if _count(v)}
            for m, aliases in zip(model_names, alias_maps, strict=True)
        },
    )
    if full:
        consumers, failures, *stats = got[7:]
        snap.workers = _workers(live, consumers, now, settings)
        snap.recent = _recent(stats, minutes)
        snap.load_failures = _failures(failures, live)
    else:
        snap.workers = _workers(live, {}, now, settings)
    return snap


def _workers(
    live: dict[str, dict[str, Any]], reports: dict[Any, Any], now: float, settings: Settings
) -> list[WorkerNode]:
    states = consumer_states(reports, now, settings.time_limit)
    nodes = []
    for name, info in sorted(live.items()):
        mine = [s for s in states if s.node == name]
        error = next((s.error for s in mine if s.state != "consuming" and s.error), None)
        try:
            nodes.append(WorkerNode(
                name=name, pid=int(info.get("pid", 0)), concurrency=info.get("concurrency"),
                up_seconds=round(max(0.0, now - float(info.get("started_at", now))), 1),
                serving={str(k): int(v) for k, v in sorted(info.get("serving", {}).items())},
                consumers=dict(sorted(Counter(s.state for s in mine).items())),
                consumer_error=error, replaced=int(info.get("replaced") or 0),
            ))  # fmt: skip
        except (TypeError, ValueError, AttributeError):
            continue  # a heartbeat predictq did not write
    return nodes


def _recent(stats: list[dict[Any, Any]], minutes: int) -> Recent:
    recent = Recent(minutes=minutes)
    for counts in stats:
        for field, n in counts.items():
            status, sep, model = _text(field).partition(":")
            if status not in FINAL:
                continue
            if not sep:
                setattr(recent, status, getattr(recent, status) + _count(n))
                continue
            per = recent.models.setdefault(model, dict.fromkeys(FINAL, 0))
            per[status] += _count(n)
    recent.models = dict(sorted(recent.models.items()))
    return recent


def _failures(raw: dict[Any, Any], live: dict[str, dict[str, Any]]) -> list[LoadFailure]:
    out = []
    for field, value in raw.items():
        # "{model}:{version}:{node}:{pid}": model names hold no ':'.
        model, _, rest = _text(field).partition(":")
        version, _, worker = rest.partition(":")
        if worker.rpartition(":")[0] not in live or not version.isdigit():
            continue
        try:
            entry = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        out.append(LoadFailure(model=model, version=int(version), worker=worker,
                               code=str(entry.get("code", "")),
                               message=str(entry.get("message", "")),
                               at=float(entry.get("at", 0))))  # fmt: skip
    return sorted(out, key=lambda f: (f.model, f.version, f.worker))
