"""The FastAPI application of ``predictq api``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from registry import Settings, get_settings
from registry.connection import connect_async

from ..client import Client
from . import routes_health, routes_jobs, routes_metrics, routes_models
from .auth import KeyRing
from .errors import install_handlers
from .fast import FastPath
from .limits import BodyLimit
from .owners import Owners
from .schemas import BatchSubmission, JobSubmission, JobsWait
from .services import Services
from .waiting import Waiters

log = logging.getLogger("predictq.api")

DESCRIPTION = """\
Submit prediction jobs, poll or long-poll their results, and read and manage the model registry.

Every `/v1` operation needs an API key sent as `Authorization: Bearer <key>`. Its scopes decide
what it may do: `submit` (enqueue jobs, read and cancel its own), `read` (the registry) and
`admin` (promote, roll back, read any job; it implies the others). Errors have one shape:
`{"code": ..., "message": ..., "errors": [{"loc", "msg", "type"}]}`.
"""


def _openapi(app: FastAPI) -> Any:
    """FastAPI's document plus the bodies that routes parse themselves (see limits.read_json)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)  # fmt: skip
        _, extra = models_json_schema(
            [(m, "validation") for m in (JobSubmission, BatchSubmission, JobsWait)],
            ref_template="#/components/schemas/{model}",
        )
        doc.setdefault("components", {}).setdefault("schemas", {}).update(extra["$defs"])
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway for ``settings`` (default: the environment's); refuses to build without keys."""
    settings = settings or get_settings()
    ring = KeyRing.from_settings(settings)
    if ring.open:
        log.warning("serving WITHOUT API keys: every caller is an admin (api_insecure_no_auth)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = Client(settings=settings)
        aio = connect_async(client.url, decode_responses=True)
        svc = Services(
            settings=settings, keys=ring, client=client, registry=client.registry, aio=aio,
            owners=Owners(client.redis, aio), waiters=Waiters(aio),
        )  # fmt: skip
        app.state.services = svc
        svc.waiters.start()
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(
        title="predictq",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.keys = ring
    install_handlers(app)
    # Inside the body limit, which counts what the fast path reads too.
    app.add_middleware(FastPath, api=app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.include_router(routes_jobs.router)
    app.include_router(routes_models.router)
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
