"""``predictq models follow``: keep a predictq alias in step with an MLflow alias.

Every interval the follower asks MLflow which version its alias (``models:/NAME@champion``)
names. A version not imported yet is imported once (found again by its ``mlflow.model_name``
and ``mlflow.model_version`` tags; a Redis marker keeps two followers from importing it at the
same time), then promoted; workers hot-swap on the promotion as on any other. A promotion the
registry refuses (an incompatible input schema, an archived version) is logged once and tried
again each interval while the old version keeps serving. MLflow or Redis being down is logged
and retried: the follower never exits on its own.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import redis

from . import keys
from .errors import InvalidInput, ModelNotFound, PredictqError, SchemaWarning, VersionConflict
from .mlflow import (
    MODEL_TAG,
    VERSION_TAG,
    import_mlflow,
    mlflow_client,
    mlflow_errors,
    parse_source,
)
from .models import ModelVersion
from .registry import DEFAULT_ALIAS, Registry

__all__ = ["Follower", "find_imported"]

log = logging.getLogger("predictq.follow")

# How long one follower may hold the import of a version before another may take it over:
# past any sane download and registration, short enough that a crashed follower's import is
# retried by another within minutes.
IMPORT_LEASE = 600


def find_imported(
    registry: Registry, name: str, mlflow_name: str, mlflow_version: str
) -> ModelVersion | None:
    """The newest version of ``name`` imported from MLflow ``mlflow_name`` v``mlflow_version``."""
    try:
        versions = registry.versions(name)
    except ModelNotFound:
        return None
    wanted = {MODEL_TAG: mlflow_name, VERSION_TAG: mlflow_version}
    found = [m for m in versions if all(m.tags.get(k) == v for k, v in wanted.items())]
    return found[-1] if found else None


class Follower:
    """One predictq alias following one MLflow alias; ``step`` once, or ``run`` until stopped."""

    def __init__(
        self,
        name: str,
        source: str,
        *,
        alias: str = DEFAULT_ALIAS,
        interval: float = 30.0,
        tracking_uri: str | None = None,
        registry: Callable[[], Registry] = Registry,
    ) -> None:
        parsed = parse_source(source)
        if parsed.model_name is None or parsed.alias is None:
            raise InvalidInput(
                f"--mlflow {source!r} names no MLflow alias: follow models:/NAME@ALIAS "
                "(to import one fixed version, use `predictq models import`)"
            )
        if interval <= 0:
            raise InvalidInput(f"--interval must be more than 0 seconds, not {interval}")
        self.name, self.alias, self.interval = name, alias, interval
        self.mlflow_name, self.mlflow_alias = parsed.model_name, parsed.alias
        self.tracking_uri = tracking_uri
        self._make_registry = registry
        self._registry: Registry | None = None
        self._refused: tuple[int, str] | None = None  # the refusal logged last, not repeated

    @property
    def followed(self) -> str:
        return f"models:/{self.mlflow_name}@{self.mlflow_alias}"

    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._make_registry()
        return self._registry

    def step(self) -> ModelVersion | None:
        """Import and promote what the MLflow alias names now, unless done; the version the
        predictq alias serves afterwards (None while another follower imports it)."""
        with mlflow_errors(f"alias {self.followed}", model=self.name):
            mv = mlflow_client(self.tracking_uri).get_model_version_by_alias(
                self.mlflow_name, self.mlflow_alias
            )
        version = str(mv.version)
        reg = self.registry()
        meta = find_imported(reg, self.name, self.mlflow_name, version)
        if meta is None:
            meta = self._import_once(reg, version)
            if meta is None:
                return None
        if reg.aliases(self.name).get(self.alias) == meta.version:
            return meta
        try:
            reg.promote(self.name, meta.version, alias=self.alias)
        except VersionConflict as e:  # IncompatibleSchema too: keep serving what serves now
            if self._refused != (meta.version, e.message):
                self._refused = (meta.version, e.message)
                log.warning("not promoting %s v%d (MLflow %s v%s) to %r: %s; retrying every %gs",
                            self.name, meta.version, self.mlflow_name, version, self.alias,
                            " ".join(e.message.split()), self.interval)  # fmt: skip
            return None
        self._refused = None
        log.info("promoted %s v%d to %r (MLflow %s is %s v%s)", self.name, meta.version,
                 self.alias, self.followed, self.mlflow_name, version)  # fmt: skip
        return meta

    def _import_once(self, reg: Registry, version: str) -> ModelVersion | None:
        """Import MLflow ``version`` unless another follower holds its import marker."""
        marker = keys.mlflow_import(self.name, self.mlflow_name, version)
        token = secrets.token_hex(8)
        if not reg.redis.set(marker, token, nx=True, ex=IMPORT_LEASE):
            log.info("another follower is importing MLflow %s v%s into %s; waiting",
                     self.mlflow_name, version, self.name)  # fmt: skip
            return None
        try:
            # It may have finished between our look and our marker.
            meta = find_imported(reg, self.name, self.mlflow_name, version)
            if meta is not None:
                return meta
            log.info("MLflow %s names %s v%s: importing it into %s", self.followed,
                     self.mlflow_name, version, self.name)  # fmt: skip
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SchemaWarning)
                meta = import_mlflow(
                    reg, self.name, f"models:/{self.mlflow_name}/{version}",
                    tracking_uri=self.tracking_uri, tags={"mlflow.alias": self.mlflow_alias},
                )  # fmt: skip
            for warning in caught:  # one log line each, not Python's two-line warning
                log.warning("%s: %s", warning.category.__name__,
                            " ".join(str(warning.message).split()))  # fmt: skip
            log.info("imported MLflow %s v%s as %s v%d (sha256 %s...)", self.mlflow_name,
                     version, self.name, meta.version, meta.sha256[:12])  # fmt: skip
            return meta
        finally:
            if reg.redis.get(marker) == token:
                reg.redis.delete(marker)

    def run(self, stop: threading.Event, *, heartbeat: Path | None = None) -> None:
        """``step`` every interval until ``stop`` is set; every failure is logged and retried.

        ``heartbeat`` is touched after each check, failed or not: a container health check
        reads its age to tell a running loop from a stuck one.
        """
        log.info("following MLflow %s into %s %r every %gs", self.followed, self.name,
                 self.alias, self.interval)  # fmt: skip
        while not stop.is_set():
            try:
                self.step()
            except PredictqError as e:
                log.warning("%s: %s; retrying in %gs", e.code, " ".join(e.message.split()),
                            self.interval)  # fmt: skip
            except redis.RedisError as e:
                log.warning("redis_unavailable: %s; retrying in %gs", e, self.interval)
            except Exception as e:  # never crash: the alias keeps serving, the next try may work
                log.error("unexpected %s: %s; retrying in %gs", type(e).__name__,
                          " ".join(str(e).split())[:500], self.interval)  # fmt: skip
            if heartbeat is not None:
                with contextlib.suppress(OSError):
                    heartbeat.touch()
            stop.wait(self.interval)
        log.info("stopped following MLflow %s", self.followed)
