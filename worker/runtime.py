"""Per-process worker state and the job path: start the record, predict, write the result."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from typing import Any

import numpy as np
from pydantic import ValidationError

from producer import FINAL_STATUSES, TASK_NAME, JobRequest, validate_rows
from producer import records as rec
from registry import InvalidInput, PredictqError, Registry, Settings, keys
from registry.names import check_name

from .model_cache import LoadedModel, ModelCache

log = logging.getLogger(__name__)


def _predict(loaded: LoadedModel, rows: list[list[float]], probabilities: bool) -> tuple[str, str]:
    """Predictions (and probabilities) of ``rows`` as JSON text."""
    x = np.asarray(rows, dtype=np.float64)
    with warnings.catch_warnings():
        # Rows were already checked against feature_names_in_; sklearn would warn that a bare
        # array has no column names on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        predictions = loaded.estimator.predict(x)
        proba = loaded.estimator.predict_proba(x) if probabilities else None
    return (
        json.dumps(predictions.tolist()),
        json.dumps(proba.tolist()) if proba is not None else "",
    )


class Runtime:
    """What one worker process holds: its Redis client, model cache and scripts."""

    def __init__(self, url: str, settings: Settings, hostname: str | None = None) -> None:
        self.settings = settings
        self.registry = Registry(url, settings=settings)
        self.redis = self.registry.redis
        self.worker = f"{hostname or socket.gethostname()}:{os.getpid()}"
        self.cache = ModelCache(self.registry, self.worker, settings.model_cache_size)
        self._start = self.redis.register_script(rec.START)
        self._finish = self.redis.register_script(rec.FINISH)

    def rename(self, hostname: str) -> None:
        """Name results after the Celery node and this (possibly forked) process."""
        self.worker = f"{hostname}:{os.getpid()}"
        self.cache.worker = self.worker

    def finish(
        self,
        job_id: str,
        status: str,
        version: int | None,
        predictions: str = "",
        proba: str = "",
        error: PredictqError | None = None,
    ) -> bool:
        """Write the final record once; False when the job had already ended (a duplicate)."""
        now = time.time()
        written = self._finish(
            keys=[keys.job(job_id), keys.done(job_id), rec.stats_key(now)],
            args=[status, f"{now:.6f}", "" if version is None else version, predictions, proba,
                  json.dumps(error.to_dict()) if error else "", self.settings.result_ttl,
                  keys.DONE_TOKEN_TTL, keys.STATS_TTL],
        )  # fmt: skip
        if not written:
            log.warning("job %s had already ended: result not overwritten", job_id)
        return bool(written)

    def run(self, job_id: str, kwargs: dict[str, Any]) -> None:
        """Run one job to a final record; every failure becomes the job's error, never a crash."""
        model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else ""
        try:
            request = JobRequest.model_validate(kwargs)
            check_name(request.model)
            check_name(request.alias, "alias")
        except (ValidationError, InvalidInput) as e:
            detail = e.message if isinstance(e, InvalidInput) else _pydantic_summary(e)
            self._fail_unstarted(
                job_id,
                str(model),
                InvalidInput(
                    f"malformed job: {detail}; {TASK_NAME} takes the keyword arguments "
                    "model, rows, and optionally version, alias, probabilities, ttl"
                ),
            )
            return
        now = time.time()
        status, _attempts, alias_version = self._start(
            keys=[keys.job(job_id), keys.model_aliases(request.model)],
            args=[f"{now:.6f}", self.worker, request.model, request.alias,
                  "" if request.version is None else request.version,
                  "1" if request.probabilities else "0",
                  request.ttl or self.settings.result_ttl],
        )  # fmt: skip
        if status in FINAL_STATUSES:
            log.info("job %s is already %s: skipped", job_id, status)
            return
        version = request.version
        try:
            if version is None:
                # resolve() raises ModelNotFound naming whether the model or the alias is missing.
                version = (
                    int(alias_version)
                    if alias_version is not None
                    else self.registry.resolve(request.model, request.alias)
                )
            alias = None if request.version is not None else request.alias
            loaded = self.cache.get(request.model, version, alias)
            version = loaded.meta.version
            rows = validate_rows(
                request.rows, loaded.meta.signature, max_rows=self.settings.max_rows
            )
            if request.probabilities and not loaded.meta.signature.has_predict_proba:
                raise InvalidInput(
                    f"{request.model} v{version} has no predict_proba: submit without probabilities"
                )
            predictions, proba = _predict(loaded, rows, request.probabilities)
        except PredictqError as e:
            self.finish(job_id, "failed", version, error=e)
            return
        except Exception as e:
            log.exception("job %s failed", job_id)
            error = PredictqError(f"prediction failed: {type(e).__name__}: {e}")
            self.finish(job_id, "failed", version, error=error)
            return
        self.finish(job_id, "succeeded", version, predictions, proba)

    def _fail_unstarted(self, job_id: str, model: str, error: PredictqError) -> None:
        """Record a job whose message could not even be read as failed, creating its record."""
        now = time.time()
        self._start(
            keys=[keys.job(job_id), keys.model_aliases(model or "-")],
            args=[f"{now:.6f}", self.worker, model, "", "", "0", self.settings.result_ttl],
        )
        self.finish(job_id, "failed", None, error=error)


def _pydantic_summary(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']} ({error.error_count()} problem(s) in all)"
