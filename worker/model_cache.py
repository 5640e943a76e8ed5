"""The per-process model cache: loads each version once, swaps aliases atomically, keeps the old
version serving when a new one fails to load."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from registry import MissingModule, ModelNotFound, ModelVersion, PredictqError, Registry, keys
from registry.modules import first_missing

from . import metrics

log = logging.getLogger(__name__)

# How long a version that failed to load is left alone before it is tried again.
_RETRY_FAILED_LOAD = 30.0


@dataclass(frozen=True)
class LoadedModel:
    """An estimator together with the metadata of the version it came from."""

    meta: ModelVersion
    estimator: Any
    # The JSON of the class order predict_proba() answers in, which a result with
    # probabilities carries: encoded once per load, not per job.
    classes: bytes = b""

    def __post_init__(self) -> None:
        classes = self.meta.signature.classes
        if classes is not None:
            object.__setattr__(self, "classes", orjson.dumps(classes))


class ModelCache:
    """Loaded model versions of one worker process, and which version each alias serves."""

    def __init__(self, registry: Registry, worker: str, spare: int) -> None:
        self.registry = registry
        self.worker = worker
        self.spare = spare
        self._lock = threading.RLock()
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._serving: dict[tuple[str, str], int] = {}
        self._failed: dict[tuple[str, int], tuple[PredictqError, float]] = {}
        self._generation: Any = None
        self._generation_seen = 0
        self._fork_waited = 0.0

    def after_fork(self) -> None:
        """A fresh lock: a thread of the parent may have held the old one at fork time."""
        self._lock = threading.RLock()

    def hold_forks(self) -> None:
        """Make every fork of this process wait for a model load in progress in another thread.

        A node's main process loads a promoted version in its listener thread while Celery's
        main thread forks pool processes (to replace one that exited). A process forked
        mid-load inherits whatever the load held at that instant: importlib's lock on a module
        being imported (unpickling imports the estimator's modules; skops, s3fs and botocore
        import lazily), with the module half-initialised in ``sys.modules``, or the flock on a
        download. When it then loads the same version it waits on them forever, its batch
        held until PREDICTQ_VISIBILITY_TIMEOUT. So the fork takes this cache's lock first,
        which every load holds: the cost is a pool process replaced only once the load ends.
        Celery's own replacements do not even wait here (lifecycle._replace_between_loads):
        its main loop must go on meanwhile.

        Hooks registered later run earlier before a fork, so this one must be registered after
        every hook that takes a lock a load may need: logging's (its module lock), and
        concurrent.futures' (its shutdown lock, which a load that submits to a thread pool
        takes), which is imported here first for that reason.
        """
        import concurrent.futures.thread  # noqa: F401  (registers its fork hook now: see above)

        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_in_parent,
                            after_in_child=self.after_fork)  # fmt: skip

    @contextlib.contextmanager
    def unless_loading(self) -> Iterator[bool]:
        """Hold this cache, without waiting, unless another thread is loading a version;
        yields whether it is held. A fork made meanwhile finds it held by its own thread."""
        held = self._lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                self._lock.release()

    def _before_fork(self) -> None:
        started = time.monotonic()
        self._lock.acquire()
        self._fork_waited = time.monotonic() - started

    def _after_fork_in_parent(self) -> None:
        self._lock.release()  # only a child replaces it (after_fork)
        if self._fork_waited > 1.0:
            log.info("a pool process was forked %.1fs late, once a model load ended",
                     self._fork_waited)  # fmt: skip

    def watch(self, generation: Any) -> None:
        """Re-check loaded versions whenever the node bumps ``generation`` (a pool process's
        only sign of a notice: it has no listener of its own)."""
        self._generation = generation
        self._generation_seen = generation.value

    def serving(self) -> dict[tuple[str, str], int]:
        """A copy of the alias -> version map this process serves.

        Taken without the lock, which a model load holds for as long as it takes: the
        heartbeat must never wait on one (a dict copy is atomic under the GIL).
        """
        return dict(self._serving)

    def get(self, model: str, version: int, alias: str | None = None) -> LoadedModel:
        """The loaded ``version`` of ``model``; for an alias job, the old version when it fails.

        A job already holding a LoadedModel keeps it, so a swap never disturbs running work.
        """
        key = (model, version)
        with self._lock:
            if self._generation is not None and self._generation.value != self._generation_seen:
                self._recheck(self._generation.value)
            found = self._loaded.get(key)
            if found is None:
                try:
                    found = self._load(model, version)
                except PredictqError as e:
                    fallback = self._fallback(model, alias, version)
                    if fallback is None:
                        raise
                    log.error("serving %s v%s: v%s failed to load: %s",
                              model, fallback.meta.version, version, e.message)  # fmt: skip
                    return fallback
            self._loaded.move_to_end(key)
            if alias is not None and self._serving.get((model, alias)) != version:
                previous = self._serving.get((model, alias))
                self._serving[(model, alias)] = version
                log.info("%s %r now serves v%s (was v%s)", model, alias, version, previous)
            self._evict()
            return found

    def _fallback(self, model: str, alias: str | None, version: int) -> LoadedModel | None:
        if alias is None:
            return None
        old = self._serving.get((model, alias))
        if old is None or old == version:
            return None
        return self._loaded.get((model, old))

    def _load(self, model: str, version: int) -> LoadedModel:
        failed = self._failed.get((model, version))
        if failed is not None and time.monotonic() - failed[1] < _RETRY_FAILED_LOAD:
            raise failed[0]
        try:
            meta = self.registry.servable(model, version)
            # Checked before unpickling: a module that is not installed here is one clear line.
            missing = first_missing(meta.modules)
            if missing is not None:
                raise self._missing(model, version, missing)
            loaded = LoadedModel(meta, self.registry.load(meta))
        except PredictqError as e:
            self._report_failure(model, version, e)
            raise
        except ImportError as e:  # a module the artifact's opcodes did not name
            missing_error = self._missing(model, version, e.name or str(e))
            self._report_failure(model, version, missing_error)
            raise missing_error from e
        except Exception as e:  # a broken pickle raises anything at all
            error = PredictqError(
                f"{model} v{version} could not be loaded ({type(e).__name__}: {e}): the "
                "workers' libraries or your own modules differ from those it was saved with "
                f"(see `predictq models show {model} {version}`); install matching versions "
                "on the workers, or re-register it from an environment that matches theirs",
                model=model,
                version=version,
            )
            self._report_failure(model, version, error)
            raise error from e
        self._failed.pop((model, version), None)
        self._loaded[(model, version)] = loaded
        log.info("loaded %s v%s (sha256 %s...)", model, version, meta.sha256[:12])
        return loaded

    def _missing(self, model: str, version: int, module: str) -> MissingModule:
        return MissingModule(
            f"{model} v{version} needs module {module!r}, which is not importable on worker "
            f"{self.worker}: install the package that provides it on the workers (in the "
            "worker image, or on their PYTHONPATH)",
            module=module,
            model=model,
            version=version,
        )

    def _report_failure(self, model: str, version: int, error: PredictqError) -> None:
        self._failed[(model, version)] = (error, time.monotonic())
        metrics.load_failed(model, version)
        log.error("failed to load %s v%s: %s", model, version, error.message)
        entry = {"code": error.code, "message": error.message, "at": time.time()}
        try:
            self.registry.redis.hset(
                keys.LOAD_FAILURES, f"{model}:{version}:{self.worker}", json.dumps(entry)
            )
            self.registry.redis.expire(keys.LOAD_FAILURES, keys.STATS_TTL)
        except Exception:  # reporting must never turn a load failure into a crash
            log.exception("could not record the load failure in Redis")

    def _evict(self) -> None:
        """Drop least recently used versions that no alias serves, beyond ``spare`` of them."""
        in_use = {(m, v) for (m, _a), v in self._serving.items()}
        idle = [k for k in self._loaded if k not in in_use]
        for key in idle[: max(0, len(idle) - self.spare)]:
            del self._loaded[key]
            log.info("unloaded %s v%s", *key)

    def forget(self, model: str, version: int) -> None:
        """Drop what this process holds of a version that was archived, unarchived or deleted.

        Its next job loads it afresh through the registry, which refuses it if it is gone.
        """
        with self._lock:
            self._loaded.pop((model, version), None)
            self._failed.pop((model, version), None)
            for key, served in list(self._serving.items()):
                if key[0] == model and served == version:
                    del self._serving[key]

    def _recheck(self, generation: int) -> None:
        """The node heard a notice and will recycle this process, which may yet run the batch
        in hand: it must not serve a version archived or deleted meanwhile."""
        try:
            self.prune()
        except PredictqError as e:  # Redis is unreachable: try again at the next lookup
            log.warning("could not re-check the loaded versions: %s", e.message)
            return
        self._generation_seen = generation

    def prune(self) -> None:
        """Forget loaded versions that were archived or deleted while no notice could arrive,
        and every remembered load failure: one may be of a version unarchived since."""
        with self._lock:
            self._failed.clear()
        for model, version in list(self._loaded):
            try:
                self.registry.servable(model, version)
            except ModelNotFound:
                self.forget(model, version)

    def warm(self, models: list[str]) -> None:
        """Load the version every alias of ``models`` points at (all models when empty)."""
        for model in models or self.registry.models():
            for alias, version in self.registry.aliases(model).items():
                # A failure is already logged and reported; jobs will get the error.
                with contextlib.suppress(PredictqError):
                    self.get(model, version, alias)
