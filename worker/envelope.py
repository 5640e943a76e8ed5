"""Reading Celery task messages off the queue list, refusing anything that is not JSON."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from producer import TASK_NAME
from registry import InvalidInput

_JSON = "application/json"


@dataclass(frozen=True)
class TaskMessage:
    """The parts of a ``predictq.predict`` message the worker uses."""

    job_id: str
    kwargs: dict[str, Any]
    has_record: bool = False


def job_id_of(envelope: Any) -> str | None:
    """The task ID in a decoded envelope, when it has one."""
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    job_id = headers.get("id") if isinstance(headers, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


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
    if task != TASK_NAME:
        raise InvalidInput(f"task {task!r} is not {TASK_NAME!r}: route other tasks elsewhere")
    body = envelope.get("body")
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    try:
        if encoding == "base64":
            body = base64.b64decode(body, validate=True)
        decoded = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError, binascii.Error) as e:
        raise InvalidInput(f"message body is not valid JSON: {e}") from e
    if not (isinstance(decoded, list) and len(decoded) >= 2):
        raise InvalidInput("message body must be [args, kwargs, embed] (Celery protocol 2)")
    args, kwargs = decoded[0], decoded[1]
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidInput("message args must be a list and kwargs an object")
    return TaskMessage(
        job_id, with_positional(args, kwargs), envelope["headers"].get("predictq_record") is True
    )
