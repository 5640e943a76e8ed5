"""Probes for load balancers and orchestrators; they need no API key."""

from __future__ import annotations

import time
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from registry import keys
from registry.liveness import consumer_states, consuming

from .schemas import Health, Readiness
from .services import Services, services

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness", operation_id="healthz")
async def healthz() -> Health:
    """The process is up and serving requests."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis or every worker is down."}},
    summary="Readiness",
    operation_id="readyz",
)
async def readyz(
    svc: Annotated[Services, Depends(services)],
    workers: Annotated[
        bool,
        Query(
            description="false: ready when Redis answers alone, for a gateway whose workers "
            "scale to zero (only jobs submitted meanwhile bring one back)."
        ),
    ] = True,
) -> JSONResponse:
    """Ready when Redis answers, a worker's heartbeat is alive, and its pool processes are not
    all failing to take jobs."""
    reachable = alive = taking = False
    try:
        reachable = bool(await svc.aio.ping())
        # Heartbeats expire by themselves, so any key left is a live worker.
        async for _ in svc.aio.scan_iter(match=keys.WORKER_PATTERN, count=1000):
            alive = True
            break
        settings = svc.settings
        reports = await svc.aio.hgetall(keys.CONSUMERS)
        states = consumer_states(reports, time.time(), settings.time_limit)
        taking = not settings.batching or consuming(states)
    except redis.RedisError:
        pass
    ready = reachable and ((alive and taking) or not workers)
    body = Readiness(ready=ready, redis=reachable, workers=alive,
                     consumers=taking)  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
