"""Celery protocol-2 task messages, built directly so that thousands can be pushed per round trip.

The JSON is what ``celery.send_task`` followed by kombu's Redis transport would LPUSH onto the
queue list, so stock Celery workers and clients interoperate with it. Extra headers tell the
worker about it: ``predictq_record``, that the job records were written at submission,
``predictq_jobs``, how many jobs a message carries (first in the envelope, so that the claim
script reads it without decoding the message), and ``predictq_celery`` (only when true), that
the records are flagged for a Celery result (celery_results.py). Only the body and a few strings
vary per message, so the envelope is a template filled with JSON-encoded values: encoding the
whole envelope per job would double the cost of a submit.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from .contract import BATCH_TASK_NAME, TASK_NAME

_ORIGIN = f"predictq@{socket.gethostname()}:{os.getpid()}"
_EMBED = b',{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
_TEMPLATE = (
    '{"headers":{"predictq_jobs":%(jobs)d,"predictq_at":%(at).6f,"lang":"py","task":%(task)s,'
    '"id":%(id)s,'
    '"shadow":null,"eta":null,"expires":null,"group":null,"group_index":null,"retries":0,'
    '"timelimit":[null,null],"root_id":%(id)s,"parent_id":null,"argsrepr":"()",'
    '"kwargsrepr":%(repr)s,"origin":' + json.dumps(_ORIGIN) + ',"ignore_result":true,'
    '"replaced_task_nesting":0,"stamped_headers":null,"stamps":{},"predictq_record":%(record)s'
    "%(celery)s},"
    '"body":"%(body)s","content-encoding":"utf-8","content-type":"application/json",'
    '"properties":{"correlation_id":%(id)s,"reply_to":"","delivery_mode":2,'
    '"delivery_info":{"exchange":"","routing_key":%(queue)s},"priority":0,'
    '"body_encoding":"base64","delivery_tag":"%(tag)s"}}'
)
_TASK = json.dumps(TASK_NAME)
_BATCH_TASK = json.dumps(BATCH_TASK_NAME)


def _envelope(
    task: str, task_id: str, body: bytes, repr_: str, jobs: int, queue: str, record: bool = True,
    celery: bool = False,
) -> str:  # fmt: skip
    quoted_id = json.dumps(task_id)
    return _TEMPLATE % {
        "jobs": jobs,
        "record": "true" if record else "false",
        "celery": ',"predictq_celery":true' if celery else "",
        "at": time.time(),
        "task": task,
        "body": base64.b64encode(body).decode(),
        "id": quoted_id,
        "repr": json.dumps(repr_),
        "queue": json.dumps(queue),
        "tag": uuid.uuid4().hex,
    }


def task_message(
    job_id: str, kwargs: dict[str, Any], queue: str, *, record: bool = True, celery: bool = False
) -> str:
    """The Redis-transport JSON of a ``predictq.predict`` task message for ``job_id``.

    ``record``: whether the job's record was written at submission (a job a stock client sent
    has none until a worker starts it, and the worker then writes it from the message).
    ``celery``: its record is flagged for a Celery result (producer/celery_results.py).
    """
    body = b"[[]," + orjson.dumps(kwargs, option=orjson.OPT_SERIALIZE_NUMPY) + _EMBED
    rows = kwargs.get("rows")
    count = len(rows) if isinstance(rows, list) else "?"
    repr_ = f"{{'model': {kwargs.get('model')!r}, 'rows': <{count}>}}"
    return _envelope(_TASK, job_id, body, repr_, 1, queue, record, celery)


def batch_message(
    shared: dict[str, Any], job_ids: Sequence[str], rows_json: Sequence[bytes], queue: str,
    *, celery: bool = False,
) -> str:  # fmt: skip
    """One ``predictq.predict_batch`` message with a job per (id, rows already JSON-encoded).

    The rows come encoded because the client measured each job's size from the same JSON.
    """
    jobs = b",".join(
        b'{"id":' + orjson.dumps(job_id) + b',"rows":' + rows + b"}"
        for job_id, rows in zip(job_ids, rows_json, strict=True)
    )
    body = b"[[]," + orjson.dumps(shared)[:-1] + b',"jobs":[' + jobs + b"]}" + _EMBED
    repr_ = f"{{'model': {shared['model']!r}, 'jobs': <{len(job_ids)}>}}"
    return _envelope(_BATCH_TASK, uuid.uuid4().hex, body, repr_, len(job_ids), queue,
                     celery=celery)  # fmt: skip
