"""Per-process worker state and the job path: claim a batch, start it, predict, write results."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from producer import TASK_NAME, JobRequest
from producer import records as rec
from registry import InvalidInput, PredictqError, Registry, Settings, WorkerLost, keys
from registry.names import check_name

from . import envelope, ledger
from .batching import Job, run_batch
from .model_cache import ModelCache

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _checked_names(model: str, alias: str) -> None:
    check_name(model)
    check_name(alias, "alias")


def parse_request(kwargs: dict[str, Any]) -> JobRequest:
    """A validated JobRequest, or InvalidInput saying what is wrong with the message."""
    try:
        request = JobRequest.model_validate(kwargs)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise InvalidInput(
            f"malformed job: {where}: {first['msg']} ({e.error_count()} problem(s) in all); "
            f"{TASK_NAME} takes the keyword arguments model, rows, and optionally version, "
            "alias, probabilities, ttl"
        ) from e
    _checked_names(request.model, request.alias)
    return request


class Runtime:
    """What one worker process holds: its Redis client, model cache and ledger scripts."""

    def __init__(self, url: str, settings: Settings, hostname: str | None = None) -> None:
        self.settings = settings
        self.registry = Registry(url, settings=settings)
        self.redis: redis.Redis = self.registry.redis
        self.worker = f"{hostname or socket.gethostname()}:{os.getpid()}"
        self.cache = ModelCache(self.registry, self.worker, settings.model_cache_size)
        self._claim = self.redis.register_script(ledger.CLAIM)
        self._start = self.redis.register_script(ledger.START)
        self._finish = self.redis.register_script(ledger.FINISH)

    def rename(self, hostname: str) -> None:
        """Name results after the Celery node and this (possibly forked) process."""
        self.worker = f"{hostname}:{os.getpid()}"
        self.cache.worker = self.worker

    @property
    def landing(self) -> str:
        """This process's claim list."""
        return keys.claiming(self.worker)

    # -- claiming and starting -------------------------------------------------------------

    def claim(
        self, limit: int, block: float, queue: str | None = None, *, fresh: bool = True
    ) -> list[Job]:
        """Up to ``limit`` jobs from the queue, waiting up to ``block`` seconds for the first.

        Messages move atomically from the queue onto this process's claim list, where they
        stay until ``finish`` has written their results. ``fresh`` starts a batch; a claim that
        tops up the batch in hand passes False.
        """
        queue = queue or self.settings.queue
        if block > 0:
            # Redis takes fractional seconds here; redis-py's annotation says int.
            timeout: Any = block
            if self.redis.blmove(queue, self.landing, timeout, "RIGHT", "LEFT") is None:
                return []
        raws = self._claim(keys=[queue, self.landing], args=[limit, int(fresh)])
        started = self.start([self._parse(raw) for raw in raws])
        if raws and not started and fresh:
            self.finish([], self.landing)  # only duplicates or dead letters: clear the list
        return started

    def _parse(self, raw: str) -> Job | None:
        """The job a raw message asks for (failed if it is bad), or None if it has no ID."""
        try:
            # Refused unread: base64 makes an accepted job's message at most 4/3 its size.
            if len(raw) > 2 * self.settings.max_job_bytes:
                raise InvalidInput(
                    f"message of {len(raw)} bytes is over the limit (PREDICTQ_MAX_JOB_BYTES)"
                )
            message = envelope.parse(raw)
        except InvalidInput as e:
            job_id = envelope.job_id_of(envelope.loads_or_none(raw))
            self.dead_letter(job_id, raw, e)
            if job_id is None:
                return None
            job = Job(job_id, None, raw=raw)
            job.fail(e)
            return job
        return self.job(message.job_id, message.kwargs, raw, has_record=message.has_record)

    @staticmethod
    def job(job_id: str, kwargs: dict[str, Any], raw: str, *, has_record: bool = False) -> Job:
        """The job a message's keyword arguments ask for; failed already if they are bad."""
        job = Job(job_id, None, raw=raw, has_record=has_record)
        try:
            job.request = parse_request(kwargs)
        except InvalidInput as e:
            job.model = str(kwargs.get("model", ""))[:128]
            job.fail(e)
        return job

    def start(self, parsed: list[Job | None]) -> list[Job]:
        """Mark jobs running in one round trip; drops those that had already ended."""
        jobs = [j for j in parsed if j is not None]
        if not jobs:
            return []
        now = time.time()
        argv: list[Any] = [f"{now:.6f}", self.worker, now + self.settings.visibility_timeout,
                           self.settings.result_ttl, ledger.JOB_PREFIX,
                           now + self.settings.time_limit]  # fmt: skip
        for job in jobs:
            r = job.request
            argv += [
                job.id,
                r.model if r else job.model,
                r.alias if r else "",
                "" if r is None or r.version is None else r.version,
                "1" if r and r.probabilities else "0",
                r.ttl if r and r.ttl else "",
                "" if job.has_record else job.raw,
            ]
        flat = self._start(keys=[keys.INFLIGHT, keys.QUEUED, keys.busy(self.worker)], args=argv)
        started = []
        for i, job in enumerate(jobs):
            status, attempts, alias_version = flat[3 * i : 3 * i + 3]
            if status in ("succeeded", "failed", "cancelled"):
                log.info("job %s is already %s: skipped", job.id, status)
                continue
            job.attempts = int(attempts)
            job.alias_version = int(alias_version) if alias_version else None
            if job.attempts > self.settings.max_attempts and job.request is not None:
                # Redelivered by Celery after crashes (PREDICTQ_BATCHING=false): the sweeper's
                # containment does not see those, so the attempt count is enforced here too.
                job.request = None
                job.fail(WorkerLost(
                    f"the job was delivered {job.attempts} times, more than "
                    f"PREDICTQ_MAX_ATTEMPTS ({self.settings.max_attempts}): it kept crashing "
                    "or stalling its worker; fix the input or the model and resubmit"
                ))  # fmt: skip
            started.append(job)
        return started

    # -- running and finishing -------------------------------------------------------------

    def run(self, jobs: list[Job], landing: str | None = None) -> None:
        """Predict ``jobs`` in batches and write every outcome in one round trip."""
        run_batch(jobs, self.cache, max_rows=self.settings.max_rows,
                  batch_rows=self.settings.batch_max_rows)  # fmt: skip
        self.finish(jobs, landing or self.landing)

    def finish(self, jobs: list[Job], landing: str) -> int:
        """Write final records once each and clear ``landing``; returns how many were written."""
        now = time.time()
        argv: list[Any] = [f"{now:.6f}", self.settings.result_ttl, keys.REPLY_TTL,
                           keys.STATS_TTL, ledger.JOB_PREFIX, ledger.DONE_PREFIX,
                           keys.REPLY_LIMIT]  # fmt: skip
        for job in jobs:
            argv += [job.id, job.status, "" if job.version is None else job.version,
                     job.predictions, job.proba,
                     orjson.dumps(job.error.to_dict()) if job.error else ""]  # fmt: skip
        finish_keys = [keys.INFLIGHT, rec.stats_key(now), landing, keys.busy(self.worker)]
        written = sum(self._finish(keys=finish_keys, args=argv))
        if written < len(jobs):
            log.warning("%d job(s) had already ended: results not overwritten",
                        len(jobs) - written)  # fmt: skip
        return int(written)

    def dead_letter_landing(self, reason: str) -> None:
        """Dead-letter every message on this process's claim list and clear it."""
        for raw in self.redis.lrange(self.landing, 0, -1):
            job_id = envelope.job_id_of(envelope.loads_or_none(str(raw)))
            self.dead_letter(job_id, str(raw), PredictqError(reason))
        self.redis.delete(self.landing)

    def dead_letter(self, job_id: str | None, raw: str, error: PredictqError) -> None:
        """Keep a message that cannot run where `predictq dead` can show it (bounded)."""
        log.error("dead-lettered message %s: %s", job_id or "(no id)", error.message)
        entry = {"id": job_id, "error": error.to_dict(), "at": time.time(), "message": raw[:65536]}
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.DEAD, orjson.dumps(entry))
        pipe.ltrim(keys.DEAD, 0, keys.DEAD_LIMIT - 1)
        pipe.execute()
