"""The Python client: submit jobs, poll or wait for their results, cancel them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from registry import (
    DEFAULT_ALIAS,
    InvalidInput,
    JobNotFound,
    JobTimeout,
    ModelVersion,
    Registry,
    Settings,
    get_settings,
    keys,
)
from registry.connection import connect, resolve_url
from registry.names import check_name

from . import records
from .contract import FINAL_STATUSES, JobRequest, JobResult
from .messages import task_message
from .validation import validate_rows

# Jobs per SUBMIT script call: large enough to amortise the round trip, small enough that one
# call does not block Redis for long.
_SUBMIT_CHUNK = 1000
# Longest single block on a wake-up list: bounds how stale a missed wake-up can leave a waiter.
_WAKE_SLICE = 1.0


def _plain_rows(rows: Any) -> Any:
    """numpy arrays and pandas frames as plain lists (rows) or records."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return rows.to_dict("records")
    return rows.tolist() if hasattr(rows, "tolist") else rows


class Client:
    """A producer: enqueues prediction jobs and reads their results.

    ``url`` is a Redis URL (``redis://:password@host:6379/0``, ``rediss://...``); without it,
    ``PREDICTQ_REDIS_URL`` or else the embedded local Redis is used.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.url = resolve_url(url, self.settings)
        self.redis: redis.Redis = connect(self.url)
        self.registry = Registry(self.url, settings=self.settings)
        self._submit = self.redis.register_script(records.SUBMIT)
        self._cancel = self.redis.register_script(records.CANCEL)
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._aliases: dict[tuple[str, str], tuple[int, float]] = {}

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting ------------------------------------------------------------------------

    def _target(self, model: str, version: int | None, alias: str) -> ModelVersion:
        """The version a job would run on now; alias lookups are cached briefly."""
        if version is None:
            now = time.monotonic()
            cached = self._aliases.get((model, alias))
            if cached is None or cached[1] < now:
                resolved = self.registry.resolve(model, alias)
                cached = (resolved, now + self.settings.alias_cache_seconds)
                self._aliases[(model, alias)] = cached
            version = cached[0]
        meta = self._versions.get((model, version))
        if meta is None:
            # Versions are immutable once registered, so their metadata is cached for good.
            meta = self._versions[(model, version)] = self.registry.get(model, version=version)
        return meta

    def submit(
        self,
        model: str,
        rows: Any,
        *,
        version: int | None = None,
        alias: str = DEFAULT_ALIAS,
        job_id: str | None = None,
        probabilities: bool = False,
        ttl: int | None = None,
    ) -> str:
        """Enqueue one job and return its ID at once; the same ``job_id`` enqueues only once."""
        ids = [job_id] if job_id is not None else None
        return self.submit_many(
            model, [rows], version=version, alias=alias, job_ids=ids,
            probabilities=probabilities, ttl=ttl,
        )[0]  # fmt: skip

    def submit_many(
        self,
        model: str,
        jobs: Sequence[Any],
        *,
        version: int | None = None,
        alias: str = DEFAULT_ALIAS,
        job_ids: Sequence[str] | None = None,
        probabilities: bool = False,
        ttl: int | None = None,
    ) -> list[str]:
        """Enqueue one job per element of ``jobs`` (each a list of rows), in a few round trips.

        Every job is validated first: if any is invalid, InvalidInput names it and nothing is
        enqueued.
        """
        check_name(model)
        check_name(alias, "alias")
        if job_ids is not None and len(job_ids) != len(jobs):
            raise InvalidInput(f"got {len(job_ids)} job IDs for {len(jobs)} jobs: give one each")
        if ttl is not None and ttl <= 0:
            raise InvalidInput(f"ttl must be a positive number of seconds, got {ttl}")
        meta = self._target(model, version, alias)
        if probabilities and not meta.signature.has_predict_proba:
            raise InvalidInput(
                f"{model} v{meta.version} ({meta.signature.estimator}) has no predict_proba: "
                "submit without probabilities=True",
                model=model,
                version=meta.version,
            )
        ttl = ttl or self.settings.result_ttl
        ids = [str(j) for j in job_ids] if job_ids is not None else [uuid.uuid4().hex for _ in jobs]
        messages = []
        for i, (job_id, rows) in enumerate(zip(ids, jobs, strict=True)):
            if not job_id or len(job_id) > 200:
                raise InvalidInput(f"job ID {job_id!r} must be 1-200 characters")
            try:
                plain = validate_rows(
                    _plain_rows(rows), meta.signature, max_rows=self.settings.max_rows
                )
            except InvalidInput as e:
                prefix = f"job {i}: " if len(jobs) > 1 else ""
                raise InvalidInput(
                    f"{prefix}{e.message} ({model} v{meta.version})",
                    model=model, version=meta.version, job_id=job_id,
                ) from e  # fmt: skip
            request = JobRequest(
                model=model, rows=plain, version=version, alias=alias,
                probabilities=probabilities, ttl=ttl,
            )  # fmt: skip
            messages.append(task_message(job_id, request.model_dump(), self.settings.queue))
        pinned = "" if version is None else str(version)
        flag = "1" if probabilities else "0"
        now = f"{time.time():.6f}"
        for start in range(0, len(ids), _SUBMIT_CHUNK):
            chunk = range(start, min(start + _SUBMIT_CHUNK, len(ids)))
            argv: list[str | int] = [now]
            for i in chunk:
                argv += [model, alias, pinned, flag, ttl, messages[i]]
            self._submit(keys=[self.settings.queue, *(keys.job(ids[i]) for i in chunk)], args=argv)
        return ids

    # -- reading ---------------------------------------------------------------------------

    def _fetch(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), records.RECORD_FIELDS)
        return [
            records.parse_record(job_id, values)
            for job_id, values in zip(job_ids, pipe.execute(), strict=True)
        ]

    @staticmethod
    def _not_found(job_id: str) -> JobNotFound:
        return JobNotFound(
            f"no job {job_id!r}: it was never submitted, or its record expired after its TTL",
            job_id=job_id,
        )

    def result(self, job_id: str) -> JobResult:
        """The job's record now, whatever its status; JobNotFound for unknown or expired IDs."""
        found = self._fetch([job_id])[0]
        if found is None:
            raise self._not_found(job_id)
        return found

    def wait(self, job_id: str, timeout: float = 60.0) -> JobResult:
        """Block until the job is final and return it; JobTimeout when ``timeout`` passes."""
        return self.wait_many([job_id], timeout=timeout)[0]

    def wait_many(self, job_ids: Sequence[str], timeout: float = 60.0) -> list[JobResult]:
        """Block until every job is final; results come back in the order of ``job_ids``."""
        deadline = time.monotonic() + timeout
        results: dict[str, JobResult] = {}
        pending = list(dict.fromkeys(job_ids))
        while True:
            for job_id, found in zip(pending, self._fetch(pending), strict=True):
                if found is None:
                    raise self._not_found(job_id)
                if found.status in FINAL_STATUSES:
                    results[job_id] = found
            pending = [j for j in pending if j not in results]
            if not pending:
                return [results[j] for j in job_ids]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    f"{len(pending)} of {len(job_ids)} jobs were not final after {timeout}s "
                    f"(first: {pending[0]}); wait longer, or check `predictq status` for workers",
                    job_id=pending[0],
                )
            # The worker pushes a token onto the job's wake-up list when it finishes: block on
            # the oldest pending job, then re-read everything that is still pending.
            woke = self.redis.blpop([keys.done(pending[0])], timeout=min(remaining, _WAKE_SLICE))
            if woke is not None:
                # Hand the token back for any other waiter on the same job.
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(keys.done(pending[0]), "1")
                pipe.expire(keys.done(pending[0]), keys.DONE_TOKEN_TTL)
                pipe.execute()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job: True if it will not run, False if it already started or ended."""
        now = time.time()
        before = self._cancel(
            keys=[keys.job(job_id), keys.done(job_id), records.stats_key(now)],
            args=[f"{now:.6f}", keys.DONE_TOKEN_TTL, keys.STATS_TTL],
        )
        if before is None:
            raise self._not_found(job_id)
        return before in ("queued", "cancelled")
