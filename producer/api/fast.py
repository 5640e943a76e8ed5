"""The three hot operations without FastAPI's per-request machinery.

Submitting one job, reading or long-polling one, and the bulk wait are most of what callers
send. FastAPI's routing, dependency solving and middleware stack cost about 0.23 ms of CPU per
request on a small machine (a trivial route: 0.29 ms under uvicorn, against 0.06 ms for a bare
ASGI callable), which was a quarter of the whole budget for a job. This ASGI middleware serves
those three operations itself when a request is plainly well formed, with the same functions the
FastAPI routes call (routes_jobs.submit_one, read_one, wait_many), the same key check
(KeyRing.authenticate, parsing the header as HTTPBearer does) and the same error answers
(errors.render). Anything else, including every request whose path or query it does not
recognise exactly, goes on to FastAPI unchanged, which also keeps the operations in the OpenAPI
document: the two give the same answers, and the API's tests run through both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Receive, Scope, Send

from . import routes_jobs
from .auth import KeyRing, Principal, allowed
from .errors import render
from .schemas import NAME_PATTERN
from .services import Services

_SUBMIT = re.compile(r"/v1/models/(" + NAME_PATTERN.strip("^$") + r")/jobs")
_JOB = re.compile(r"/v1/jobs/([^/]{1,200})")
_WAIT = re.compile(rb"wait=([0-9]+(?:\.[0-9]+)?)")

Handler = Callable[[Services, Principal, Request], Awaitable[Response]]


class FastPath:
    """ASGI middleware: serves the hot operations (see the module docstring), else passes on."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._route(scope) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            svc: Services = self.api.state.services
            who = _principal(self.api.state.keys, request)
            response = await handler(svc, who, request)
        except Exception as e:
            response = await render(request, e)
        await response(scope, receive, send)

    @staticmethod
    def _route(scope: Scope) -> Handler | None:
        if scope.get("root_path"):
            return None  # behind a prefix: FastAPI's routing strips it
        method, path, query = scope["method"], scope["path"], scope["query_string"]
        if method == "POST" and not query:
            if path == "/v1/jobs:wait":
                return routes_jobs.wait_many
            found = _SUBMIT.fullmatch(path)
            if found is not None:
                name = found.group(1)
                return lambda svc, who, request: routes_jobs.submit_one(svc, who, name, request)
        elif method == "GET":
            found = _JOB.fullmatch(path)
            wait = _wait(query)
            if found is not None and wait is not None:
                job_id = found.group(1)
                return lambda svc, who, _: routes_jobs.read_one(svc, who, job_id, wait)
        return None


def _wait(query: bytes) -> float | None:
    """The ``wait`` of a query that holds nothing else, as a plain decimal; else None."""
    if not query:
        return 0.0
    found = _WAIT.fullmatch(query)
    if found is None:
        return None
    wait = float(found.group(1))
    return wait if math.isfinite(wait) else None


def _principal(ring: KeyRing, request: Request) -> Principal:
    """The caller, as ``auth.require("submit")`` finds it."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    key = credentials if scheme.lower() == "bearer" and credentials else None
    return allowed(ring, key, "submit")


__all__ = ["FastPath"]
