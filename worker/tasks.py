"""The Celery tasks: the path for jobs that arrive through Celery's consumer.

With batching on (the default) pool processes claim jobs straight from the queue and these tasks
are not used for them; with ``PREDICTQ_BATCHING=false`` every message comes through here, and
runs through the same code as a batch.
"""

from __future__ import annotations

from typing import Any

import orjson
from celery.backends.base import DisabledBackend

from producer import BATCH_TASK_NAME, TASK_NAME
from producer.messages import task_message

from . import envelope
from .app import celery_app
from .lifecycle import runtime
from .runtime import Runtime


def _run(rt: Runtime, jobs: list[Any]) -> None:
    # A key nobody writes: finishing must not clear the batch consumer's claim list. No claim
    # list tracks these jobs (kombu holds their messages), so they go in the in-flight index.
    rt.run(rt.start(jobs, index=True), landing=f"{rt.landing}:task", index=True)


# Celery never stores a result of these tasks: the ledger's scripts write the Celery result a
# stock client reads. task_ignore_result is not enough, since a message's own ignore_result
# (false from some clients) overrides it, and CELERY_RESULT_BACKEND in the environment gives the
# app a backend whatever its configuration: Celery would then write SUCCESS, None over a failed
# job's FAILURE when the task returns. A task's own backend, disabled, stores nothing.
_NO_RESULTS = DisabledBackend(celery_app)


@celery_app.task(name=TASK_NAME, bind=True, backend=_NO_RESULTS)  # type: ignore[untyped-decorator]
def predict(self: Any, *args: Any, **kwargs: Any) -> None:
    """Run one prediction job; its outcome goes to the job record (and the ledger's scripts
    write a stock client's Celery result, never Celery itself: see producer/celery_results.py)."""
    kwargs = envelope.with_positional(args, kwargs)
    rt = runtime()
    headers = self.request.headers or {}
    # A stock client's message (no record written at submission) waits on a Celery result.
    celery = headers.get("predictq_celery") is True or headers.get("predictq_record") is not True
    # The record of a job sent by a stock client keeps its message, for recovery and `dead
    # retry`; it says the record exists by then, so it must say the Celery result too, or a
    # batch consumer that meets it again finishes the job without one.
    try:
        raw = task_message(str(self.request.id), kwargs, rt.settings.queue, celery=celery)
    except orjson.JSONEncodeError:
        raw = ""  # not JSON orjson can write (an integer past 64 bits): the job fails anyway
    job = rt.job(str(self.request.id), kwargs, raw, celery=celery)
    _run(rt, [job])


@celery_app.task(name=BATCH_TASK_NAME, bind=True, backend=_NO_RESULTS)  # type: ignore[untyped-decorator]
def predict_batch(self: Any, **kwargs: Any) -> None:
    """Run the jobs of one batch message (what ``submit_many`` sends) together."""
    rt = runtime()
    has_record = bool((self.request.headers or {}).get("predictq_record"))
    celery = (self.request.headers or {}).get("predictq_celery") is True
    message = envelope.TaskMessage(
        str(self.request.id), kwargs, has_record, envelope.batch_jobs(kwargs), celery
    )
    _run(rt, rt.batch(message))
