"""Resolving the Redis URL (explicit, from settings, or embedded) and opening clients."""

from __future__ import annotations

from typing import Any

import redis

from .embedded import ensure_embedded
from .settings import Settings, get_settings


def resolve_url(url: str | None = None, settings: Settings | None = None) -> str:
    """The Redis URL to use: ``url``, else ``PREDICTQ_REDIS_URL``, else the embedded Redis."""
    if url:
        return url
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return ensure_embedded(settings.embedded_port, settings.home / "redis")


def connect(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for ``url``; passwords, ACL users and rediss:// come from the URL.

    ``options`` are redis-py's (``decode_responses=False`` for a client that reads bytes).
    """
    return redis.Redis.from_url(
        url, **{"decode_responses": True, "health_check_interval": 30, **options}
    )
