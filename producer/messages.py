"""Celery protocol-2 task messages, built directly so that thousands can be pushed per round trip.

The JSON is what ``celery.send_task`` followed by kombu's Redis transport would LPUSH onto the
queue list, so stock Celery workers and clients interoperate with it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

from .contract import TASK_NAME

_ORIGIN = f"predictq@{socket.gethostname()}:{os.getpid()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(job_id: str, kwargs: dict[str, Any], queue: str) -> str:
    """The Redis-transport JSON of a ``predictq.predict`` task message for ``job_id``."""
    body = json.dumps([[], kwargs, _EMBED], separators=(",", ":")).encode()
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TASK_NAME,
            "id": job_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": job_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": f"{{'model': {kwargs['model']!r}, 'rows': <{len(kwargs['rows'])} rows>}}",
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": job_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope, separators=(",", ":"))
