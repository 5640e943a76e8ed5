"""Worker lifecycle hooks: load models before the fork, follow promotions, start the batch
consumer in each pool process, send heartbeats, and stop cleanly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

import redis
from celery import signals

from registry import get_settings, keys

from .consumer import BatchConsumer
from .runtime import Runtime

log = logging.getLogger(__name__)

_HEARTBEAT_EVERY = 5.0
_HEARTBEAT_TTL = 15

_state: dict[str, Any] = {"runtime": None, "url": None, "consumer": None, "listener": None}


def install(url: str) -> None:
    """Remember the broker URL for the runtime each process builds."""
    _state["url"] = url


def runtime() -> Runtime:
    """This process's runtime (built on first use)."""
    rt: Runtime | None = _state["runtime"]
    if rt is None:
        rt = _state["runtime"] = Runtime(_state["url"], get_settings())
    return rt


def _follow_promotions(rt: Runtime) -> None:
    """Preload and swap in each promoted version as soon as its push arrives.

    After a dropped connection it re-reads every alias, so a push missed while disconnected
    is caught up; jobs themselves always resolve their alias afresh as a last resort.
    """
    served = set(get_settings().served_models)
    while True:
        try:
            pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(keys.EVENTS)
            rt.cache.warm(sorted(served))
            for message in pubsub.listen():
                event = json.loads(message["data"])
                if served and event["model"] not in served:
                    continue
                try:
                    rt.cache.get(event["model"], int(event["version"]), event["alias"])
                except Exception:
                    log.exception("could not preload %s", event)
        except redis.RedisError as e:
            log.warning("promotion listener lost Redis (%s); reconnecting", e)
            time.sleep(1.0)
        except Exception:
            log.exception("promotion listener failed; restarting it")
            time.sleep(1.0)


def _start_listener(rt: Runtime) -> None:
    if _state["listener"] != os.getpid():
        # Threads do not survive fork: every process starts its own listener.
        _state["listener"] = os.getpid()
        threading.Thread(target=_follow_promotions, args=(rt,), daemon=True).start()


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _load_before_fork(sender: Any = None, **_: Any) -> None:
    """Load promoted versions in the parent, so pool processes share them copy-on-write."""
    rt = runtime()
    rt.rename(getattr(sender, "hostname", None) or "worker")
    rt.cache.warm(get_settings().served_models)


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_in_pool_process(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    rt.cache.after_fork()
    rt.rename(str(sender) if sender else "worker")
    _start_listener(rt)
    if get_settings().batching:
        consumer = _state["consumer"] = BatchConsumer(rt)
        consumer.start()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_consumer(**_: Any) -> None:
    """Finish the batch in hand before the process exits (a warm shutdown loses nothing)."""
    consumer: BatchConsumer | None = _state["consumer"]
    if consumer is not None:
        consumer.stop()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or "worker"
    rt = runtime()
    _start_listener(rt)
    info = {
        "hostname": hostname,
        "pid": os.getpid(),
        "concurrency": getattr(getattr(sender, "controller", None), "concurrency", None),
        "started_at": time.time(),
    }

    def beat() -> None:
        while True:
            try:
                info["serving"] = {f"{m}:{a}": v for (m, a), v in rt.cache.serving().items()}
                rt.redis.set(keys.worker(hostname), json.dumps(info), ex=_HEARTBEAT_TTL)
            except redis.RedisError as e:
                log.warning("heartbeat failed: %s", e)
            time.sleep(_HEARTBEAT_EVERY)

    threading.Thread(target=beat, daemon=True).start()


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _clear_heartbeat(sender: Any = None, **_: Any) -> None:
    rt: Runtime | None = _state["runtime"]
    if rt is not None and sender is not None:
        with contextlib.suppress(redis.RedisError):
            rt.redis.delete(keys.worker(sender.hostname))
