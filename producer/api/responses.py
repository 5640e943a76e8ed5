"""The error responses a route declares in the OpenAPI document, each with the one error shape."""

from __future__ import annotations

from typing import Any

from .schemas import ErrorBody

_WHY = {
    400: "The body is not strict JSON (syntax, NaN/Infinity, nesting too deep).",
    401: "No API key, or an unknown one.",
    403: "The API key lacks the scope this operation needs.",
    404: "No such model, version, alias or job (or the job's record expired).",
    409: "Conflicts with the current state (a taken job ID, a started job, nothing to roll back, "
    "a version an alias serves, an archived version).",
    413: "The request body is over PREDICTQ_API_MAX_BODY_BYTES.",
    415: "The body is not sent as application/json.",
    422: "Invalid input; nothing was enqueued or changed.",
    503: "Redis is unavailable.",
}

# A submission refused whole (code overloaded) says when to try again.
OVERLOADED = {
    "model": ErrorBody,
    "description": "Redis is unavailable, or overloaded: the queue is at PREDICTQ_MAX_QUEUED or "
    "Redis memory past its high-water mark; nothing was enqueued. Or not_replicated: fewer "
    "replicas than PREDICTQ_MIN_REPLICAS confirmed the jobs in time; jobs with a job_id were "
    "enqueued (resubmitting them is safe), jobs without one were cancelled.",
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before submitting again (overloaded and "
            "not_replicated only).",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``, each answered with an ErrorBody."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}
