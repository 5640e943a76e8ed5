"""Worker lifecycle hooks: load models before the fork, follow promotions, start the batch
consumer and its watchdog in each pool process, send heartbeats, sweep, and stop cleanly.

The node's own services (heartbeat, sweeper, promotion listener) start as a boot step right
after the pool, before Celery's consumer: that consumer may spend a while retrying (a full Redis
refuses the writes it makes at start-up), and the pool must drain the queue meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import threading
import time
from typing import Any, ClassVar

import redis
from celery import bootsteps, signals

from registry import InvalidSettings, get_settings, keys

from . import ledger, metrics
from .app import celery_app
from .batching import configure_sklearn
from .consumer import BatchConsumer, Throttled
from .events import TaskEvents
from .fork_guard import hold_log_writes
from .model_cache import ModelCache
from .recovery import Sweeper
from .runtime import Runtime

log = logging.getLogger(__name__)

# A node whose heartbeat is gone has its pool processes' claim lists taken over: beat often
# enough that a dead node is noticed within seconds, with room for a few missed beats.
_HEARTBEAT_EVERY = 2.0
_HEARTBEAT_TTL = 10

_state: dict[str, Any] = {
    "runtime": None, "url": None, "consumer": None, "listener": None, "sweeper": None,
    "pool": None, "parent_pid": None, "generation": None, "task_events": False,
    "metrics_server": None, "metrics_said": None,
}  # fmt: skip


def install(url: str, *, task_events: bool = False, metrics_port: int | None = None) -> None:
    """Remember the broker URL for the runtime each process builds, and whether batch
    consumers send task events; with ``metrics_port``, record metrics (in this, the node's
    main process, before the pool forks) and serve them."""
    _state["url"] = url
    _state["task_events"] = task_events
    # scikit-learn is imported lazily so that commands which never run a model start fast; a
    # worker imports it here, once, before the pool forks, so pool processes share it.
    import sklearn  # noqa: F401

    if metrics_port:
        from registry.connection import connect
        from registry.gauges import ClusterCollector

        path = metrics.enable()
        scrapes = connect(url)  # the scrape thread's own client
        try:
            _state["metrics_server"] = metrics.serve(
                metrics_port, ClusterCollector(lambda: scrapes, get_settings())
            )
        except OSError as e:
            raise InvalidSettings(
                f"cannot serve metrics on port {metrics_port} ({e.strerror or e}): another "
                "process (another worker on this host?) holds it; give each worker node its own "
                "PREDICTQ_METRICS_PORT / --metrics-port"
            ) from e
        _state["metrics_said"] = f"serving metrics on port {metrics_port} (files in {path})"


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

    A version archived or deleted is dropped the same way: here at once, and in pool processes
    as they are forked afresh after their batch.
    """
    served = set(get_settings().served_models)
    connected_before = False
    while True:
        try:
            pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(keys.EVENTS)
            rt.cache.warm(sorted(served))
            if connected_before:
                # A version archived or deleted while the connection was down sent a notice
                # nobody heard: drop it here, and re-fork the pool processes from here.
                rt.cache.prune()
                _recycle_pool("after a reconnection, in case a notice was missed")
            connected_before = True
            for message in pubsub.listen():
                event = json.loads(message["data"])
                # Archive, unarchive and delete concern every model: a node that preloads
                # only some still loads pinned versions of any on demand.
                if served and event["model"] not in served and "action" not in event:
                    continue
                if "action" in event:
                    # Archived, unarchived or deleted. Pool processes may hold it (pinned jobs
                    # load on demand) or remember it failing: they are forked afresh.
                    rt.cache.forget(event["model"], int(event["version"]))
                    log.info("%s v%s: %s; forgotten by this node", event["model"],
                             event["version"], event["action"])  # fmt: skip
                    _recycle_pool("to forget it")
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


def _recycle_pool(why: str = "to share the newly loaded version") -> None:
    """Ask prefork pool processes to exit after their current batch, to be forked afresh."""
    generation = _state["generation"]
    if generation is not None and _state["pool"] is not None:
        log.info("recycling pool processes %s", why)
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
    hold_log_writes()  # before hold_forks: its hook must run after that one
    rt.cache.hold_forks()
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
    # Every other policy evicts something predictq needs: allkeys-* the queue itself, and
    # volatile-* exactly the job records, leases and heartbeats, which all carry TTLs.
    if policy and policy != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %s: under memory pressure Redis may evict queued jobs, "
            "job records or worker leases, and jobs would be lost. Set it to noeviction: a full "
            "Redis then refuses new jobs and drains the queue.",
            policy,
        )


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_in_pool_process(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    rt.cache.after_fork()
    if _state["metrics_server"] is not None and os.getpid() != _state["parent_pid"]:
        metrics.after_fork(_state["metrics_server"])
    rt.rename(str(sender) if sender else "worker")
    configure_sklearn()  # for the Celery task path, which runs in this thread
    child = os.getpid() != _state["parent_pid"]
    if not child:
        _start_listener(rt)  # solo pool: this is the main process
    elif _state["generation"] is not None:
        rt.cache.watch(_state["generation"])
    if get_settings().batching:
        if _state["task_events"]:
            rt.events = TaskEvents(celery_app, rt.worker.rpartition(":")[0])
        rt.start_watchdog()
        consumer = _state["consumer"] = BatchConsumer(rt, _state["generation"] if child else None)
        consumer.start()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_consumer(**_: Any) -> None:
    """Finish the batch in hand before the process exits (a warm shutdown loses nothing)."""
    consumer: BatchConsumer | None = _state["consumer"]
    if consumer is not None:
        consumer.stop()
        if consumer.runtime.events is not None:
            consumer.runtime.events.drain()


class NodeServices(bootsteps.StartStopStep):  # type: ignore[misc]
    """Heartbeat, promotion listener and sweeper, started right after the pool."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def start(self, worker: Any) -> None:
        hostname = getattr(worker, "hostname", None) or "worker"
        pool = getattr(worker, "pool", None)
        # Only a prefork pool has processes to recycle; a solo pool is this very process.
        _state["pool"] = (
            pool if getattr(pool, "_pool", None) is not None and _is_prefork(pool) else None
        )
        if _state["metrics_said"]:
            log.info(_state["metrics_said"])  # once Celery's logging is set up
        if _state["pool"] is not None and metrics.enabled():
            _report_exits(_state["pool"]._pool)
        rt = runtime()
        if _state["pool"] is not None:
            _replace_between_loads(_state["pool"]._pool, rt.cache)
        _start_listener(rt)
        # Jobs the sweeper fails (a crash, a time limit) end in Flower too.
        on = _state["task_events"] and get_settings().batching
        events = TaskEvents(celery_app, hostname) if on else None
        sweeper = _state["sweeper"] = Sweeper(rt.redis, get_settings(), hostname, _pool_pids,
                                              events)  # fmt: skip
        info: dict[str, Any] = {
            "hostname": hostname,
            "pid": os.getpid(),
            "concurrency": getattr(worker, "concurrency", None),
            "started_at": time.time(),
        }
        beat = rt.redis.register_script(ledger.HEARTBEAT)
        throttled = Throttled(log)

        def heartbeat() -> None:
            while True:
                try:
                    info["serving"] = {f"{m}:{a}": v for (m, a), v in rt.cache.serving().items()}
                    info["replaced"] = sweeper.replaced
                    # A script flagged allow-oom: a full Redis must not make live nodes look
                    # dead, or their batches would be taken over and run twice.
                    beat(keys=[keys.worker(hostname), keys.NODES],
                         args=[json.dumps(info), _HEARTBEAT_TTL, hostname])  # fmt: skip
                except redis.RedisError as e:
                    throttled.warning("heartbeat", "heartbeat failed: %s", e)
                time.sleep(_HEARTBEAT_EVERY)

        threading.Thread(target=heartbeat, name="predictq-heartbeat", daemon=True).start()
        sweeper.start()


celery_app.steps["worker"].add(NodeServices)


def _replace_between_loads(pool: Any, cache: ModelCache) -> None:
    """Have the pool fork replacements for exited processes only while no model load runs.

    A process forked mid-load inherits what the load held (see ModelCache.hold_forks), so its
    fork must wait for the load; but Celery forks from the node's main loop, which must not
    wait a load out: a big model or a slow bucket takes minutes, and meanwhile the node would
    ignore SIGTERM. billiard's maintain_pool reaps exited processes, then forks one for each
    missing; while a load runs the forks are skipped, and the next maintain_pool (Celery runs
    it every 5 s) makes them. Other forks (a remote pool_grow) still wait in hold_forks's hook.
    """
    repopulate = pool._repopulate_pool
    deferred = False  # said once per load

    def _repopulate_pool(exitcodes: Any) -> Any:
        nonlocal deferred
        with cache.unless_loading() as free:
            if free:
                deferred = False
                return repopulate(exitcodes)
        if not deferred and len(pool._pool) < pool._processes:
            deferred = True
            log.info("a pool process will be forked once the model load in progress ends")
        return None

    pool._repopulate_pool = _repopulate_pool


def _report_exits(pool: Any) -> None:
    """Have the pool tell the metrics when a pool process exits.

    billiard's pool calls ``on_process_down`` from the node's main loop for each pool process
    it reaped (Celery sends no signal for it in the parent): the process's metric files are
    folded into the node's then. Celery's pool sets its own ``on_process_down`` each time it
    joins the event loop (after this step, and again whenever Celery's consumer restarts), so
    the wrap is put back after each of those. A scrape folds those of any exit this missed.
    """

    def wrap() -> None:
        inner = getattr(pool, "on_process_down", None)
        if getattr(inner, "predictq_reports_exits", False):
            return

        def on_process_down(proc: Any) -> None:
            if inner is not None:
                inner(proc)
            try:
                metrics.process_exited(int(proc.pid))
            except Exception:  # metrics must never disturb the pool
                log.exception("could not fold the metrics of pool process %s", proc.pid)

        on_process_down.predictq_reports_exits = True  # type: ignore[attr-defined]
        pool.on_process_down = on_process_down

    register = getattr(pool, "register_with_event_loop", None)
    if register is not None:

        def register_with_event_loop(hub: Any) -> Any:
            try:
                return register(hub)
            finally:
                wrap()

        pool.register_with_event_loop = register_with_event_loop
    wrap()


def _pool_pids() -> list[int] | None:
    """The pids of this node's prefork pool processes; None when they cannot be told."""
    processes = getattr(getattr(_state["pool"], "_pool", None), "_pool", None)
    if processes is None:
        return None
    return [p.pid for p in list(processes) if p.pid is not None]


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _replace_processes_that_left_early(sender: Any = None, **_: Any) -> None:
    """Replace pool processes that exited before Celery's consumer first became ready.

    Celery stops the whole node when it finds one right after this signal, taking it for a
    process that could not start. Here a process may well have exited by then on purpose: a
    promotion recycled it, or a job killed it, while Celery's consumer was still connecting or
    retrying (a full Redis refuses the writes it makes at start-up) and the pool already served.
    """
    pool = getattr(getattr(sender, "pool", None), "_pool", None)
    if pool is not None and hasattr(pool, "maintain_pool"):
        pool.maintain_pool()


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _clear_heartbeat(sender: Any = None, **_: Any) -> None:
    sweeper: Sweeper | None = _state["sweeper"]
    if sweeper is not None:
        sweeper.stop()
    rt: Runtime | None = _state["runtime"]
    if rt is not None and sender is not None:
        with contextlib.suppress(redis.RedisError):
            rt.redis.delete(keys.worker(sender.hostname))
            rt.redis.zrem(keys.NODES, sender.hostname)
