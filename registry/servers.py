"""The servers predictq runs on: Redis >= 7.0, or Valkey >= 7.2.

predictq's Lua scripts declare flags (``#!lua flags=allow-oom``), which came with Redis 7.0;
Valkey forked from Redis 7.2 and has them from its first release.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import redis
from redis.exceptions import NoPermissionError

from .errors import RedisUnavailable

MINIMUM = {"redis": (7, 0), "valkey": (7, 2)}
SUPPORTED = "predictq needs Redis >= 7.0 or Valkey >= 7.2"


def too_old(name: str, version: str) -> bool:
    """Whether server ``name`` (redis or valkey) at ``version`` is too old for predictq."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    return parts < MINIMUM.get(name.lower(), MINIMUM["redis"])


def server_of(info: Mapping[str, Any]) -> tuple[str, str]:
    """``(name, version)`` from ``INFO server``.

    Valkey reports its own ``valkey_version`` beside the ``redis_version`` it is compatible
    with (7.2.4 for every Valkey 8 and 9), so the Valkey field decides when present.
    """
    if "valkey_version" in info:
        return "valkey", str(info["valkey_version"])
    return str(info.get("server_name") or "redis"), str(info.get("redis_version", "0"))


def check_server_version(client: redis.Redis) -> tuple[str, str]:
    """Refuse (``RedisUnavailable``) a server older than Redis 7.0 / Valkey 7.2; else its
    ``(name, version)``. Workers call it at start."""
    try:
        name, version = server_of(client.info("server"))
    except redis.RedisError as e:
        # INFO is in ACL's @dangerous category; HELLO, allowed to every user, names it too.
        if not isinstance(e.__cause__ if isinstance(e, RedisUnavailable) else e, NoPermissionError):
            raise
        hello = client.execute_command("HELLO")  # type: ignore[no-untyped-call]
        name, version = str(hello["server"]), str(hello["version"])
    if too_old(name, version):
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        raise RedisUnavailable(
            f"the server at {where} is {name.capitalize()} {version}, too old: {SUPPORTED}; "
            "upgrade it, or unset PREDICTQ_REDIS_URL to use the embedded Valkey"
        )
    return name, version
