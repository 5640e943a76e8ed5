"""What the routes share in one process: settings, the client, the registry, Redis, key ring."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from fastapi import Request

from registry import Registry, Settings

from ..client import Client
from .auth import KeyRing
from .owners import Owners
from .waiting import Waiters


@dataclass
class Services:
    """The gateway's long-lived objects; sync ones are used from the threadpool."""

    settings: Settings
    keys: KeyRing
    client: Client
    registry: Registry
    aio: redis.asyncio.Redis
    owners: Owners
    waiters: Waiters

    async def close(self) -> None:
        await self.waiters.close()
        await self.aio.aclose()
        self.client.close()
        self.registry.redis.close()


async def services(request: Request) -> Services:
    """FastAPI dependency: the app's Services."""
    found: Services = request.app.state.services
    return found
