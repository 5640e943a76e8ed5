"""Worker lifecycle hooks: load models before the fork, follow promotions, start the batch
consumer in each pool process, send heartbeats, and stop cleanly."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import threading
import time
from typing import Any

import redis
from celery import signals

from registry import get_settings, keys

from .batching import configure_sklearn
from .consumer import BatchConsumer
from .recovery import Sweeper
from .runtime import Runtime

log = logging.getLogger(__name__)

_HEARTBEAT_EVERY = 5.0
_HEARTBEAT_TTL = 15

_state: dict[str, Any] = {
    "runtime": None, "url": None, "consumer": None, "listener": None, "sweeper": None,
    "pool": None, "parent_pid": None, "generation": None,
}  # fmt: skip
# Eviction policies under which Redis may drop queue or job keys when memory runs out.
_UNSAFE_EVICTION = {"allkeys-lru", "allkeys-lfu", "allkeys-random"}


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

    It runs in the node's main process. With a prefork pool, once the new version is loaded
    there the pool processes are recycled: each finishes its batch, exits, and is forked
    again, sharing the new version's memory copy-on-write instead of loading a copy each.
    Until then, pool processes load it on demand, since every batch resolves its aliases
    afresh. After a dropped connection the listener re-reads every alias.
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
                    loaded = rt.cache.get(event["model"], int(event["version"]), event["alias"])
                except Exception:
                    log.exception("could not preload %s", event)
                    continue
                if loaded.meta.version == int(event["version"]):
                    _recycle_pool()
        except redis.RedisError as e:
            log.warning("promotion listener lost Redis (%s); reconnecting", e)
            time.sleep(1.0)
        except Exception:
            log.exception("promotion listener failed; restarting it")
            time.sleep(1.0)


def _recycle_pool() -> None:
    """Ask prefork pool processes to exit after their current batch, to be forked afresh."""
    generation = _state["generation"]
    if generation is not None and _state["pool"] is not None:
        log.info("recycling pool processes to share the newly loaded version")
        generation.value += 1


def _is_prefork(pool: Any) -> bool:
    return type(pool).__module__.endswith("prefork")


def _start_listener(rt: Runtime) -> None:
    if _state["listener"] != os.getpid():
        # Threads do not survive fork: every process starts its own listener.
        _state["listener"] = os.getpid()
        threading.Thread(target=_follow_promotions, args=(rt,), daemon=True).start()


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _load_before_fork(sender: Any = None, **_: Any) -> None:
    """Load promoted versions in the parent, so pool processes share them copy-on-write."""
    rt = runtime()
    _state["parent_pid"] = os.getpid()
    # Shared memory that pool processes inherit at every fork: bumping it asks them to exit
    # after their batch so they are forked again from this process (see _recycle_pool).
    _state["generation"] = multiprocessing.Value("l", 0, lock=False)
    rt.rename(getattr(sender, "hostname", None) or "worker")
    _warn_on_eviction(rt)
    rt.cache.warm(get_settings().served_models)


def _warn_on_eviction(rt: Runtime) -> None:
    try:
        policy = rt.redis.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        return  # managed Redis services often refuse CONFIG; nothing to check then
    if policy in _UNSAFE_EVICTION:
        log.warning(
            "Redis maxmemory-policy is %s: under memory pressure Redis may evict queued jobs "
            "and job records. Set it to noeviction (or volatile-*) for predictq.",
            policy,
        )


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_in_pool_process(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    rt.cache.after_fork()
    rt.rename(str(sender) if sender else "worker")
    configure_sklearn()  # for the Celery task path, which runs in this thread
    child = os.getpid() != _state["parent_pid"]
    if not child:
        _start_listener(rt)  # solo pool: this is the main process
    if get_settings().batching:
        consumer = _state["consumer"] = BatchConsumer(rt, _state["generation"] if child else None)
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
    pool = getattr(getattr(sender, "controller", None), "pool", None)
    # Only a prefork pool has processes to recycle; a solo pool is this very process.
    _state["pool"] = (
        pool if getattr(pool, "_pool", None) is not None and _is_prefork(pool) else None
    )
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
    sweeper = _state["sweeper"] = Sweeper(rt.redis, get_settings(), hostname)
    sweeper.start()


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _clear_heartbeat(sender: Any = None, **_: Any) -> None:
    sweeper: Sweeper | None = _state["sweeper"]
    if sweeper is not None:
        sweeper.stop()
    rt: Runtime | None = _state["runtime"]
    if rt is not None and sender is not None:
        with contextlib.suppress(redis.RedisError):
            rt.redis.delete(keys.worker(sender.hostname))
