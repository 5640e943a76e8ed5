"""The Python client: submit jobs, poll or wait for their results, cancel them."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import redis

from registry import (
    DEFAULT_ALIAS,
    InvalidInput,
    JobNotFound,
    JobTimeout,
    ModelVersion,
    NotReplicated,
    RedisUnavailable,
    Registry,
    Settings,
    get_settings,
    keys,
)
from registry.connection import connect, explain, redact, resolve_url
from registry.errors import PredictqError, error_for
from registry.names import check_name
from registry.validation import check_probabilities, validate_rows

from . import admission, records
from .contract import FINAL_STATUSES, MAX_TTL, JobResult
from .messages import batch_message, task_message

if TYPE_CHECKING:
    from .score import ScoreProgress, ScoreSummary

# Jobs per SUBMIT script call: large enough to amortise the round trip, small enough that one
# call does not block Redis for long.
SUBMIT_CHUNK = 1024
# Jobs per batch message: one message, one queue element and one parse in the worker serve
# this many jobs; small enough that several pool processes share a bulk submission.
_BATCH_JOBS = 128
# Longest single block on a wake-up list: bounds how stale a missed wake-up can leave a waiter.
_WAKE_SLICE = 1.0
_POLL_EVERY = 5.0
# Pause between attempts to reach a Redis that went away during a wait.
_RECONNECT_PAUSE = 0.1
# How long a bulk wait's reply list must stay quiet before the first poll of the records.
_FIRST_POLL = 0.05
# Waits on at most this many jobs subscribe to their channels; more wait on the reply list.
_SUBSCRIBE_AT_MOST = 64
_DONE_PREFIX = keys.done("")
JOB_PREFIX = keys.job("")
_ANNOUNCED_AT_MOST = 4096
# IDs taken off the reply list, and records read, per round trip.
_DRAIN = 10_000
_READ_CHUNK = 5_000


def _plain_rows(rows: Any, named: bool) -> Any:
    """numpy arrays and pandas frames as plain lists (rows) or records (for a model fitted on
    named columns, which are then matched by name)."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return rows.to_dict("records") if named else rows.to_numpy().tolist()
    return rows.tolist() if hasattr(rows, "tolist") else rows


def _error_of(result: JobResult) -> PredictqError:
    """The error a failed (or cancelled) job's record holds, raised as its own class."""
    if result.error is None:
        return PredictqError(f"job {result.id} ended {result.status}", job_id=result.id)
    return error_for(result.error.code, f"job {result.id}: {result.error.message}",
                     model=result.model, version=result.version, job_id=result.id)  # fmt: skip


class _Unreplicated(Exception):
    """SUBMIT wrote its jobs, but WAIT saw only ``acked`` replicas confirm them; or, with
    ``dropped``, the connection was lost after the script was sent, so whether the jobs were
    written is unknown."""

    def __init__(self, acked: int, *, dropped: bool = False) -> None:
        super().__init__(acked)
        self.acked = acked
        self.dropped = dropped


# A write that changes nothing: a job's TTL set again to what it is (see _confirm_existing).
_TOUCH = "local t = redis.call('PTTL', KEYS[1]) if t > 0 then redis.call('PEXPIRE', KEYS[1], t) end"


def _new_ids(n: int) -> list[str]:
    """``n`` random 128-bit job IDs in hex, like ``uuid4().hex``, at a fraction of its cost."""
    pool = os.urandom(16 * n).hex()
    return [pool[i : i + 32] for i in range(0, 32 * n, 32)]


class Client:
    """A producer: enqueues prediction jobs and reads their results.

    ``url`` is a Redis URL (``redis://:password@host:6379/0``, ``rediss://...``, or
    ``redis+sentinel://host:26379,host2:26379/mymaster/0`` for Sentinel); without it,
    ``PREDICTQ_REDIS_URL`` or else the embedded local Redis is used.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.url = resolve_url(url, self.settings)
        self.redis: redis.Redis = connect(self.url)
        self.registry = Registry(self.url, settings=self.settings)
        self._submit = self.redis.register_script(records.SUBMIT)
        self._cancel = self.redis.register_script(records.CANCEL)
        self._read = self.redis.register_script(records.FETCH)
        self._status = self.redis.register_script(records.STATUS)
        self._memory = admission.MemoryGauge(self.redis, self.settings.memory_high_water)
        # Finished jobs this client submitted are announced here (see wait_many).
        self._reply = keys.reply(uuid.uuid4().hex)
        self._pubsub: redis.client.PubSub | None = None
        self._pubsub_lock = threading.Lock()
        self._versions: dict[tuple[str, int], tuple[ModelVersion, float]] = {}
        # Jobs this client submitted alone, and when: wait() on them pops their wake-up list.
        self._announced: OrderedDict[str, float] = OrderedDict()
        self._announced_lock = threading.Lock()
        self._aliases: dict[tuple[str, str], tuple[int, float]] = {}

    @property
    def memory(self) -> admission.MemoryGauge:
        """Redis's memory against PREDICTQ_MEMORY_HIGH_WATER, as submissions check it."""
        return self._memory

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting ------------------------------------------------------------------------

    def target(self, model: str, version: int | None, alias: str) -> ModelVersion:
        """The version a job would run on now; lookups are cached briefly.

        A version's metadata is cached no longer than an alias (PREDICTQ_ALIAS_CACHE_SECONDS):
        a version archived or deleted since is refused once that has passed.
        """
        now = time.monotonic()
        if version is None:
            cached = self._aliases.get((model, alias))
            if cached is None or cached[1] < now:
                resolved = self.registry.resolve(model, alias)
                cached = (resolved, now + self.settings.alias_cache_seconds)
                self._aliases[(model, alias)] = cached
            version = cached[0]
        found = self._versions.get((model, version))
        if found is None or found[1] < now:
            meta = self.registry.servable(model, version)
            found = self._versions[(model, version)] = (
                meta,
                now + self.settings.alias_cache_seconds,
            )
        return found[0]

    def cached_target(self, model: str, version: int | None, alias: str) -> ModelVersion | None:
        """What ``target`` would answer, when it would not read Redis to answer; else None."""
        now = time.monotonic()
        if version is None:
            cached = self._aliases.get((model, alias))
            if cached is None or cached[1] < now:
                return None
            version = cached[0]
        found = self._versions.get((model, version))
        return None if found is None or found[1] < now else found[0]

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
        # It announces its end on its own list, so that a wait() right after is one blocking
        # pop (see wait).
        return self._submit_many(
            model, [rows], version=version, alias=alias, job_ids=ids,
            probabilities=probabilities, ttl=ttl, announce=True,
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
        enqueued. Past PREDICTQ_MAX_QUEUED or the memory high-water mark, Overloaded refuses the
        whole submission and nothing is enqueued. If Redis runs out of memory part-way (its OOM
        reply to a later chunk), the jobs already enqueued are cancelled, as ``cancel`` does,
        before Overloaded is raised; any of them a worker already started runs to its end.
        """
        return self._submit_many(
            model, jobs, version=version, alias=alias, job_ids=job_ids,
            probabilities=probabilities, ttl=ttl, announce=False,
        )  # fmt: skip

    def _submit_many(
        self,
        model: str,
        jobs: Sequence[Any],
        *,
        version: int | None,
        alias: str,
        job_ids: Sequence[str] | None,
        probabilities: bool,
        ttl: int | None,
        announce: bool,
    ) -> list[str]:
        check_name(model)
        check_name(alias, "alias")
        meta = self.target(model, version, alias)
        ids, rows_json, shared = self.prepare(
            meta, model, jobs, version=version, alias=alias, job_ids=job_ids,
            probabilities=probabilities, ttl=ttl,
        )  # fmt: skip
        # Only bulk submissions get reply-list announcements: few jobs are waited on through
        # their own channels (see wait_many), so nothing piles up for fire-and-forget callers.
        reply = self._reply if len(ids) > _SUBSCRIBE_AT_MOST else ""
        if announce:
            reply = "*"  # each job's own wake-up list
        return self.enqueue(ids, rows_json, shared, reply, chosen=job_ids is not None)

    def prepare(
        self,
        meta: ModelVersion,
        model: str,
        jobs: Sequence[Any],
        *,
        version: int | None,
        alias: str,
        job_ids: Sequence[str] | None,
        probabilities: bool,
        ttl: int | None,
    ) -> tuple[list[str], list[bytes], dict[str, Any]]:
        """Check a submission for ``meta`` without touching Redis: the job IDs, each job's
        rows as JSON, and what its jobs share; InvalidInput, naming the job, for any bad one.
        ``model`` and ``alias`` were checked as names (``target`` found them)."""
        if job_ids is not None and len(job_ids) != len(jobs):
            raise InvalidInput(f"got {len(job_ids)} job IDs for {len(jobs)} jobs: give one each")
        if ttl is not None and not (isinstance(ttl, int) and 0 < ttl <= MAX_TTL):
            raise InvalidInput(
                f"ttl must be a whole number of seconds from 1 to {MAX_TTL}, got {ttl!r}"
            )
        if probabilities:
            check_probabilities(meta)
        ttl = ttl or self.settings.result_ttl
        ids = [str(j) for j in job_ids] if job_ids is not None else _new_ids(len(jobs))
        named = meta.signature.input_schema.named
        rows_json: list[bytes] = []
        for i, (job_id, rows) in enumerate(zip(ids, jobs, strict=True)):
            if not job_id or len(job_id) > 200:
                raise InvalidInput(f"job ID {job_id!r} must be 1-200 characters")
            try:
                plain = validate_rows(
                    _plain_rows(rows, named), meta.signature, max_rows=self.settings.max_rows
                )
            except InvalidInput as e:
                prefix = f"job {i}: " if len(jobs) > 1 else ""
                raise InvalidInput(
                    f"{prefix}{e.message} ({model} v{meta.version})",
                    model=model, version=meta.version, job_id=job_id,
                ) from e  # fmt: skip
            # Encoded once here: batch messages are put together from these.
            try:
                encoded = orjson.dumps(plain)
            except orjson.JSONEncodeError as e:  # an integer past 64 bits in a numeric row
                raise InvalidInput(
                    f"job {i}: its rows cannot be sent as JSON ({e}): send numbers that fit "
                    "in 64 bits, and text as valid Unicode",
                    model=model, job_id=job_id,
                ) from e  # fmt: skip
            if len(encoded) > self.settings.max_job_bytes:
                raise InvalidInput(
                    f"job {i} encodes to {len(encoded)} bytes, over the limit of "
                    f"{self.settings.max_job_bytes} (PREDICTQ_MAX_JOB_BYTES): send fewer rows "
                    "per job",
                    model=model, job_id=job_id,
                )  # fmt: skip
            rows_json.append(encoded)
        # The keyword arguments of JobRequest, built directly: every field was checked above,
        # and a pydantic round trip per job would cost more than the rest of a submit.
        shared = {"model": model, "version": version, "alias": alias,
                  "probabilities": probabilities, "ttl": ttl}  # fmt: skip
        return ids, rows_json, shared

    def enqueue(
        self,
        ids: list[str],
        rows_json: list[bytes],
        shared: dict[str, Any],
        reply: str,
        *,
        chosen: bool,
    ) -> list[str]:
        """Write prepared jobs (see ``prepare``) in chunks; their end is told on ``reply``."""
        self._memory.check()
        # Jobs not yet admitted against PREDICTQ_MAX_QUEUED: the first call that writes admits
        # the whole submission (less IDs that exist), and later chunks are not counted again.
        admit = len(ids)
        written: list[str] = []
        for start in range(0, len(ids), SUBMIT_CHUNK):
            chunk = list(range(start, min(start + SUBMIT_CHUNK, len(ids))))
            while chunk:
                try:
                    taken = self._enqueue(shared, chunk, ids, rows_json, reply, chosen, admit)
                except _Unreplicated as e:
                    written += [ids[i] for i in chunk]
                    raise self._not_replicated(e, written, ids) from None
                except redis.ResponseError as e:
                    if not admission.is_oom(e):
                        raise
                    # Redis filled up after earlier chunks went in: take them back out.
                    self.cancel_many(written)
                    raise admission.out_of_memory(len(written)) from e
                admit = admit - len(taken) if taken else 0
                if not taken:
                    written += [ids[i] for i in chunk]
                # Jobs whose ID exists were left alone; the others go again without them.
                chunk = [i for i in chunk if i not in taken] if taken else []
                if reply == "*" and not taken:
                    with self._announced_lock:
                        self._announced[ids[0]] = time.monotonic()
                        if len(self._announced) > _ANNOUNCED_AT_MOST:
                            self._announced.popitem(last=False)
        return ids

    def _enqueue(
        self,
        shared: dict[str, Any],
        chunk: list[int],
        ids: list[str],
        rows_json: list[bytes],
        reply: str,
        check: bool,
        admit: int,
    ) -> set[int]:
        """Write the records and push the messages of jobs ``chunk``, in one round trip.

        A job sent alone gets its own ``predictq.predict`` message, which its record keeps for
        recovery; jobs sent together share ``predictq.predict_batch`` messages of up to
        ``_BATCH_JOBS`` jobs (recovery splits a batch message from a claim list). Returns the
        jobs whose ID was taken (then nothing was written). With ``admit``, Overloaded when
        that many more jobs would pass PREDICTQ_MAX_QUEUED (then nothing was written).
        """
        script_keys, argv = self.submit_args(shared, chunk, ids, rows_json, reply, check, admit)
        flags = self._run_submit(script_keys, argv)
        taken = self.taken(flags, chunk, admit)
        if taken and self.settings.min_replicas:
            self._confirm_existing(ids[min(taken)])
        return taken

    def taken(self, flags: Any, chunk: list[int], admit: int) -> set[int]:
        """The jobs of ``chunk`` whose ID existed, from SUBMIT's answer; Overloaded when it
        refused them all (PREDICTQ_MAX_QUEUED)."""
        if isinstance(flags, int):
            raise admission.queue_full(flags, admit, self.settings.max_queued)
        return {i for i, flag in zip(chunk, flags, strict=True) if not flag}

    def submit_args(
        self,
        shared: dict[str, Any],
        chunk: list[int],
        ids: list[str],
        rows_json: list[bytes],
        reply: str,
        check: bool,
        admit: int,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the SUBMIT script for jobs ``chunk`` (see _enqueue)."""
        queue = self.settings.queue
        per_job: list[str | bytes] = []
        messages: list[str] = []
        if len(ids) == 1:
            message = task_message(ids[0], {**shared, "rows": orjson.loads(rows_json[0])}, queue,
                                   celery=self.settings.celery_results)  # fmt: skip
            messages.append(message)
            per_job += [ids[0], message]
        else:
            group: list[int] = []
            size = 0
            limit = self.settings.max_job_bytes
            for i in chunk:
                full = len(group) >= _BATCH_JOBS or size + len(rows_json[i]) > limit
                if group and full:
                    messages.append(self._batch(shared, group, ids, rows_json))
                    group, size = [], 0
                group.append(i)
                size += len(rows_json[i])
                per_job += [ids[i], ""]
            messages.append(self._batch(shared, group, ids, rows_json))
        pinned = shared["version"]
        argv: list[Any] = [
            f"{time.time():.6f}", reply, "1" if check else "0", JOB_PREFIX, shared["model"],
            shared["alias"], "" if pinned is None else pinned,
            "1" if shared["probabilities"] else "0", shared["ttl"], keys.result(""),
            self.settings.max_queued, admit, len(messages), *messages,
            "1" if self.settings.celery_results else "", *per_job,
        ]  # fmt: skip
        return [queue, keys.queued(queue)], argv

    def _confirm_existing(self, job_id: str) -> None:
        """With PREDICTQ_MIN_REPLICAS, wait until the replicas have the jobs whose IDs existed
        (a resubmission after NotReplicated, say): returning their IDs acknowledges them too.

        WAIT counts only this connection's writes, so one is made: one of the jobs' TTL set
        to what it is. The replication stream is ordered, so a replica past that write has
        every job written before it. _Unreplicated when too few confirm in time.
        """
        need = self.settings.min_replicas
        pipe = self.redis.pipeline(transaction=False)
        pipe.connection = self._connection()
        pipe.eval(_TOUCH, 1, f"{JOB_PREFIX}{job_id}")
        pipe.wait(need, max(1, round(self.settings.min_replicas_timeout * 1000)))
        try:
            _, acked = pipe.execute(raise_on_error=False)
        except RedisUnavailable as e:
            raise _Unreplicated(0) from e
        if isinstance(acked, Exception) or int(acked) < need:
            raise _Unreplicated(0 if isinstance(acked, Exception) else int(acked))

    def _run_submit(self, script_keys: list[str], argv: list[Any]) -> Any:
        """Run the SUBMIT script; with PREDICTQ_MIN_REPLICAS, WAIT for that many replicas in
        the same round trip and connection (WAIT counts this connection's writes), raising
        NotReplicated, after the jobs were written, when too few confirm in time."""
        need = self.settings.min_replicas
        if not need:
            return self._submit(keys=script_keys, args=argv)
        timeout_ms = max(1, round(self.settings.min_replicas_timeout * 1000))
        for _ in range(2):
            pipe = self.redis.pipeline(transaction=False)
            # Connected first, so that a Redis that cannot be reached (nothing was sent) stays
            # RedisUnavailable, while a connection that drops once the script went out (a
            # failover's CLIENT KILL during WAIT) leaves the jobs' fate unknown: NotReplicated,
            # which carries their IDs, so that they are resubmitted or cancelled, never
            # submitted again under new IDs.
            pipe.connection = self._connection()
            pipe.evalsha(self._submit.sha, len(script_keys), *script_keys, *argv)
            pipe.wait(need, timeout_ms)
            try:
                flags, acked = pipe.execute(raise_on_error=False)
            except RedisUnavailable as e:
                if "now a slave" in str(e.__cause__):  # READONLY: the script wrote nothing
                    raise
                raise _Unreplicated(0, dropped=True) from e
            if isinstance(flags, redis.exceptions.NoScriptError):
                # A restarted or failed-over Redis forgot the script: nothing ran; load it.
                self.redis.script_load(records.SUBMIT)
                continue
            if isinstance(flags, Exception):
                # OOM passes as it is (the caller's to handle); READONLY becomes one line.
                said = (
                    explain(flags, redact(self.url))
                    if isinstance(flags, redis.RedisError)
                    else None
                )
                raise said or flags
            if isinstance(acked, Exception):
                # The jobs were written, and WAIT was cut short: the primary turning replica
                # unblocks it with an UNBLOCKED error. Nothing confirmed them.
                acked = 0
            # Any flag 0: an ID was taken and nothing was written, so nothing to confirm.
            if not isinstance(flags, int) and all(flags) and int(acked) < need:
                raise _Unreplicated(int(acked))
            return flags
        raise RedisUnavailable(f"Redis at {redact(self.url)} keeps forgetting scripts")

    def _connection(self) -> Any:
        """A pooled connection, connected (to the master the sentinels name now, for a
        Sentinel URL); RedisUnavailable when none can be made. The pipeline given it hands it
        back to the pool."""
        following = getattr(self.redis, "following", None)
        if following is not None:
            following.check()
        try:
            return self.redis.connection_pool.get_connection()
        except redis.RedisError as e:
            raise (explain(e, redact(self.url)) or e) from e

    def _batch(
        self, shared: dict[str, Any], group: list[int], ids: list[str], rows_json: list[bytes]
    ) -> str:
        return batch_message(
            shared, [ids[i] for i in group], [rows_json[i] for i in group], self.settings.queue,
            celery=self.settings.celery_results,
        )  # fmt: skip

    def _not_replicated(
        self, e: _Unreplicated, written: list[str], ids: list[str]
    ) -> NotReplicated:
        s = self.settings
        if e.dropped:
            enqueued = (
                "the connection to Redis dropped before it confirmed the job (a failover?): "
                "the job may have been enqueued" if len(ids) == 1
                else "the connection to Redis dropped before it confirmed the jobs (a "
                f"failover?): up to {len(written)} of {len(ids)} jobs may have been enqueued"
            )  # fmt: skip
            why = "no replica confirmed it"
        else:
            enqueued = (
                "the job was enqueued" if len(ids) == 1
                else f"{len(written)} of {len(ids)} jobs were enqueued (the rest were not)"
            )  # fmt: skip
            why = (
                f"only {e.acked} of PREDICTQ_MIN_REPLICAS={s.min_replicas} replica(s) "
                f"confirmed within {s.min_replicas_timeout:g}s (a replica down or lagging?)"
            )
        return NotReplicated(
            f"{enqueued}, but {why}: it may still run, or be lost if the primary fails now; "
            "submit again with the same job IDs (an ID that exists is not enqueued twice), or "
            "read its result",
            job_ids=ids,
            enqueued=len(written),
        )

    # -- reading ---------------------------------------------------------------------------

    def _fetch(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        flat = self._read(args=[JOB_PREFIX, *job_ids])
        return [
            records.parse_record(job_id, values)
            for job_id, values in zip(job_ids, flat, strict=True)
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
        """Block until the job is final and return it; JobTimeout when ``timeout`` passes.

        A job with no record yet (a stock Celery client's, whose record appears when a worker
        takes it) is waited for too, within the same ``timeout``: JobNotFound only if its record
        never appeared by then. ``result`` stays strict.
        """
        with self._announced_lock:
            submitted = self._announced.pop(job_id, None)
        if submitted is None or time.monotonic() - submitted > keys.RESULT_TRUST:
            return self.wait_many([job_id], timeout=timeout)[0]
        # This client submitted the job alone a moment ago: its result is pushed onto the job's
        # own list, so one blocking pop waits for it and reads it. A read after each quiet slice
        # covers a push that another waiter of the same job took.
        deadline = time.monotonic() + timeout
        wake = keys.result(job_id)
        while (remaining := deadline - time.monotonic()) > 0:
            woke = self.redis.blpop([wake], timeout=min(remaining, _WAKE_SLICE))
            told = records.parse_told(str(woke[1])) if woke is not None else None
            found = told or self.result(job_id)
            if found.done:
                return found
        raise JobTimeout(
            f"job {job_id} was not final after {timeout}s; wait longer, or check "
            "`predictq status` for workers",
            job_id=job_id,
        )

    def predict(
        self,
        model: str,
        frame: Any,
        *,
        version: int | None = None,
        alias: str = DEFAULT_ALIAS,
        probabilities: bool = False,
        rows_per_job: int = 1000,
        timeout: float = 60.0,
    ) -> Any:
        """Score a pandas DataFrame through the queue; a DataFrame of results on its index.

        Its columns are ``prediction`` (``prediction_0``, ... for a multi-output model) and,
        with ``probabilities``, one ``proba_<class>`` column per class. Rows go out as jobs of
        ``rows_per_job``; the first job that fails raises its error, as ``predict()`` would.
        """
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise InvalidInput(f"predict takes a pandas DataFrame, got {type(frame).__name__}")
        if rows_per_job < 1:
            raise InvalidInput("rows_per_job must be at least 1")
        chunks = [frame.iloc[i : i + rows_per_job] for i in range(0, len(frame), rows_per_job)]
        ids = self.submit_many(model, chunks, version=version, alias=alias,
                               probabilities=probabilities)  # fmt: skip
        predictions: list[Any] = []
        proba: list[Any] = []
        classes: list[Any] | None = None
        for result in self.wait_many(ids, timeout=timeout):
            if result.status != "succeeded":
                raise _error_of(result)
            predictions += result.predictions or []
            proba += result.probabilities or []
            classes = result.classes or classes
        values = np.asarray(predictions, dtype=object)
        if values.ndim == 2:
            out = pd.DataFrame({f"prediction_{i}": values[:, i].tolist()
                                for i in range(values.shape[1])}, index=frame.index)  # fmt: skip
        else:
            out = pd.DataFrame({"prediction": predictions}, index=frame.index)
        if probabilities and classes is not None:
            for i, name in enumerate(classes):
                out[f"proba_{name}"] = [p[i] for p in proba]
        return out

    def score(
        self,
        model: str,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        version: int | None = None,
        alias: str = DEFAULT_ALIAS,
        probabilities: bool = False,
        rows_per_job: int = 1000,
        id_column: str | None = None,
        keep: Sequence[str] = (),
        input_format: str | None = None,
        output_format: str | None = None,
        header: bool | None = None,
        timeout: float = 600.0,
        progress: Callable[[ScoreProgress], None] | None = None,
    ) -> ScoreSummary:
        """Score a CSV, Parquet or JSON Lines file into another, one output row per input row
        in input order, streaming (what ``predictq score`` does; see producer/score.py).

        Formats come from the extensions unless given. ``id_column`` and ``keep`` columns are
        copied through; the output adds ``prediction`` (``prediction_0``, ...), ``proba_<class>``
        with ``probabilities``, ``version`` and ``error`` (empty for a good row). Running the
        same call again after a crash submits only the jobs that have no record. ``header``
        says whether a CSV starts with column names (None: detect). ``timeout`` bounds the wait
        for one block's jobs. Returns a summary whose ``failed_rows`` names failed rows.
        """
        from .score import score_file

        return score_file(
            self, model, Path(input), Path(output), version=version, alias=alias,
            probabilities=probabilities, rows_per_job=rows_per_job, id_column=id_column,
            keep=keep, input_format=input_format, output_format=output_format, header=header,
            timeout=timeout, progress=progress,
        )  # fmt: skip

    def wait_many(self, job_ids: Sequence[str], timeout: float = 60.0) -> list[JobResult]:
        """Block until every job is final; results come back in the order of ``job_ids``.

        Few jobs: subscribe to their wake-up channels, whoever submitted them. Many jobs: the
        ones this client submitted announce themselves on its reply list as they finish, so a
        bulk wait costs a handful of round trips; anything else is caught by a poll.

        A job with no record is waited for like the others (a stock Celery client's job has
        none until a worker takes it): it is read again once a second (few jobs) or every few
        seconds (many), and nothing else. At the deadline, JobNotFound names the first job
        that still has no record, else JobTimeout the first that is not final. A record that
        was read during the wait and is gone at a later read expired: JobNotFound at once.
        """
        deadline = time.monotonic() + timeout
        order = list(dict.fromkeys(job_ids))
        pending = set(order)
        results: dict[str, JobResult] = {}
        # Jobs whose record a read of this wait found: one gone later expired, and cannot
        # come back, so waiting on for it would only spend the timeout.
        seen: set[str] = set()
        polled = time.monotonic()
        # Many jobs: this client's own announce themselves on its reply list, and the first
        # poll for the others waits until that list is quiet for a moment (_FIRST_POLL) rather
        # than reading every record up front. Few jobs are read right after subscribing.
        quiet = _FIRST_POLL
        lost: redis.ConnectionError | None = None
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if lost is not None:
                    raise lost  # Redis, not the jobs, is why nothing came back
                self._raise_if_absent([j for j in order if j in pending], timeout)
                first = next(j for j in order if j in pending)
                raise JobTimeout(
                    f"{len(pending)} of {len(order)} jobs were not final after {timeout}s "
                    f"(first: {first}); wait longer, or check `predictq status` for workers",
                    job_id=first,
                )
            if len(pending) <= _SUBSCRIBE_AT_MOST:
                lost = self._wait_subscribed(pending, min(remaining, _WAKE_SLICE), results, seen)
                if lost is not None:
                    time.sleep(min(remaining, _RECONNECT_PAUSE))
                continue
            woke = self.redis.blpop([self._reply], timeout=min(remaining, quiet))
            if woke is not None:
                self._take_told([woke[1]], pending, results)
                while more := self.redis.lpop(self._reply, _DRAIN):
                    self._take_told(more, pending, results)  # type: ignore[arg-type]
            # Fallback for jobs the reply list does not announce (submitted elsewhere, or
            # announced to another waiter on this client): poll when the list is quiet, and
            # every _POLL_EVERY seconds anyway.
            if woke is None or time.monotonic() - polled > _POLL_EVERY:
                self._drop_final(pending, seen)
                polled = time.monotonic()
                quiet = _WAKE_SLICE
        unread = [j for j in order if j not in results]
        for start in range(0, len(unread), _READ_CHUNK):
            chunk = unread[start : start + _READ_CHUNK]
            for job_id, found in zip(chunk, self._fetch(chunk), strict=True):
                if found is None:
                    raise self._not_found(job_id)
                results[job_id] = found
        return [results[j] for j in job_ids]

    def _statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        """Each job's status, None for a job with no record: a round trip per 5,000 jobs."""
        found: list[str | None] = []
        for start in range(0, len(job_ids), _READ_CHUNK):
            found += self._status(args=[JOB_PREFIX, *job_ids[start : start + _READ_CHUNK]])
        return found

    def _raise_if_absent(self, job_ids: list[str], timeout: float) -> None:
        """JobNotFound for the first of ``job_ids`` that has no record, after a wait."""
        for job_id, status in zip(job_ids, self._statuses(job_ids), strict=True):
            if status is None:
                raise JobNotFound(
                    f"no record of job {job_id!r} after {timeout:g}s: never submitted, "
                    "expired, or no worker took it",
                    job_id=job_id,
                )

    @staticmethod
    def _take_told(
        announced: Sequence[str | bytes], pending: set[str], results: dict[str, JobResult]
    ) -> None:
        """Take results (or bare IDs, to be read later) off this client's reply list."""
        for entry in announced:
            told = records.parse_told(str(entry))
            if told is None:
                pending.discard(str(entry))
            elif told.id in pending:
                pending.discard(told.id)
                results[told.id] = told

    def _wait_subscribed(
        self, pending: set[str], timeout: float, results: dict[str, JobResult], seen: set[str]
    ) -> redis.ConnectionError | None:
        """Subscribe to the wake-up channels of ``pending``, then wait up to ``timeout``;
        the connection error, when Redis went away meanwhile.

        One subscriber connection per client is kept open: opening one per wait would cost
        more than the wait itself. Jobs found final on the first read go into ``results``,
        which saves reading them again.
        """
        channels = [keys.done(j) for j in pending]
        with self._pubsub_lock:
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub = self._pubsub
            try:
                pubsub.subscribe(*channels)
                # Re-read after subscribing: a job that ended in between published to nobody.
                # One with no record yet is read again next round (see wait_many).
                ids = list(pending)
                for job_id, found in zip(ids, self._fetch(ids), strict=True):
                    self._check_seen(job_id, found is not None, seen)
                    if found is not None and found.done:
                        results[job_id] = found
                        pending.discard(job_id)
                deadline = time.monotonic() + timeout
                while pending and (left := deadline - time.monotonic()) > 0:
                    message = pubsub.get_message(timeout=left)
                    if message is not None and message["type"] == "message":
                        pending.discard(message["channel"][len(_DONE_PREFIX) :])
            except redis.ConnectionError as e:
                # Redis went away: drop the subscriber; the caller's next round starts anew,
                # unless waiting cannot help (a wrong password, say).
                pubsub.close()
                self._pubsub = None
                if isinstance(e, RedisUnavailable) and not e.transient:
                    raise
                return e
            finally:
                if self._pubsub is not None:
                    pubsub.unsubscribe(*channels)
        return None

    def _check_seen(self, job_id: str, exists: bool, seen: set[str]) -> None:
        """Note that ``job_id``'s record exists; JobNotFound if it existed and is gone."""
        if exists:
            seen.add(job_id)
        elif job_id in seen:
            raise JobNotFound(
                f"the record of job {job_id!r} expired while it was waited for (its TTL "
                "passed before a worker finished it): raise the job's ttl or PREDICTQ_RESULT_TTL",
                job_id=job_id,
            )

    def _drop_final(self, pending: set[str], seen: set[str]) -> None:
        """Remove finished jobs from ``pending`` (one with no record stays: see wait_many);
        JobNotFound for one whose record ``seen`` holds and that is gone."""
        ids = list(pending)
        for job_id, status in zip(ids, self._statuses(ids), strict=True):
            self._check_seen(job_id, status is not None, seen)
            if status in FINAL_STATUSES:
                pending.discard(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job: True if it will not run, False if it already started or ended."""
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: Sequence[str]) -> list[bool]:
        """Cancel queued jobs, even when Redis is out of memory: for each, True if it will not
        run, False if it already started or ended. One round trip per thousand jobs.

        JobNotFound names the first unknown or expired ID, once the others are cancelled.
        """
        before: list[str | None] = []
        for start in range(0, len(job_ids), SUBMIT_CHUNK):
            now = time.time()
            before += self._cancel(
                keys=[records.stats_key(now), keys.queued(self.settings.queue)],
                args=[f"{now:.6f}", keys.STATS_TTL, JOB_PREFIX, _DONE_PREFIX, keys.REPLY_TTL,
                      *job_ids[start : start + SUBMIT_CHUNK]],
            )  # fmt: skip
        for job_id, status in zip(job_ids, before, strict=True):
            if status is None:
                raise self._not_found(job_id)
        return [status in ("queued", "cancelled") for status in before]
