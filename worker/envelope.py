"""Reading Celery task messages off the queue list, refusing anything that is not JSON."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson

from producer import BATCH_TASK_NAME, TASK_NAME
from producer.messages import task_message
from registry import InvalidInput

_JSON = "application/json"
# Most jobs one batch message may carry: predictq's own producers send 128, and a message must
# stay small enough to parse, start and recover in one go (each job becomes a message of its own
# when it is recovered).
MAX_BATCH_JOBS = 1024


@dataclass(frozen=True)
class TaskMessage:
    """The parts of a ``predictq.predict`` or ``predictq.predict_batch`` message the worker uses.

    A batch message has ``jobs``, (id, rows) per job, and ``kwargs`` holds what they share.
    ``celery``: its producer flagged the records for a Celery result.
    """

    job_id: str
    kwargs: dict[str, Any]
    has_record: bool = False
    jobs: list[tuple[str, Any]] | None = None
    celery: bool = False


def job_id_of(envelope: Any) -> str | None:
    """The task ID in a decoded envelope, when it has one."""
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    job_id = headers.get("id") if isinstance(headers, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def task_of(envelope: Any) -> str | None:
    """The task name in a decoded envelope, when it has one."""
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    task = headers.get("task") if isinstance(headers, dict) else None
    return task if isinstance(task, str) else None


def with_positional(args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The task's keyword arguments, taking positional (model, rows) from hand-written clients."""
    if not args:
        return kwargs
    return {**dict(zip(("model", "rows"), args, strict=False)), **kwargs}


def loads_or_none(raw: str) -> Any:
    """The decoded JSON of ``raw``, or None when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def parse(raw: str) -> TaskMessage:
    """The job in a kombu Redis-transport message; InvalidInput when it cannot be one of ours.

    The body is decoded only when its content type is JSON: a pickle (or any other) payload
    is refused before a single byte of it is interpreted.
    """
    try:
        # orjson also refuses NaN/Infinity literals and nesting deeper than 1024 levels.
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"message is not JSON: {e}") from e
    job_id = job_id_of(envelope)
    if job_id is None:
        raise InvalidInput("message has no task id in its headers")
    content_type = envelope.get("content-type")
    if content_type != _JSON:
        raise InvalidInput(
            f"message content type {content_type!r} refused: predictq accepts JSON only "
            "(set task_serializer='json' in the sending Celery app)"
        )
    task = envelope["headers"].get("task")
    if task not in (TASK_NAME, BATCH_TASK_NAME):
        raise InvalidInput(f"task {task!r} is not {TASK_NAME!r}: route other tasks elsewhere")
    body = envelope.get("body")
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    try:
        if encoding == "base64":
            body = base64.b64decode(body, validate=True)
        decoded = _body(body)
    except (ValueError, TypeError, binascii.Error, RecursionError) as e:
        raise InvalidInput(f"message body is not valid JSON: {e}") from e
    if not (isinstance(decoded, list) and len(decoded) >= 2):
        raise InvalidInput("message body must be [args, kwargs, embed] (Celery protocol 2)")
    args, kwargs = decoded[0], decoded[1]
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidInput("message args must be a list and kwargs an object")
    has_record = envelope["headers"].get("predictq_record") is True
    celery = envelope["headers"].get("predictq_celery") is True
    if task == BATCH_TASK_NAME:
        return TaskMessage(job_id, kwargs, has_record, batch_jobs(kwargs), celery)
    return TaskMessage(job_id, with_positional(args, kwargs), has_record, celery=celery)


def _body(body: Any) -> Any:
    """A task body's JSON. Celery's own JSON writer (Python's) spells a float NaN as ``NaN``,
    which orjson refuses: such a body is read again by Python's parser, NaN and all, and the
    schema decides (a missing value where the column is nullable). Only bodies orjson refused
    pay for the second parse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def batch_ids(raw: str) -> list[str]:
    """The job IDs of a batch message that could not be read as a whole, as far as they can be
    read: each then fails on its own record instead of vanishing with the message."""
    try:
        envelope = orjson.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        jobs = json.loads(body)[1]["jobs"]
    except Exception:  # anything unreadable has no IDs to give
        return []
    if not isinstance(jobs, list):
        return []
    ids = [j.get("id") for j in jobs[:MAX_BATCH_JOBS] if isinstance(j, dict)]
    return [i for i in ids if isinstance(i, str) and 0 < len(i) <= 200]


def batch_jobs(kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """(id, rows) of each job of a batch message's keyword arguments, which loses ``jobs``."""
    jobs = kwargs.pop("jobs", None)
    if not isinstance(jobs, list) or not jobs:
        raise InvalidInput(f"{BATCH_TASK_NAME} needs jobs: a non-empty list of {{id, rows}}")
    if len(jobs) > MAX_BATCH_JOBS:
        raise InvalidInput(
            f"{BATCH_TASK_NAME} carries {len(jobs)} jobs, more than {MAX_BATCH_JOBS}: "
            "split them over several messages"
        )
    out = []
    for i, job in enumerate(jobs):
        job_id = job.get("id") if isinstance(job, dict) else None
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 200:
            raise InvalidInput(f"jobs[{i}] needs an id: a string of 1-200 characters")
        out.append((job_id, job.get("rows")))
    return out


def singles(raw: str, queue: str) -> list[tuple[str, str]]:
    """(job id, message) per job of a raw message, a batch message split into messages of one.

    Recovery hands jobs back one at a time; a message that cannot be read keeps its task ID
    (when it has one) and goes back as it is.
    """
    try:
        message = parse(raw)
    except InvalidInput:
        job_id = job_id_of(loads_or_none(raw))
        return [] if job_id is None else [(job_id, raw)]
    if message.jobs is None:
        return [(message.job_id, raw)]
    flags = {"record": message.has_record, "celery": message.celery}
    return [
        (job_id, task_message(job_id, {**message.kwargs, "rows": rows}, queue, **flags))
        for job_id, rows in message.jobs
    ]
