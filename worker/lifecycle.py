"""Worker lifecycle hooks: load models before the fork, follow promotions, send heartbeats."""

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

from .runtime import Runtime

log = logging.getLogger(__name__)

_HEARTBEAT_EVERY = 5.0
_HEARTBEAT_TTL = 15

_state: dict[str, Any] = {"runtime": None, "listener_pid": None, "url": None}


def install(url: str) -> None:
    """Remember the broker URL for the runtime each process builds."""
    _state["url"] = url


def runtime(hostname: str | None = None) -> Runtime:
    """This process's runtime, built on first use; also makes sure promotions are followed."""
    rt: Runtime | None = _state["runtime"]
    if rt is None:
        rt = _state["runtime"] = Runtime(_state["url"], get_settings(), hostname)
    if _state["listener_pid"] != os.getpid():
        # Threads do not survive fork: every pool process starts its own listener.
        _state["listener_pid"] = os.getpid()
        if hostname:
            rt.rename(hostname)
        threading.Thread(target=_follow_promotions, args=(rt,), daemon=True).start()
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


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _load_before_fork(sender: Any = None, **_: Any) -> None:
    """Load promoted versions in the parent, so pool processes share them copy-on-write."""
    rt = Runtime(_state["url"], get_settings(), getattr(sender, "hostname", None))
    rt.cache.warm(get_settings().served_models)
    _state["runtime"] = rt


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_in_child(sender: Any = None, **_: Any) -> None:
    rt: Runtime | None = _state["runtime"]
    if rt is not None:
        rt.cache.after_fork()
    runtime(str(sender) if sender else None)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or "worker"
    rt = runtime(hostname)
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
