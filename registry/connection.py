"""Resolving the Redis URL (explicit, from settings, or embedded) and opening clients.

Every predictq client (``Client``, ``Registry``, the worker runtime) is opened by
:func:`connect`, so this is the one place where redis-py's connection, auth, URL and protocol
errors become one ``RedisUnavailable`` that says what is wrong and how to fix it, without
the password. Replies about the data (OOM, WRONGTYPE, a script's error) pass through as they
are. ``RedisUnavailable`` is a ``redis.ConnectionError``, so retry loops still see it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import weakref
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
from redis.client import Pipeline, PubSub
from redis.exceptions import (
    AuthenticationWrongNumberOfArgsError,
    BusyLoadingError,
    NoPermissionError,
)
from redis.sentinel import MasterNotFoundError, Sentinel

from . import sentinel
from .embedded import ensure_embedded
from .errors import RedisUnavailable
from .settings import Settings, get_settings

# Bounds the wait on a host that drops packets; redis-py waits for the OS (minutes) by default.
# A URL's own ?socket_connect_timeout= wins.
_CONNECT_TIMEOUT = 10.0
_NO_PASSWORD = ("NOAUTH", "Authentication required", "HELLO must be called with the client already")
# How often a Sentinel URL's client asks the sentinels which server is the master (_Following).
_FOLLOW_EVERY = 1.0
# Sentinels answer at once or not at all: a short wait, unless the URL says otherwise.
_SENTINEL_TIMEOUT = 2.0
_SECRET_OPTIONS = {"password", "username", "sentinel_password", "sentinel_username"}
_NO_HOST = ("Name or service not known", "nodename nor servname", "name resolution",
            "No address associated")  # fmt: skip


# The pools of the clients connect() made: each gets fresh locks in a forked child.
_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    """In a forked child, redis-py's pool resets itself on its first use while holding its own
    lock (redis-py 8). A lock that another thread of the parent held at the fork (every command
    takes it for an instant: the heartbeat's, the sweeper's) stays held in the child for good,
    and so would that first command. Only the forking thread lives on in a child: no one there
    holds them."""
    for pool in list(_POOLS):
        for name in ("_lock", "_fork_lock"):
            if hasattr(pool, name):
                setattr(pool, name, threading.RLock())


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


def _tracked(client: PredictqRedis) -> PredictqRedis:
    _POOLS.add(client.connection_pool)
    for asked in getattr(client.sentinels, "sentinels", ()):
        _POOLS.add(asked.connection_pool)
    return client


def resolve_url(url: str | None = None, settings: Settings | None = None) -> str:
    """The Redis URL to use: ``url``, else ``PREDICTQ_REDIS_URL``, else the embedded Redis."""
    if url:
        return url
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return ensure_embedded(settings.embedded_port, settings.home / "redis", settings)


def redact(url: str) -> str:
    """``url`` without its user name and password, fit to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    query = "&".join(
        q for q in parts.query.split("&")
        if q and q.partition("=")[0].lower() not in _SECRET_OPTIONS
    )  # fmt: skip
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def explain(error: redis.RedisError, where: str) -> RedisUnavailable | None:
    """What ``error`` means for the Redis at ``where``, with the fix; None when it is not a
    connection problem (a reply about the data: OOM, WRONGTYPE, a script's error)."""
    text = " ".join(str(error).split())
    at = f"Redis at {where}"
    if isinstance(error, MasterNotFoundError):
        # redis-py appends each sentinel's client repr and error kind: keep only the kinds.
        kinds = re.findall(r"> - (?:\w+:)?(\w+)", text)
        said = f" (the sentinels: {', '.join(kinds)})" if kinds else ""
        if "AuthenticationError" in kinds:
            return RedisUnavailable(
                f"the sentinels of {where} refused the connection{said}: give their password "
                "as ?sentinel_password= (it may differ from the master's)"
            )
        return RedisUnavailable(
            f"no sentinel of {where} names a master of that name that is up{said}: check the "
            "sentinel hosts and the master name; during a failover, retry shortly",
            transient=True,
        )
    if isinstance(error, redis.AuthenticationError | AuthenticationWrongNumberOfArgsError):
        if any(m in text for m in _NO_PASSWORD):
            return RedisUnavailable(
                f"{at} needs a password: put it in the URL, redis://:PASSWORD@host:port/db"
            )
        return RedisUnavailable(
            f"{at} refused the user or password in the URL ({text}): check them"
        )
    if isinstance(error, redis.ReadOnlyError):
        return RedisUnavailable(
            f"{at} is a read-only replica (READONLY {text}): point the URL at the primary, or "
            f"use a Sentinel URL ({sentinel.SYNTAX}) to follow failovers",
            transient=True,  # a replica being promoted becomes writable
        )
    if isinstance(error, redis.ConnectionError) and "previous master is now a slave" in text:
        return RedisUnavailable(
            f"the primary of {where} turned replica (a failover): retry, and the next "
            "connection goes to the new primary",
            transient=True,
        )
    if isinstance(error, NoPermissionError):
        return RedisUnavailable(
            f"the Redis user in the URL may not do what predictq needs at {where} ({text}): "
            "grant it, or use another user"
        )
    if isinstance(error, redis.ResponseError):
        if "DB index is out of range" in text:
            return RedisUnavailable(
                f"{at} has no such database: use a db index below its 'databases' setting "
                "(0-15 by default)"
            )
        return None
    if isinstance(error, redis.InvalidResponse):
        return RedisUnavailable(
            f"what answers at {where} is not Redis ({text}): check the host and port"
        )
    if isinstance(error, redis.TimeoutError):
        tls = " (over TLS: does the server speak TLS on that port?)" if "rediss:" in where else ""
        return RedisUnavailable(
            f"{at} did not answer in time{tls}: check that it is up and reachable", transient=True
        )
    if isinstance(error, BusyLoadingError):
        return RedisUnavailable(f"{at} is loading its data: try again shortly", transient=True)
    if isinstance(error, redis.ConnectionError):
        if "SSL" in text or "certificate" in text:
            return RedisUnavailable(
                f"TLS with {at} failed ({text}): check the server's certificate and the URL's "
                "ssl_ca_certs= (and ssl_certfile=/ssl_keyfile= if it wants client certificates)"
            )
        if any(m in text for m in _NO_HOST):
            return RedisUnavailable(
                f"cannot find the host of {at} ({text}): check the host name",
                transient="Temporary" in text,
            )
        fix = "start it, or fix the URL (PREDICTQ_REDIS_URL)"
        if sentinel.is_sentinel(where):  # the sentinels named a primary that went away
            fix = "a failover may be under way: retry shortly"
        return RedisUnavailable(f"cannot connect to {at} ({text}): {fix}", transient=True)
    return None


def _reraise(error: redis.RedisError, where: str) -> NoReturn:
    unavailable = None if isinstance(error, RedisUnavailable) else explain(error, where)
    if unavailable is None:
        raise error
    raise unavailable from error


class _Pipeline(Pipeline):
    where = "redis"
    following: _Following | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.RedisError as e:
            _reraise(e, self.where)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.following is not None:
            self.following.check()
        try:
            return super().execute(raise_on_error)
        except redis.RedisError as e:
            _reraise(e, self.where)


class _PubSub(PubSub):
    where = "redis"

    def execute_command(self, *args: Any) -> Any:
        try:
            return super().execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.RedisError as e:
            _reraise(e, self.where)

    def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Any:
        try:
            return super().get_message(ignore_subscribe_messages, timeout)  # type: ignore[arg-type]
        except redis.RedisError as e:
            _reraise(e, self.where)


class _Following:
    """Asks the sentinels which server is the master at most every ``_FOLLOW_EVERY`` seconds.

    redis-py asks only when it opens a connection, and drops one only when its server answers
    READONLY. After a failover the old master may stay up, still a master, for seconds (until
    the sentinels turn it into a replica), and a pooled connection would keep writing there,
    writes that are lost when it resyncs. When the answer changes, redis-py's pool closes its
    idle connections, and each busy one as it is handed back, so the next command goes to the
    new master. The cost: one sentinel round trip per client per interval, not per command.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        # A failed check waits longer: sentinels that are away must not slow every command.
        self.next = now + _FOLLOW_EVERY * 10
        return True

    def checked(self) -> None:
        self.next = time.monotonic() + _FOLLOW_EVERY

    def check(self) -> None:
        if self.due():
            with contextlib.suppress(redis.RedisError):
                self.pool.get_master_address()
                self.checked()

    async def check_async(self) -> None:
        if self.due():
            with contextlib.suppress(redis.RedisError):
                await self.pool.get_master_address()
                self.checked()


class PredictqRedis(redis.Redis):
    """A redis-py client whose connection, auth, URL and protocol errors are RedisUnavailable."""

    where = "redis"
    # The sentinels a Sentinel URL's client asks for the master, closed with it.
    sentinels: Sentinel | None = None
    following: _Following | None = None

    def close(self) -> None:
        super().close()
        if self.sentinels is not None:
            self.sentinels.close()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.following is not None:
            self.following.check()
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except redis.RedisError as e:
            _reraise(e, self.where)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.where = self.where
        pipe.following = self.following
        return pipe

    def pubsub(self, **kwargs: Any) -> PubSub:
        pubsub = super().pubsub(**kwargs)  # type: ignore[no-untyped-call]
        # Its constructor's arguments vary across redis-py versions: re-class the one it built.
        pubsub.__class__ = _PubSub
        pubsub.where = self.where
        return cast(PubSub, pubsub)


def connect(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for ``url``; passwords, ACL users and rediss:// come from the URL.

    ``options`` are redis-py's (``decode_responses=False`` for a client that reads bytes,
    shorter socket timeouts for a watchdog).
    """
    where = redact(url)
    settings = {"decode_responses": True, "health_check_interval": 30,
                "socket_connect_timeout": _CONNECT_TIMEOUT, **options}  # fmt: skip
    if sentinel.is_sentinel(url):
        return _connect_sentinel(url, where, settings)
    try:
        client = cast(PredictqRedis, PredictqRedis.from_url(url, **settings))
    except ValueError as e:
        # The parser names the scheme, port or option that is wrong, never the credentials.
        raise RedisUnavailable(
            f"{where} is not a Redis URL ({e}): use redis://[:PASSWORD@]HOST:PORT/DB, "
            "rediss:// for TLS, unix://PATH, or "
            f"{sentinel.SYNTAX} for Sentinel"
        ) from e
    client.where = where
    return _tracked(client)


def _connect_sentinel(url: str, where: str, settings: dict[str, Any]) -> redis.Redis:
    """A client of the master that the sentinels of ``url`` name, following failovers.

    redis-py's Sentinel pool asks the sentinels for the master before each new connection, and
    drops a connection whose server turned replica (READONLY) with a ConnectionError, which
    the callers' retry loops already handle; the next connection goes to the new master.
    """
    parsed = sentinel.parse(url)
    timeouts = {k: min(v, _SENTINEL_TIMEOUT) for k, v in settings.items()
                if k in ("socket_timeout", "socket_connect_timeout") and v}  # fmt: skip
    timeouts.setdefault("socket_timeout", _SENTINEL_TIMEOUT)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, sentinel_kwargs={**timeouts, **parsed.sentinel_kwargs()}
    )
    client = cast(
        PredictqRedis,
        manager.master_for(  # type: ignore[no-untyped-call]
            parsed.master, redis_class=PredictqRedis, **{**settings, **parsed.master_kwargs()}
        ),
    )
    client.where = where
    client.sentinels = manager
    client.following = _Following(client.connection_pool)
    return _tracked(client)


def connect_async(url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio redis-py client for ``url`` (a Sentinel URL too), for the HTTP gateway."""
    # The sync client's bounds: a Redis that drops packets fails a request within the connect
    # timeout, not the operating system's minutes.
    options = {"health_check_interval": 30, "socket_connect_timeout": _CONNECT_TIMEOUT, **options}
    if not sentinel.is_sentinel(url):
        return redis.asyncio.Redis.from_url(url, **options)
    parsed = sentinel.parse(url)
    timeouts = {k: min(v, _SENTINEL_TIMEOUT) for k, v in options.items()
                if k in ("socket_timeout", "socket_connect_timeout") and v}  # fmt: skip
    timeouts = {"socket_timeout": _SENTINEL_TIMEOUT,
                "socket_connect_timeout": _SENTINEL_TIMEOUT, **timeouts}  # fmt: skip
    manager = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, sentinel_kwargs={**timeouts, **parsed.sentinel_kwargs()}
    )
    client = cast(
        _FollowingAsyncRedis,
        manager.master_for(
            parsed.master, redis_class=_FollowingAsyncRedis,
            **{**options, **parsed.master_kwargs()},
        ),
    )  # fmt: skip
    client.following = _Following(client.connection_pool)
    return client


class _FollowingAsyncRedis(redis.asyncio.Redis):
    """The asyncio client of a Sentinel URL: follows a new master as PredictqRedis does."""

    following: _Following | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.following is not None:
            await self.following.check_async()
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
