"""Batching: rows of many jobs for one model version go through one ``predict()`` call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from producer import JobRequest
from registry import InvalidInput, ModelNotFound, PredictqError, check_probabilities
from registry.schema import model_input, quiet_names
from registry.signature import first_line
from registry.validation import validate_rows

from . import metrics
from .model_cache import LoadedModel, ModelCache

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One claimed job on its way through a batch, and its outcome."""

    id: str
    request: JobRequest | None
    raw: str = field(default="", repr=False)
    has_record: bool = False
    model: str = ""
    attempts: int = 0
    alias_version: int | None = None
    # From the record, when the job started: when it was submitted and where its end is told.
    submitted_at: str = ""
    started_at: str = ""
    reply: str = ""
    status: str = "failed"
    version: int | None = None
    predictions: bytes = b""
    proba: bytes = b""
    error: PredictqError | None = None
    # The rows as the message gave them, when they are not ``request.rows``: the jobs of a
    # batch message share one request.
    given: Any = field(default=None, repr=False)
    rows: list[list[Any]] = field(default_factory=list, repr=False)
    # The JSON of the class order its probabilities follow, when it asked for them.
    classes: bytes = b""
    # Its producer asked for a Celery result (the message's ``predictq_celery`` header; see
    # producer/celery_results.py).
    celery: bool = False

    def fail(self, error: PredictqError) -> None:
        self.status, self.error = "failed", error

    @property
    def model_name(self) -> str:
        """The model the job asked for (its request's, or what an unreadable message named)."""
        return self.request.model if self.request is not None else self.model

    @property
    def ran_version(self) -> int | None:
        """The version the job ran on, else the one it was pinned to, else None."""
        if self.version is not None:
            return self.version
        return self.request.version if self.request is not None else None


class _Models:
    """The models one batch runs on, looked up once per (model, version, alias) per batch."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self._got: dict[tuple[str, int, str | None], LoadedModel] = {}

    def get(self, model: str, version: int, alias: str | None) -> LoadedModel:
        key = (model, version, alias)
        found = self._got.get(key)
        if found is None:
            found = self._got[key] = self.cache.get(model, version, alias)
        return found


def _prepare(job: Job, models: _Models, max_rows: int) -> LoadedModel | None:
    """Resolve, load and validate one job; None (with the job failed) when it cannot run."""
    request = job.request
    if request is None:
        return None
    try:
        pinned = request.version is not None
        version = request.version if pinned else job.alias_version
        if version is None:
            # resolve() raises ModelNotFound naming whether the model or the alias is missing.
            version = models.cache.registry.resolve(request.model, request.alias)
        try:
            loaded = models.get(request.model, version, None if pinned else request.alias)
        except ModelNotFound:
            if pinned:
                raise
            # The version START resolved the alias to was archived or deleted since (the
            # alias had moved on first): an alias job runs on what the alias serves now.
            now = models.cache.registry.resolve(request.model, request.alias)
            if now == version:
                raise
            loaded = models.get(request.model, now, request.alias)
        job.version = loaded.meta.version
        rows = request.rows if job.given is None else job.given
        job.rows = validate_rows(rows, loaded.meta.signature, max_rows=max_rows)
        if request.probabilities:
            check_probabilities(loaded.meta)
    except PredictqError as e:
        job.fail(e)
        return None
    except Exception as e:  # hostile rows must fail their own job, never the batch
        log.exception("job %s: its rows could not be checked", job.id)
        job.fail(InvalidInput(f"the rows could not be read ({type(e).__name__}: {first_line(e)})"))
        return None
    return loaded


def _chunks(members: list[Job], max_rows: int) -> Iterator[list[Job]]:
    """Consecutive runs of jobs whose rows add up to at most ``max_rows`` (or one big job)."""
    chunk: list[Job] = []
    rows = 0
    for job in members:
        if chunk and rows + len(job.rows) > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(job)
        rows += len(job.rows)
    if chunk:
        yield chunk


def _dumps(values: Any) -> bytes:
    """JSON of a numpy array (or slice); object arrays (string labels) go through lists."""
    try:
        return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return orjson.dumps(values.tolist())


def _predict(loaded: LoadedModel, jobs: list[Job]) -> None:
    """One predict() (and at most one predict_proba()) for ``jobs``, split back per job."""
    schema = loaded.meta.signature.input_schema
    rows = [row for job in jobs for row in job.rows]
    x = model_input(rows, schema)
    wants = [j for j in jobs if j.request is not None and j.request.probabilities]
    with quiet_names(schema):
        predictions = np.asarray(loaded.estimator.predict(x))
        proba = None
        if wants:
            px = x if len(wants) == len(jobs) else model_input(
                [r for j in wants for r in j.rows], schema
            )  # fmt: skip
            proba = np.asarray(loaded.estimator.predict_proba(px))
    start = 0
    proba_start = 0
    classes = loaded.classes
    for job in jobs:
        end = start + len(job.rows)
        wants_proba = proba is not None and job.request is not None and job.request.probabilities
        proba_end = proba_start + len(job.rows) if wants_proba else proba_start
        try:
            job.predictions = _dumps(predictions[start:end])
            if wants_proba:
                assert proba is not None
                job.proba = _dumps(proba[proba_start:proba_end])
                job.classes = classes
            job.status = "succeeded"
        except Exception as e:  # the model's output, not the caller's input
            log.error("job %s: predictions not writable as JSON", job.id, exc_info=e)
            meta = loaded.meta
            job.fail(PredictqError(
                f"{meta.name} v{meta.version} answered values JSON cannot carry "
                f"({type(e).__name__}: {first_line(e)}): make predict() return numbers, "
                "strings or booleans", model=meta.name, version=meta.version, job_id=job.id,
            ))  # fmt: skip
        start, proba_start = end, proba_end


def configure_sklearn() -> None:
    """Settings for scikit-learn in the calling thread (its configuration is per thread).

    Every row is checked for NaN and infinity before it reaches a model, so scikit-learn's own
    finiteness check is skipped: on a small batch it costs as much as the prediction.
    """
    # Imported here: importing scikit-learn takes seconds, and every `predictq` command imports
    # this package; only the processes that run models pay for it.
    import sklearn

    sklearn.set_config(assume_finite=True)


def run_batch(
    jobs: list[Job],
    cache: ModelCache,
    *,
    max_rows: int,
    batch_rows: int,
    timing: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> None:
    """Predict every runnable job, one call per model version and chunk of ``batch_rows``.

    A job that fails validation fails alone; if a whole call raises, its jobs are retried one
    by one so that only the job that breaks the model fails. ``timing`` wraps every predict
    call: the time limit covers those, never a model load or a wait for Redis.
    """
    groups: dict[tuple[str, int], tuple[LoadedModel, list[Job]]] = {}
    models = _Models(cache)
    for job in jobs:
        loaded = _prepare(job, models, max_rows)
        if loaded is not None:
            meta = loaded.meta
            groups.setdefault((meta.name, meta.version), (loaded, []))[1].append(job)
    for loaded, members in groups.values():
        for chunk in _chunks(members, batch_rows):
            metrics.predicted(loaded.meta.name, len(chunk))
            try:
                with timing():
                    _predict(loaded, chunk)
            except Exception as e:
                if len(chunk) == 1:
                    _fail_alone(chunk[0], loaded, e)
                    continue
                for job in chunk:
                    metrics.predicted(loaded.meta.name, 1)
                    try:
                        with timing():
                            _predict(loaded, [job])
                    except Exception as alone:
                        _fail_alone(job, loaded, alone)


def _fail_alone(job: Job, loaded: LoadedModel, error: Exception) -> None:
    """Fail a job whose rows the model raised on, run alone.

    scikit-learn refuses input it cannot take (an unknown category under
    ``handle_unknown="error"``, a value it cannot convert) with ValueError or TypeError: that
    is the caller's input, and the caller gets the model's own words. Anything else is a fault
    of the model or the worker.
    """
    meta = loaded.meta
    if isinstance(error, ValueError | TypeError):
        log.info("job %s: %s v%s refused its rows: %s", job.id, meta.name, meta.version, error)
        job.fail(InvalidInput(
            f"{meta.name} v{meta.version} refused this job's rows: {first_line(error)}",
            model=meta.name, version=meta.version, job_id=job.id,
        ))  # fmt: skip
        return
    log.error("job %s failed in predict()", job.id, exc_info=error)
    job.fail(PredictqError(
        f"predict() raised {type(error).__name__} on this job's rows; see the worker log",
        model=meta.name, version=meta.version, job_id=job.id,
    ))  # fmt: skip
