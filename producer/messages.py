"""Celery protocol-2 task messages, built directly so that thousands can be pushed per round trip.

The JSON is what ``celery.send_task`` followed by kombu's Redis transport would LPUSH onto the
queue list, so stock Celery workers and clients interoperate with it. One extra header,
``predictq_record``, tells the worker the job record was written at submission. Only the body
and a few strings vary per job, so the envelope is a template filled with JSON-encoded values:
encoding the whole envelope per job would double the cost of a submit.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

import orjson

from .contract import TASK_NAME

_ORIGIN = f"predictq@{socket.gethostname()}:{os.getpid()}"
_EMBED = b',{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
_TEMPLATE = (
    '{"body":"%(body)s","content-encoding":"utf-8","content-type":"application/json",'
    '"headers":{"lang":"py","task":' + json.dumps(TASK_NAME) + ',"id":%(id)s,"shadow":null,'
    '"eta":null,"expires":null,"group":null,"group_index":null,"retries":0,'
    '"timelimit":[null,null],"root_id":%(id)s,"parent_id":null,"argsrepr":"()",'
    '"kwargsrepr":%(repr)s,"origin":' + json.dumps(_ORIGIN) + ',"ignore_result":true,'
    '"replaced_task_nesting":0,"stamped_headers":null,"stamps":{},"predictq_record":true},'
    '"properties":{"correlation_id":%(id)s,"reply_to":"","delivery_mode":2,'
    '"delivery_info":{"exchange":"","routing_key":%(queue)s},"priority":0,'
    '"body_encoding":"base64","delivery_tag":"%(tag)s"}}'
)


def task_message(job_id: str, kwargs: dict[str, Any], queue: str) -> str:
    """The Redis-transport JSON of a ``predictq.predict`` task message for ``job_id``."""
    body = b"[[]," + orjson.dumps(kwargs, option=orjson.OPT_SERIALIZE_NUMPY) + _EMBED
    quoted_id = json.dumps(job_id)
    return _TEMPLATE % {
        "body": base64.b64encode(body).decode(),
        "id": quoted_id,
        "repr": json.dumps(f"{{'model': {kwargs['model']!r}, 'rows': <{len(kwargs['rows'])}>}}"),
        "queue": json.dumps(queue),
        "tag": uuid.uuid4().hex,
    }
