"""Per-process worker state and the job path: claim a batch, start it, predict, write results."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from producer import BATCH_TASK_NAME, TASK_NAME, JobRequest
from producer import records as rec
from producer.messages import task_message
from registry import InvalidInput, PredictqError, Registry, Settings, WorkerLost, keys
from registry.connection import connect
from registry.names import check_name

from . import envelope, ledger, metrics
from .batching import Job, run_batch
from .events import TaskEvents
from .model_cache import ModelCache
from .watchdog import Watchdog

log = logging.getLogger(__name__)


def _new_token() -> str:
    return os.urandom(8).hex()


def _text(value: Any) -> Any:
    """A reply value from the bytes client (START's, never a queue element) as text."""
    return value.decode() if isinstance(value, bytes) else value


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


@dataclass
class Claim:
    """What one claim took: started jobs, whether they came from the isolation queue (to run
    alone), and whether the queue has more."""

    jobs: list[Job]
    isolated: bool = False
    more: bool = False


class Runtime:
    """What one worker process holds: its Redis clients, model cache and ledger scripts."""

    def __init__(self, url: str, settings: Settings, hostname: str | None = None) -> None:
        self.settings = settings
        self.registry = Registry(url, settings=settings)
        self.redis: redis.Redis = self.registry.redis
        # Queue elements are read as bytes: one that is not UTF-8 must not break the reply it
        # arrives in; ``_texts`` decodes each and dead-letters what does not decode.
        self.raw: redis.Redis = connect(self.registry.url, decode_responses=False)
        self.worker = f"{hostname or socket.gethostname()}:{os.getpid()}"
        self.cache = ModelCache(self.registry, self.worker, settings.model_cache_size)
        self.watchdog: Watchdog | None = None
        # Celery task events of the batch consumer's jobs (None: off, and it costs nothing).
        self.events: TaskEvents | None = None
        # The batch this process holds: its lease token, and how many messages of the claim
        # list are its own (FINISH takes off exactly those).
        self._token = ""
        self._held = 0
        self._claim = self.raw.register_script(ledger.CLAIM)
        self._start = self.redis.register_script(ledger.START)
        self._claim_start = self.raw.register_script(ledger.CLAIM_START)
        self._finish = self.redis.register_script(ledger.FINISH)
        self._finish_celery = self.redis.register_script(ledger.FINISH_CELERY)
        self._dead = self.redis.register_script(ledger.DEAD_LETTER)

    def close(self) -> None:
        """Close this runtime's Redis connections."""
        self.raw.close()
        self.redis.close()

    def rename(self, hostname: str) -> None:
        """Name results after the Celery node and this (possibly forked) process."""
        self.worker = f"{hostname}:{os.getpid()}"
        self.cache.worker = self.worker

    def start_watchdog(self) -> Watchdog:
        """Start this process's time limit and lease keeper (batch consumer processes)."""
        self.watchdog = Watchdog(self.registry.url, self.settings, self.worker)
        self.watchdog.start()
        return self.watchdog

    @property
    def landing(self) -> str:
        """This process's claim list."""
        return keys.claiming(self.worker)

    def _timing(self) -> contextlib.AbstractContextManager[Any]:
        return self.watchdog.timing() if self.watchdog else contextlib.nullcontext()

    def _hold(self, token: str, messages: int, *, fresh: bool) -> None:
        if fresh:
            self._token, self._held = token, messages
        else:
            self._held += messages
        if self.watchdog is not None:
            self.watchdog.hold(self._token)

    def _release(self) -> None:
        self._token, self._held = "", 0
        if self.watchdog is not None:
            self.watchdog.release()

    # -- claiming and starting -------------------------------------------------------------

    def claim(
        self, limit: int, block: float, *, fresh: bool = True, isolate: bool = False, held: int = 0
    ) -> Claim | None:
        """Jobs from the queue, up to ``limit`` rows' worth; None when nothing was queued.

        ``block``: seconds to wait for the first message. ``isolate``: take one message from
        the isolation queue instead, when it has one. Messages move atomically from the queue
        onto this process's claim list, where they stay until ``finish`` has written their
        results. ``fresh`` starts a batch, from whatever the claim list already holds; a claim
        that tops up the batch in hand passes False, and the ``held`` jobs it holds.
        """
        if block > 0:
            # Redis takes fractional seconds here; redis-py's annotation says int.
            timeout: Any = block
            parked: Any = self.raw.blmove(self.settings.queue, self.landing, timeout, "RIGHT",
                                          "LEFT")  # fmt: skip
            claim = None if parked is None else self._after_park(parked, limit)
        else:
            token = _new_token() if fresh else self._token
            args = self._claim_args(limit, fresh, isolate, token, held)
            flat = self._claim(keys=self._claim_keys(), args=args)
            claim = self._claimed(flat, fresh=fresh, token=token)
        if self.events is not None:
            self.events.flush()
        return claim

    def _claim_keys(self) -> list[str]:
        queue = self.settings.queue
        return [queue, self.landing, keys.isolate(queue), keys.busy(self.worker), keys.LEASES]

    def _claim_args(
        self, limit: int, fresh: bool, isolate: bool, token: str, held: int = 0
    ) -> list[Any]:
        return [limit, int(fresh), int(isolate), token, ledger.LEASE_SECONDS, self.worker, held]

    def _claimed(self, flat: list[Any], *, fresh: bool, token: str) -> Claim | None:
        """Parse and start what the CLAIM script returned."""
        isolated, more = flat[0] == b"1", flat[1] == b"1"
        if len(flat) == 2:
            if fresh:
                self._release()  # the script dropped the lease of an empty claim list
            return None
        raws = self._texts(flat[2:])
        self._hold(token, len(raws), fresh=fresh)
        started = self.start([job for raw in raws for job in self._parse(raw)])
        if self.events is not None:
            self.events.started(started)
        if not started and fresh:
            self.finish([])  # only duplicates or dead letters: clear them off the list
        return Claim(started, isolated=isolated, more=more)

    def _texts(self, raws: list[bytes]) -> list[str]:
        """Claimed messages as text. One that is not UTF-8 cannot be a JSON message: it leaves
        the claim list for the dead letters. (Decoding here costs far less than checking every
        byte in the claim script, on the path every job takes.)"""
        texts = []
        for raw in raws:
            try:
                texts.append(raw.decode())
            except UnicodeDecodeError:
                element: Any = raw  # redis-py's annotation says str; it sends bytes as they are
                self.raw.lrem(self.landing, 1, element)
                excerpt = raw[: ledger.DEAD_EXCERPT].decode(errors="replace")
                self.dead_letter(None, excerpt, InvalidInput(ledger.NOT_TEXT))
        return texts

    def _after_park(self, parked: bytes, limit: int) -> Claim | None:
        """Start the message a blocking LMOVE parked on the claim list, and take more, in one
        round trip; when the list holds anything else, claim the whole list instead."""
        try:
            text = parked.decode()
        except UnicodeDecodeError:
            return self.claim(limit, 0)  # a fresh claim reads it again, and refuses it
        first = self._parse(text)
        token = _new_token()
        argv = self._start_argv(first, index=False)
        queue = self.settings.queue
        flat = self._claim_start(
            keys=[queue, self.landing, keys.isolate(queue), keys.INFLIGHT, keys.queued(queue),
                  keys.busy(self.worker), keys.LEASES, keys.RUNNING],
            args=[limit, len(first), token, ledger.LEASE_SECONDS, self.worker, *argv],
        )  # fmt: skip
        if flat[0] == b"stale":
            return self.claim(limit, 0)
        taken = int(flat[1])
        raws = self._texts(flat[2 : 2 + taken])
        self._hold(token, 1 + len(raws), fresh=True)
        started = self._started(first, [_text(v) for v in flat[2 + taken :]], argv[0])
        more = [job for raw in raws for job in self._parse(raw)]
        started += self.start(more)
        if self.events is not None:
            self.events.started(started)
        if not started:
            self.finish([])  # only duplicates or dead letters: clear them off the list
        # The isolation queue is looked at by the next, non-blocking claim: ``more`` says so.
        return Claim(started, more=flat[0] == b"1")

    def _parse(self, raw: str) -> list[Job]:
        """The jobs a raw message asks for (failed if it is bad); none if it names no job."""
        try:
            return self._jobs_of(raw)
        except Exception as e:
            error = e if isinstance(e, InvalidInput) else InvalidInput(
                f"message could not be read ({type(e).__name__}: {e})"
            )  # fmt: skip
        decoded = envelope.loads_or_none(raw)
        job_id = envelope.job_id_of(decoded)
        self.dead_letter(job_id, raw, error)
        if envelope.task_of(decoded) == BATCH_TASK_NAME:
            # A batch message's task ID is not a job's: each job it names fails on its own
            # record (a stock client's jobs have none yet), rather than vanish with it.
            return [self._failed(i, raw, error) for i in envelope.batch_ids(raw)]
        if job_id is None:
            return []
        job = Job(job_id, None, raw=raw)
        job.fail(error)
        return [job]

    def _failed(self, job_id: str, raw: str, error: InvalidInput) -> Job:
        """A job of an unreadable batch message, failed; its record's payload is a message
        of its own (without rows) should recovery ever hand it back."""
        job = Job(job_id, None, raw=task_message(job_id, {"rows": []}, self.settings.queue))
        job.fail(error)
        return job

    def _jobs_of(self, raw: str) -> list[Job]:
        # Refused unread: base64 makes an accepted message at most 4/3 its content's size.
        if len(raw) > 2 * self.settings.max_job_bytes:
            raise InvalidInput(
                f"message of {len(raw)} bytes is over the limit (PREDICTQ_MAX_JOB_BYTES)"
            )
        message = envelope.parse(raw)
        if message.jobs is None:
            return [self.job(message.job_id, message.kwargs, raw, has_record=message.has_record,
                             celery=message.celery)]  # fmt: skip
        return self.batch(message)

    @staticmethod
    def job(
        job_id: str, kwargs: dict[str, Any], raw: str, *, has_record: bool = False,
        celery: bool = False,
    ) -> Job:  # fmt: skip
        """The job a message's keyword arguments ask for; failed already if they are bad."""
        job = Job(job_id, None, raw=raw, has_record=has_record, celery=celery)
        try:
            job.request = parse_request(kwargs)
        except InvalidInput as e:
            job.model = str(kwargs.get("model", ""))[:128]
            job.fail(e)
        return job

    def batch(self, message: envelope.TaskMessage) -> list[Job]:
        """The jobs of a batch message: what they share is validated once, not once per job."""
        shared = message.kwargs
        request: JobRequest | None = None
        error: InvalidInput | None = None
        try:
            request = parse_request({**shared, "rows": []})
        except InvalidInput as e:
            error = e
        jobs = []
        for job_id, rows in message.jobs or ():
            # A job whose record was not written at submission (a stock client's batch) gets
            # its own message as its record's payload, for recovery.
            failed = error
            try:
                raw = "" if message.has_record else task_message(
                    job_id, {**shared, "rows": rows}, self.settings.queue, record=False
                )  # fmt: skip
            except (orjson.JSONEncodeError, TypeError, ValueError) as e:  # rows nested too deep
                raw = task_message(job_id, {**shared, "rows": []}, self.settings.queue,
                                   record=False)  # fmt: skip
                failed = InvalidInput(f"this job's rows cannot be read ({e})")
            # The rows are validated against the model's schema when the batch runs.
            job = Job(job_id, request, raw=raw, has_record=message.has_record, given=rows,
                      celery=message.celery)  # fmt: skip
            if request is None or failed is not None:
                job.model = str(shared.get("model", ""))[:128]
                job.request = None
                job.fail(failed or InvalidInput("malformed batch message"))
            jobs.append(job)
        return jobs

    def start(self, parsed: Sequence[Job | None], *, index: bool = False) -> list[Job]:
        """Mark jobs running in one round trip; drops those that had already ended.

        ``index``: list them in the in-flight index, for jobs that no claim list tracks.
        """
        jobs = [j for j in parsed if j is not None]
        if not jobs:
            return []
        argv = self._start_argv(jobs, index=index)
        flat = self._start(keys=[keys.INFLIGHT, keys.queued(self.settings.queue), keys.RUNNING],
                           args=argv)  # fmt: skip
        return self._started(jobs, flat, argv[0])

    def _start_argv(self, jobs: list[Job], *, index: bool) -> list[Any]:
        now = time.time()
        argv: list[Any] = [f"{now:.6f}", self.worker, now + self.settings.visibility_timeout,
                           self.settings.result_ttl, ledger.JOB_PREFIX,
                           "1" if index else "",
                           "1" if self.settings.celery_results else ""]  # fmt: skip
        for job in jobs:
            r = job.request
            if job.has_record:
                argv += [job.id, "c" if job.celery else ""]
                continue
            argv += [
                job.id,
                "1",
                r.model if r else job.model,
                r.alias if r else "",
                "" if r is None or r.version is None else r.version,
                "1" if r and r.probabilities else "0",
                r.ttl if r and r.ttl else "",
                job.raw,
            ]
        return argv

    def _started(self, jobs: list[Job], flat: list[Any], started_at: str) -> list[Job]:
        """The jobs START marked running, from its reply; the others had already ended."""
        started = []
        cancelled = []
        for i, job in enumerate(jobs):
            status, attempts, alias_version, submitted_at, reply = flat[5 * i : 5 * i + 5]
            if status in ("succeeded", "failed", "cancelled", "expired", "seen"):
                log.info("job %s is %s: skipped", job.id, status)
                if status == "cancelled":
                    cancelled.append(job)
                continue
            job.attempts = int(attempts)
            job.alias_version = int(alias_version) if alias_version else None
            job.submitted_at, job.started_at, job.reply = (
                submitted_at or "",
                started_at,
                reply or "",
            )
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
        if cancelled:
            # Counted here, by the worker that meets the message (once: START says 'seen' to
            # any later one), since the client that cancelled exports no metrics.
            metrics.jobs_cancelled(cancelled)
        return started

    # -- running and finishing -------------------------------------------------------------

    def run(self, jobs: list[Job], landing: str | None = None, *, index: bool = False) -> None:
        """Predict ``jobs`` in batches and write every outcome in one round trip.

        ``landing``: a list other than this process's claim list (Celery's task path), which
        finishing then leaves alone.
        """
        run_batch(jobs, self.cache, max_rows=self.settings.max_rows,
                  batch_rows=self.settings.batch_max_rows, timing=self._timing)  # fmt: skip
        self.finish(jobs, landing, index=index)

    def run_and_claim(self, jobs: list[Job], limit: int, block: float) -> Claim | None:
        """Run ``jobs``, then finish them and claim the next batch in one round trip.

        The FINISH script and the next claim (a blocking LMOVE, or with ``block`` 0 a CLAIM
        that looks at the isolation queue first) go out pipelined on one connection: Redis runs
        them in order, so the batch's messages are off the claim list before anything new lands
        on it. They are sent as EVAL, not EVALSHA: a script cache flushed by a Redis restart
        must not fail the FINISH and let the claim behind it run alone. If redis-py sends the
        pipeline again after a dropped connection, the second FINISH no longer holds the lease
        and leaves the list alone, and a second parked message makes the claim read the whole
        list.
        """
        run_batch(jobs, self.cache, max_rows=self.settings.max_rows,
                  batch_rows=self.settings.batch_max_rows, timing=self._timing)  # fmt: skip
        finish_keys, argv = self._finish_args(jobs, None, index=False)
        pipe = self.raw.pipeline(transaction=False)
        script = ledger.FINISH_CELERY if self._celery(jobs) else ledger.FINISH
        pipe.eval(script, len(finish_keys), *finish_keys, *argv)
        token = _new_token()
        if block > 0:
            timeout: Any = block  # Redis takes fractional seconds; redis-py's annotation says int
            pipe.blmove(self.settings.queue, self.landing, timeout, "RIGHT", "LEFT")
        else:
            claim_keys = self._claim_keys()
            pipe.eval(ledger.CLAIM, len(claim_keys), *claim_keys,
                      *self._claim_args(limit, True, True, token))  # fmt: skip
        written, claimed = pipe.execute()
        self._release()
        metrics.jobs_ended(jobs, written, float(argv[0]))
        self._warn_duplicates(len(jobs), sum(written))
        if self.events is not None:
            self.events.finished(jobs, time.time())
        if block <= 0:
            claim = self._claimed(claimed, fresh=True, token=token)
        else:
            claim = None if claimed is None else self._after_park(claimed, limit)
        if self.events is not None:
            # One message for the batch just finished and the one just started.
            self.events.flush()
        return claim

    def finish(self, jobs: list[Job], landing: str | None = None, *, index: bool = False) -> int:
        """Write final records once each; returns how many were written.

        On this process's own claim list it also takes the batch's messages off and drops the
        lease, as long as the process still holds it.
        """
        finish_keys, argv = self._finish_args(jobs, landing, index=index)
        script = self._finish_celery if self._celery(jobs) else self._finish
        flags = script(keys=finish_keys, args=argv)
        written = int(sum(flags))
        if landing is None:
            self._release()
            # Only the batch consumer's own jobs: Celery's task path sends its own events.
            if self.events is not None:
                self.events.finished(jobs, time.time())
                self.events.flush()
        metrics.jobs_ended(jobs, flags, float(argv[0]))
        self._warn_duplicates(len(jobs), written)
        return written

    def _celery(self, jobs: list[Job]) -> bool:
        """Whether any of ``jobs`` may get a Celery result (FINISH then writes those of the jobs
        whose records are flagged): a stock client's job, one whose producer asked for it, or
        any with this worker's setting on. Known from the messages, never read from Redis."""
        return self.settings.celery_results or any(j.celery or not j.has_record for j in jobs)

    @staticmethod
    def _warn_duplicates(jobs: int, written: int) -> None:
        if written < jobs:
            log.warning("%d job(s) had already ended: results not overwritten", jobs - written)

    def _finish_args(
        self, jobs: list[Job], landing: str | None, *, index: bool
    ) -> tuple[list[str], list[Any]]:
        now = time.time()
        own = landing is None
        argv: list[Any] = [f"{now:.6f}", self.settings.result_ttl, keys.REPLY_TTL,
                           keys.STATS_TTL, ledger.JOB_PREFIX, ledger.DONE_PREFIX,
                           keys.REPLY_LIMIT, "1" if index else "", keys.result(""),
                           keys.RESULT_TTL, self._token if own else "",
                           self._held if own else 0, self.worker]  # fmt: skip
        stamp = argv[0]
        for job in jobs:
            error = orjson.dumps(job.error.to_dict()) if job.error else b""
            # Whoever waits on the job's reply list gets the result itself: no read afterwards.
            told = self._told(job, stamp, error) if job.reply else b""
            argv += [job.id, job.status, "" if job.version is None else job.version,
                     job.predictions, job.proba, error, told, job.classes]  # fmt: skip
        return [
            keys.INFLIGHT,
            rec.stats_key(now),
            landing or self.landing,
            keys.busy(self.worker),
            keys.LEASES,
            keys.RUNNING,
        ], argv

    def _told(self, job: Job, finished_at: str, error: bytes) -> bytes:
        """The JSON of the job's result as FINISH writes it, for the job's own wake-up list."""
        r = job.request
        head = orjson.dumps({
            "id": job.id, "status": job.status, "model": job.model_name,
            "alias": r.alias if r else None, "version": job.ran_version,
            "submitted_at": job.submitted_at, "started_at": job.started_at,
            "finished_at": finished_at, "attempts": job.attempts, "worker": self.worker,
        })  # fmt: skip
        return b"".join((
            head[:-1], b',"predictions":', job.predictions or b"null",
            b',"probabilities":', job.proba or b"null", b',"classes":', job.classes or b"null",
            b',"error":', error or b"null", b"}",
        ))  # fmt: skip

    def dead_letter(self, job_id: str | None, raw: str, error: PredictqError) -> None:
        """Keep a message that cannot run where `predictq dead` can show it (bounded)."""
        log.error("dead-lettered message %s: %s", job_id or "(no id)", error.message)
        self._dead(keys=[keys.DEAD], args=[ledger.dead_entry(job_id, raw, error),
                                           keys.DEAD_LIMIT])  # fmt: skip
