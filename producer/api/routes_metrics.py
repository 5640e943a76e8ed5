"""Prometheus ``/metrics`` of the gateway: the cluster-wide gauges, read from Redis per scrape.

It needs no API key, like the probes: Prometheus scrapes without one by default, and the
gauges say how deep the queues are and which versions are served, nothing about any job. Every
uvicorn worker process answers the same (nothing is counted in the process), so
``PREDICTQ_API_WORKERS`` needs no multiprocess directory. Block the path at the proxy when the
API faces callers who must not see it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from registry.gauges import render

from .services import Services, services

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Annotated[Services, Depends(services)]) -> Response:
    """The gauges in Prometheus's text format."""
    body = await asyncio.to_thread(render, svc.registry.redis, svc.settings)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
