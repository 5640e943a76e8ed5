"""Sentinel URLs: one ``PREDICTQ_REDIS_URL`` naming the sentinels and the master they watch.

The syntax (``rediss+sentinel://`` for TLS to the master, its replicas and the sentinels)::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB][?OPTIONS]

The hosts are the sentinels (port 26379 unless given); ``MASTER`` is the name the sentinels
monitor; ``DB`` the database index (default 0). The user and password are the master's. Options:
``sentinel_password=`` and ``sentinel_username=`` when the sentinels have their own (``requirepass``
in sentinel.conf); ``ssl_ca_certs=``, ``ssl_certfile=``, ``ssl_keyfile=``, ``ssl_cert_reqs=``
with TLS; ``socket_timeout=`` and ``socket_connect_timeout=`` in seconds.

redis-py's Sentinel client asks the sentinels for the master before each new connection and
drops a connection whose server answers READONLY (a demoted master), so every client opened from
such a URL follows a failover. kombu's sentinel transport does the same for Celery's broker: see
:func:`kombu_broker`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from .errors import RedisUnavailable

__all__ = ["SCHEMES", "SYNTAX", "SentinelUrl", "is_sentinel", "kombu_broker", "parse"]

SCHEMES = ("redis+sentinel", "rediss+sentinel")
SYNTAX = "redis+sentinel://[:PASSWORD@]HOST:26379[,HOST:26379...]/MASTER_NAME[/DB]"
DEFAULT_PORT = 26379
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
_OPTIONS = ("sentinel_password", "sentinel_username", *_TLS_OPTIONS, *_TIMEOUTS)


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names sentinels rather than one Redis."""
    return url.partition("://")[0].lower() in SCHEMES


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed Sentinel URL."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    tls_options: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)

    def master_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for connections to the master."""
        out: dict[str, Any] = {"db": self.db, **self.timeouts}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        if self.tls:
            out.update(ssl=True, **self.tls_options)
        return out

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for connections to the sentinels themselves."""
        out: dict[str, Any] = dict(self.timeouts)
        if self.sentinel_username:
            out["username"] = self.sentinel_username
        if self.sentinel_password:
            out["password"] = self.sentinel_password
        if self.tls:
            out.update(ssl=True, **self.tls_options)
        return out


def _bad(what: str) -> RedisUnavailable:
    return RedisUnavailable(
        f"malformed Sentinel URL: {what}; use {SYNTAX} (rediss+sentinel:// for TLS; "
        "?sentinel_password= when the sentinels have a password)"
    )


def _host(text: str) -> tuple[str, int]:
    if text.startswith("["):  # an IPv6 address, [::1]:26379
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise _bad(f"a sentinel has no host ({text!r})")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"sentinel {host} has a bad port ({port!r}): give a number from 1 to 65535")
    return host, int(port)


def parse(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL; RedisUnavailable, one line without the password, when it
    is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _bad(f"the scheme must be {' or '.join(SCHEMES)}")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://PASSWORD@host, as redis-py reads a lone user part
            username, password = None, unquote(user) or None
    if not hosts.strip(","):
        raise _bad("no sentinel hosts")
    sentinels = [_host(h.strip()) for h in hosts.split(",") if h.strip()]
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _bad("no master name (the name the sentinels monitor, after the hosts)")
    if len(parts) > 2:
        raise _bad(f"too many path parts ({'/'.join(parts)!r}): give /MASTER_NAME/DB")
    master = unquote(parts[0])
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _bad(f"the database must be a number, got {parts[1]!r}")
        db = int(parts[1])
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise _bad(f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        options[key] = value
    timeouts: dict[str, float] = {}
    for key in _TIMEOUTS:
        if key in options:
            try:
                timeouts[key] = float(options[key])
            except ValueError:
                raise _bad(f"{key} must be a number of seconds, got {options[key]!r}") from None
    tls = scheme.lower() == "rediss+sentinel"
    tls_options = {k: options[k] for k in _TLS_OPTIONS if k in options}
    if tls_options and not tls:
        raise _bad(f"{', '.join(tls_options)} need TLS: use rediss+sentinel://")
    return SentinelUrl(
        sentinels=sentinels, master=master, db=db, username=username, password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls=tls, tls_options=tls_options, timeouts=timeouts,
    )  # fmt: skip


def kombu_broker(url: str) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Celery's broker URL, transport options and ``broker_use_ssl`` for a Sentinel URL.

    kombu's sentinel transport takes one ``sentinel://`` URL per sentinel joined by ``;`` (the
    first one's password and db are the master's), the master's name as the ``master_name``
    transport option, and the sentinels' own credentials as ``sentinel_kwargs``.
    """
    parsed = parse(url)
    auth = ""
    if parsed.username or parsed.password:
        auth = f"{quote(parsed.username or '', safe='')}:{quote(parsed.password or '', safe='')}@"
    hosts = [f"[{h}]" if ":" in h else h for h, _ in parsed.sentinels]
    broker = ";".join(
        f"sentinel://{auth}{host}:{port}/{parsed.db}"
        for host, (_, port) in zip(hosts, parsed.sentinels, strict=True)
    )
    options: dict[str, Any] = {
        "master_name": parsed.master,
        "sentinel_kwargs": parsed.sentinel_kwargs(),
    }
    use_ssl: dict[str, Any] | None = None
    if parsed.tls:
        import ssl

        reqs = parsed.tls_options.get("ssl_cert_reqs", "required").lower()
        use_ssl = {
            "ssl_cert_reqs": {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
                reqs, ssl.CERT_REQUIRED
            ),
            **{k: v for k, v in parsed.tls_options.items() if k != "ssl_cert_reqs"},
        }
    return broker, options, use_ssl
