"""API keys: parsing them from settings, and checking a request's key and scopes."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from registry import Forbidden, InvalidSettings, Settings, Unauthorized

Scope = Literal["submit", "read", "admin"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: safe in an HTTP header
ANONYMOUS = "anonymous"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from PREDICTQ_API_KEYS or PREDICTQ_API_KEYS_FILE, sent as "
    "`Authorization: Bearer <key>`.",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (never the key) and what it may do."""

    name: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """``admin`` is a superset: it may do everything the other scopes allow."""
        return self.admin or scope in self.scopes


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


def _digest(key: str) -> bytes:
    # Keys are compared as fixed-length digests, so the comparison's time leaks no length.
    return hashlib.sha256(key.encode()).digest()


def parse_keys(lines: Iterable[str], source: str) -> list[tuple[str, str, frozenset[str]]]:
    """(name, key, scopes) from ``name:key:scope+scope`` entries; the message never shows a key."""
    parsed = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        where = f"{source} entry {number}"
        if len(parts) != 3:
            raise InvalidSettings(
                f"{where} has {len(parts)} ':'-separated parts: write name:key:scope+scope"
            )
        name, key, scope_text = (p.strip() for p in parts)
        if not _NAME.fullmatch(name):
            raise InvalidSettings(f"{where}: name {name!r} must be 1-64 letters, digits, _ . -")
        if len(key) < MIN_KEY_LENGTH or not _KEY.fullmatch(key):
            raise InvalidSettings(
                f"{where} ({name}): the key must be at least {MIN_KEY_LENGTH} printable "
                "characters without spaces, ':' or ','; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip())
        unknown = sorted(scopes - SCOPES)
        if not scopes or unknown:
            raise InvalidSettings(
                f"{where} ({name}): scopes must be some of {sorted(SCOPES)} joined by '+', "
                f"got {scope_text!r}"
            )
        parsed.append((name, key, scopes))
    return parsed


class KeyRing:
    """The configured API keys, held as digests."""

    def __init__(self, entries: Iterable[tuple[str, str, frozenset[str]]]) -> None:
        self._entries: list[_Entry] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for name, key, scopes in entries:
            digest = _digest(key)
            if name in names or digest in digests:
                raise InvalidSettings(f"API key {name!r} repeats a name or a key: make each unique")
            names.add(name)
            digests.add(digest)
            self._entries.append(_Entry(Principal(name, scopes), digest))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Keys from ``api_keys`` and ``api_keys_file``; InvalidSettings when none is usable."""
        entries = []
        if settings.api_keys is not None:
            text = settings.api_keys.get_secret_value()
            entries += parse_keys(text.split(","), "PREDICTQ_API_KEYS")
        if settings.api_keys_file is not None:
            try:
                lines = settings.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise InvalidSettings(
                    f"cannot read PREDICTQ_API_KEYS_FILE {settings.api_keys_file}: {e.strerror}"
                ) from e
            entries += parse_keys(lines, str(settings.api_keys_file))
        if not entries and not settings.api_insecure_no_auth:
            raise InvalidSettings(
                "no API keys configured: set PREDICTQ_API_KEYS or PREDICTQ_API_KEYS_FILE "
                "(name:key:scope+scope), or run `predictq api --insecure-no-auth` for local "
                "development only"
            )
        return cls(entries)

    @property
    def open(self) -> bool:
        """Whether no keys are configured (only allowed with api_insecure_no_auth)."""
        return not self._entries

    def authenticate(self, key: str | None) -> Principal:
        """The principal of ``key``; Unauthorized when it is missing or unknown."""
        if self.open:
            return Principal(ANONYMOUS, SCOPES)
        if not key:
            raise Unauthorized("no API key: send it as `Authorization: Bearer <key>`")
        digest = _digest(key)
        found = None
        # Every entry is compared, so the time taken does not tell which one matched.
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthorized("the API key is not valid: check PREDICTQ_API_KEYS on the server")
        return found


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, which must hold ``scope``."""

    # Async: it does no I/O, so it need not hop to the threadpool as a sync dependency would.
    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> Principal:
        ring: KeyRing = request.app.state.keys
        return allowed(ring, credentials.credentials if credentials else None, scope)

    return dependency


def allowed(ring: KeyRing, key: str | None, scope: str) -> Principal:
    """The principal of ``key``, which must hold ``scope`` (Unauthorized, Forbidden)."""
    principal = ring.authenticate(key)
    if not principal.allows(scope):
        raise Forbidden(
            f"API key {principal.name!r} lacks the {scope!r} scope this operation needs"
        )
    return principal
