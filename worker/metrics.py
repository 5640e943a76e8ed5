"""Prometheus metrics of a worker node (``PREDICTQ_METRICS_PORT``): the contract, the recording
side in every process, and the node's ``/metrics`` server.

Every process of a node (the main process and each prefork pool process) adds its counts to its
own files in prometheus_client's multiprocess format (``{type}_{pid}.db`` in a directory made
fresh for the node, also exported as ``PROMETHEUS_MULTIPROC_DIR`` before the pool forks); the
main process serves their sum, through prometheus_client's ``MultiProcessCollector``, plus the
cluster-wide gauges read from Redis at scrape time (``registry.gauges``). Two choices differ from
prometheus_client's own metric objects, which write the same files:

- counts are aggregated per batch: a histogram bucket that a thousand jobs fall in is one write,
  not a thousand, so the hot path pays a dict update and a bisect per job;
- each process's files are guarded by a lock it made itself after the fork: prometheus_client's
  value lock is one module-global lock, and a pool process forked while a thread of the main
  process (the sweeper, the promotion listener) held it would block on its first count for good;
- each file's blocks are reserved (``posix_fallocate``) before anything is written through its
  memory map: prometheus_client grows its files sparse, and a store to a page the filesystem
  cannot back (a full disk or tmpfs) kills the process with SIGBUS instead of raising.

Recording never raises into the job path: a count that cannot be written (the directory was
removed, the disk is full) is dropped and logged, since the job it counts has ended, or is about
to, whatever the metrics say.

When a pool process exits (recycled after a promotion, killed, crashed), the node folds its files
into the node's own file and deletes them, so the totals never go down and the directory does not
grow with every recycle: at once when the pool reports the exit, and at each scrape for any
process the pool did not report. Labels are model names, versions, statuses and error codes,
never hostnames or job IDs; model names a process has not met before count under ``_other`` past
``MAX_MODELS`` of them, so hostile messages naming random models cannot grow the series without
bound.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec

from registry.gauges import GAUGES

if TYPE_CHECKING:
    from .batching import Job

__all__ = [
    "BATCH_BUCKETS",
    "CONTRACT",
    "QUEUE_BUCKETS",
    "RUN_BUCKETS",
    "enable",
    "enabled",
    "jobs_cancelled",
    "jobs_ended",
    "jobs_failed",
    "load_failed",
    "predicted",
    "process_exited",
]

from .pids import pid_alive

log = logging.getLogger(__name__)

# Queue waits reach minutes under a backlog; runs are milliseconds to the time limit.
QUEUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
RUN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
               30.0, 60.0, 300.0)  # fmt: skip
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
                 4096.0)  # fmt: skip
MAX_MODELS = 256
# A failing metrics write is logged at most once per this many seconds per process.
_LOG_FAILURES_EVERY = 60.0

# name -> (type, label names, help, buckets)
_DEFS: dict[str, tuple[str, tuple[str, ...], str, tuple[float, ...]]] = {
    "predictq_jobs_total": ("counter", ("model", "version", "status"),
                            "Jobs ended, by model, version and final status.", ()),
    "predictq_job_errors_total": ("counter", ("model", "code"),
                                  "Failed jobs, by model and error code.", ()),
    "predictq_job_queue_seconds": ("histogram", ("model",),
                                   "Seconds from submission to the (last) start.", QUEUE_BUCKETS),
    "predictq_job_run_seconds": ("histogram", ("model",),
                                 "Seconds from start to end, of jobs a worker finished.",
                                 RUN_BUCKETS),
    "predictq_batch_jobs": ("histogram", ("model",), "Jobs per predict() call.", BATCH_BUCKETS),
    "predictq_model_load_failures_total": ("counter", ("model", "version"),
                                           "Failed attempts to load a model version.", ()),
}  # fmt: skip

#: Every metric name predictq exports, and its Prometheus type: the names are a contract.
CONTRACT: dict[str, str] = {
    **{name: typ for name, (typ, _, _, _) in _DEFS.items()},
    **{name: "gauge" for name in GAUGES},
}


class _Shard:
    """One process's metric files, in prometheus_client's multiprocess format."""

    def __init__(self, directory: str, ident: str) -> None:
        from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict, mmap_key
        from prometheus_client.utils import floatToGoString

        # Imported here, not per call: a scrape-free process pays for them once.
        self._dict: Any = MmapedDict
        self._initial: int = _INITIAL_MMAP_SIZE
        self._mmap_key: Any = mmap_key
        self._le: Any = floatToGoString
        self.directory = directory
        self.ident = ident
        self.lock = threading.Lock()
        self._files: dict[str, Any] = {}
        self._keys: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()

    def _file(self, typ: str) -> Any:
        f = self._files.get(typ)
        if f is None:
            path = os.path.join(self.directory, f"{typ}_{self.ident}.db")
            # Reserved before MmapedDict opens it: opening a new file already writes its header.
            _reserve(path, self._initial)
            f = self._files[typ] = self._dict(path)
        return f

    def add_raw(self, typ: str, key: str, amount: float) -> None:
        """Add to a sample by its file key (the lock is held by the caller)."""
        f = self._file(typ)
        if key not in f._positions:
            # The entry MmapedDict appends for a new key (length, key padded to 8 bytes, value
            # and timestamp); a file it outgrows doubles, and is reserved before it does.
            size = len(key.encode())
            need = f._used + 4 + size + (8 - (size + 4) % 8) + 16
            capacity = f._capacity
            while need > capacity:
                capacity *= 2
            if capacity != f._capacity:
                _reserve(f._fname, capacity)
        value, _ = f.read_value(key)
        f.write_value(key, value + amount, 0.0)

    def _key(self, name: str, sample: str, labels: tuple[str, ...]) -> str:
        cached = self._keys.get((name, sample, labels))
        if cached is None:
            _typ, names, doc, _buckets = _DEFS[name]
            family = name.removesuffix("_total")
            if sample.endswith("_bucket"):
                names = (*names, "le")
            cached = self._keys[(name, sample, labels)] = self._mmap_key(
                family, sample, list(names), list(labels), doc
            )
        return cached

    def inc(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        self.add_raw("counter", self._key(name, name, labels), amount)

    def observe(self, name: str, labels: tuple[str, ...], counts: Sequence[int],
                total: float) -> None:  # fmt: skip
        """Add ``counts[i]`` observations to bucket i (the last is +Inf), ``total`` to the sum."""
        buckets = (*_DEFS[name][3], float("inf"))
        first = (name, labels) not in self._seen
        self._seen.add((name, labels))
        for bound, n in zip(buckets, counts, strict=True):
            # Every bucket of a new series is written, zeros too: quantiles need them all.
            if n or first:
                le = self._le(bound)
                key = self._key(name, f"{name}_bucket", (*labels, le))
                self.add_raw("histogram", key, n)
        self.add_raw("histogram", self._key(name, f"{name}_sum", labels), total)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _reserve(path: str, size: int) -> None:
    """Allocate a metric file's blocks (creating it) up to ``size`` bytes, or its current size
    if larger; raise OSError when the disk is full. A filesystem that cannot allocate ahead is
    written as before, unreserved."""
    if not hasattr(os, "posix_fallocate"):  # macOS
        return
    # Not O_APPEND, as MmapedDict opens it: glibc's fallback (for filesystems without
    # fallocate) refuses append-mode descriptors.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.posix_fallocate(fd, 0, max(size, os.fstat(fd).st_size))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    finally:
        os.close(fd)


def bucket_counts(values: Iterable[float], bounds: Sequence[float]) -> tuple[list[int], float]:
    """Observations per bucket (the last is +Inf) and their sum, as a histogram counts them
    (a value on a bound falls in that bound's bucket); negative values count as 0 (clock skew
    between a producer and a worker)."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    where = bisect.bisect_left
    for v in values:
        if v < 0.0:
            v = 0.0
        counts[where(bounds, v)] += 1
        total += v
    return counts, total


class _State:
    """Where this node's metric files are, and the shard of the calling process."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.node_pid = os.getpid()
        # The main process's own counts, and those of its dead pool processes.
        self.node = _Shard(directory, "node")
        self._shard: _Shard | None = None
        self._shard_pid = 0
        # Only pool processes take it (the main process has its shard already), so a fork
        # never finds it held.
        self._creating = threading.Lock()
        self._models: set[str] = set()

    def shard(self) -> _Shard:
        pid = os.getpid()
        if pid == self.node_pid:
            return self.node
        shard = self._shard
        if self._shard_pid != pid or shard is None:
            with self._creating:  # the batch consumer and Celery's task thread may race here
                if self._shard_pid != pid or self._shard is None:
                    # Forked: this process writes files of its own, under a lock of its own.
                    self._shard, self._shard_pid = _Shard(self.directory, str(pid)), pid
                shard = self._shard
        return shard

    def model(self, name: str) -> str:
        if name in self._models:
            return name
        if len(self._models) < MAX_MODELS:
            self._models.add(name)
            return name
        return "_other"


_state: _State | None = None


def enabled() -> bool:
    """Whether this node records metrics."""
    return _state is not None


def enable(directory: str | None = None) -> str:
    """Record metrics from now on, in a fresh directory; call it in the node's main process
    before the pool forks. Returns the directory (removed when the main process exits)."""
    global _state
    path = directory or tempfile.mkdtemp(prefix="predictq-metrics-")
    # Any prometheus_client metric created in these processes lands there too.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    _state = _State(path)
    main = os.getpid()

    def remove() -> None:
        if os.getpid() == main:
            shutil.rmtree(path, ignore_errors=True)

    import atexit

    atexit.register(remove)
    return path


# -- recording (each a no-op when metrics are off, and never raising) ---------------------------

_P = ParamSpec("_P")
_failed_said = -_LOG_FAILURES_EVERY


def _never_raises(record: Callable[_P, None]) -> Callable[_P, None]:
    """Recording runs on the job path, between a batch's START and FINISH and right after
    FINISH: an error there would make the consumer retry, then surrender, a batch that ran
    fine, until its jobs failed as ``worker_lost``. A count that cannot be written is dropped."""

    @functools.wraps(record)
    def recording(*args: _P.args, **kwargs: _P.kwargs) -> None:
        global _failed_said
        try:
            record(*args, **kwargs)
        except Exception:
            now = time.monotonic()
            if now - _failed_said >= _LOG_FAILURES_EVERY:
                _failed_said = now
                log.exception("metrics not recorded (counts are dropped until this is fixed; "
                              "jobs are not affected)")  # fmt: skip

    return recording


def _version(job: Job) -> str:
    version = job.ran_version
    return "" if version is None else str(version)


@_never_raises
def jobs_ended(jobs: Sequence[Job], written: Sequence[Any], finished_at: float) -> None:
    """Count the jobs whose final record FINISH wrote (``written[i]`` is 1), never duplicates."""
    state = _state
    if state is None:
        return
    ended: dict[tuple[str, str, str], int] = {}
    errors: dict[tuple[str, str], int] = {}
    waits: dict[str, list[float]] = {}
    runs: dict[tuple[str, float], int] = {}
    label = state.model
    # The jobs of a batch share their start time, and mostly their model: both are looked up
    # once per change, not once per job.
    stamp, started, last = "", 0.0, ""
    waited: list[float] = []
    for job, wrote in zip(jobs, written, strict=True):
        if not wrote:
            continue
        model = label(job.model_name)
        key = (model, _version(job), job.status)
        ended[key] = ended.get(key, 0) + 1
        if job.error is not None:
            code = (model, job.error.code)
            errors[code] = errors.get(code, 0) + 1
        if job.started_at:
            if job.started_at != stamp:
                stamp, started = job.started_at, float(job.started_at)
            if model != last:
                last, waited = model, waits.setdefault(model, [])
            run = (model, started)
            runs[run] = runs.get(run, 0) + 1
            if job.submitted_at:
                waited.append(started - float(job.submitted_at))
    shard = state.shard()
    with shard.lock:
        for labels, n in ended.items():
            shard.inc("predictq_jobs_total", labels, n)
        for labels2, n in errors.items():
            shard.inc("predictq_job_errors_total", labels2, n)
        for model, values in waits.items():
            shard.observe("predictq_job_queue_seconds", (model,),
                          *bucket_counts(values, QUEUE_BUCKETS))  # fmt: skip
        per_model: dict[str, tuple[list[int], float]] = {}
        for (model, at), n in runs.items():
            counts, total = per_model.setdefault(model, ([0] * (len(RUN_BUCKETS) + 1), 0.0))
            seconds = max(0.0, finished_at - at)
            counts[bisect.bisect_left(RUN_BUCKETS, seconds)] += n
            per_model[model] = (counts, total + seconds * n)
        for model, (counts, total) in per_model.items():
            shard.observe("predictq_job_run_seconds", (model,), counts, total)


@_never_raises
def jobs_cancelled(jobs: Sequence[Job]) -> None:
    """Count cancelled jobs, met (once each) when a worker takes their message."""
    _count([(j.model_name, _version(j), "") for j in jobs], "cancelled")


@_never_raises
def jobs_failed(ended: Sequence[tuple[str, str, str]]) -> None:
    """Count jobs that recovery failed: (model, version, error code) each."""
    _count(ended, "failed")


def _count(ended: Sequence[tuple[str, str, str]], status: str) -> None:
    state = _state
    if state is None or not ended:
        return
    shard = state.shard()
    with shard.lock:
        for model, version, code in ended:
            name = state.model(model)
            shard.inc("predictq_jobs_total", (name, version, status), 1)
            if code:
                shard.inc("predictq_job_errors_total", (name, code), 1)


@_never_raises
def predicted(model: str, jobs: int) -> None:
    """One predict() call over ``jobs`` jobs."""
    state = _state
    if state is None:
        return
    counts, total = bucket_counts((float(jobs),), BATCH_BUCKETS)
    shard = state.shard()
    with shard.lock:
        shard.observe("predictq_batch_jobs", (state.model(model),), counts, total)


@_never_raises
def load_failed(model: str, version: int) -> None:
    """A model version failed to load in this process."""
    state = _state
    if state is None:
        return
    shard = state.shard()
    with shard.lock:
        shard.inc("predictq_model_load_failures_total", (state.model(model), str(version)), 1)


# -- the node's side: folding dead processes' files, serving /metrics --------------------------


def _pid_of(path: str) -> int | None:
    stem = os.path.basename(path)[: -len(".db")]
    tail = stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def _fold(state: _State, pid: int, *, confirm: Callable[[int], bool]) -> None:
    """Add a dead process's counters and histograms to the node's file and delete its files.

    Each file is first renamed, then ``confirm`` asks again that the pid is dead: a new process
    that was given the same pid meanwhile keeps writing to the file it opened, which then goes
    back in place (the lock is held by the caller).
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, state.directory)  # type: ignore[no-untyped-call]
    for typ in ("counter", "histogram"):
        path = os.path.join(state.directory, f"{typ}_{pid}.db")
        aside = f"{path}.folding"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        if not confirm(pid):
            os.rename(aside, path)
            continue
        values = MmapedDict.read_all_values_from_file(aside)  # type: ignore[no-untyped-call]
        for key, value, _ts, _pos in values:
            if value:
                state.node.add_raw(typ, key, value)
        os.remove(aside)


def process_exited(pid: int) -> None:
    """A pool process exited (its pool reports it): fold its files into the node's."""
    state = _state
    if state is None or pid == state.node_pid:
        return
    # It runs in the node's main loop: never wait long on a scrape that holds the lock (the
    # scrape folds the files itself then).
    if not state.node.lock.acquire(timeout=1.0):
        return
    try:
        _fold(state, pid, confirm=lambda p: not pid_alive(p))
    finally:
        state.node.lock.release()


def _fold_dead(state: _State) -> None:
    """Fold the files of processes that are gone but whose exit nobody reported."""
    pids = {_pid_of(p) for p in glob.glob(os.path.join(state.directory, "*.db"))}
    for pid in sorted(p for p in pids if p is not None and p != state.node_pid):
        if not pid_alive(pid):
            _fold(state, pid, confirm=lambda p: not pid_alive(p))


class NodeCollector:
    """What a node's ``/metrics`` shows: every process's counts, summed, folding dead ones in."""

    def __init__(self, state: _State) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.state = state
        self._files = MultiProcessCollector(None, path=state.directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        with self.state.node.lock:
            try:
                _fold_dead(self.state)
            except OSError:
                log.exception("could not fold the metric files of exited processes")
            # Read under the lock: a file folded meanwhile would count twice or not at all.
            return list(self._files.collect())  # type: ignore[no-untyped-call]


def serve(port: int, cluster: Any) -> Any:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a thread of the main process:
    every process's counts plus ``cluster`` (the scrape-time Redis collector). Returns the
    server, which pool processes close after the fork."""
    from prometheus_client import CollectorRegistry, start_http_server

    if _state is None:
        raise RuntimeError("metrics.enable() must run first")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(_state))
    registry.register(cluster)
    server, _thread = start_http_server(port, registry=registry)
    return server


def after_fork(server: Any) -> None:
    """In a pool process: close the inherited listening socket (it belongs to the node)."""
    with contextlib.suppress(OSError):
        server.socket.close()
