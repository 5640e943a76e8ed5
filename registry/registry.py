"""The model registry: versions, aliases and promotion history in Redis, artifacts in the store."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from . import formats, keys, scripts
from .connection import connect, resolve_url
from .errors import InvalidInput, ModelNotFound, NothingToRollBack, PredictqError
from .models import ModelVersion, PromotionEvent
from .modules import require_importable, unimportable
from .names import check_name
from .settings import Settings, get_settings
from .signature import current_environment, signature_of
from .store import ArtifactStore

DEFAULT_ALIAS = "production"


def _now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """Register, promote, roll back and read model versions."""

    def __init__(
        self,
        url: str | None = None,
        *,
        artifact_dir: str | Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.url = resolve_url(url, self.settings)
        self.redis: redis.Redis = connect(self.url)
        root = Path(artifact_dir) if artifact_dir else self.settings.artifact_path
        self.store = ArtifactStore(root, self.settings.cache_dir)
        self._promote = self.redis.register_script(scripts.PROMOTE)
        self._rollback = self.redis.register_script(scripts.ROLLBACK)
        self._raise_seq = self.redis.register_script(scripts.RAISE_SEQ)

    def _actor(self) -> str:
        return self.settings.actor or f"{getpass.getuser()}@{socket.gethostname()}"

    # -- writing ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        estimator_or_path: Any,
        *,
        promote: bool = False,
        alias: str = DEFAULT_ALIAS,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        format: formats.Format | None = None,
    ) -> ModelVersion:
        """Store a fitted estimator (or a joblib or .skops file) as the next version of ``name``.

        ``format`` is "joblib" (the default for estimators) or "skops" (loads only allowed
        types); a file's format follows its extension.
        """
        check_name(name)
        trusted = self.settings.skops_trusted_types
        if isinstance(estimator_or_path, str | os.PathLike):
            path = Path(estimator_or_path)
            fmt = formats.format_of(path)
            data = path.read_bytes()
            modules = require_importable(data, fmt, name)
            # Registering a joblib file unpickles it here, once, to read its signature: only
            # register joblib files you trust. Workers never load an artifact whose hash differs.
            sig = signature_of(_load_to_register(path, data, fmt, trusted, name))
        else:
            fmt = format or "joblib"
            sig = signature_of(estimator_or_path)
            data = formats.dumps(estimator_or_path, fmt, trusted)
            modules = require_importable(data, fmt, name)
        sha, size = self.store.put_bytes(data)
        while True:
            version = int(self.redis.incr(keys.model_seq(name)))
            meta = ModelVersion(
                name=name,
                version=version,
                sha256=sha,
                size=size,
                format=fmt,
                signature=sig,
                environment=current_environment(),
                created_at=_now(),
                created_by=self._actor(),
                description=description,
                tags=dict(tags or {}),
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                modules=modules,
            )
            # The manifest's exclusive create is the durable claim on the number: after Redis
            # lost its counter, INCR simply runs on until it passes every number on disk.
            if self.store.reserve(meta):
                break
        pipe = self.redis.pipeline()
        pipe.hset(keys.model_versions(name), str(version), meta.model_dump_json())
        pipe.sadd(keys.MODELS, name)
        pipe.execute()
        if promote:
            self.promote(name, version, alias=alias)
        return meta

    def promote(self, name: str, version: int, alias: str = DEFAULT_ALIAS) -> ModelVersion:
        """Point ``alias`` at ``version`` atomically, record it and tell the workers."""
        check_name(name)
        check_name(alias, "alias")
        meta = self.get(name, version=version)
        event = self._promote(
            keys=self._alias_keys(name, alias),
            args=[alias, version, self._actor(), _now().isoformat(), keys.EVENTS, name,
                  keys.STACK_LIMIT, keys.HISTORY_LIMIT],
        )  # fmt: skip
        if event is None:
            raise ModelNotFound(f"{name} has no version {version}", model=name, version=version)
        if event:
            self._persist(name, event)
        return meta

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> ModelVersion:
        """Point ``alias`` back at the version it had before its last promotion."""
        check_name(name)
        check_name(alias, "alias")
        self._require_model(name)
        event = self._rollback(
            keys=self._alias_keys(name, alias),
            args=[alias, self._actor(), _now().isoformat(), keys.EVENTS, name,
                  keys.HISTORY_LIMIT],
        )  # fmt: skip
        if not event:
            raise NothingToRollBack(
                f"{name}'s alias {alias!r} has no earlier version to roll back to: "
                f"promote one explicitly with `predictq models promote {name} VERSION`",
                model=name,
            )
        self._persist(name, event)
        return self.get(name, alias=alias)

    def _alias_keys(self, name: str, alias: str) -> list[str]:
        return [
            keys.model_versions(name),
            keys.model_aliases(name),
            keys.model_stack(name, alias),
            keys.model_history(name),
        ]

    def _persist(self, name: str, event_json: str) -> None:
        """Mirror a promotion into the store so that a rebuild can restore aliases."""
        self.store.append_history(name, PromotionEvent.model_validate_json(event_json))
        self.store.save_aliases(name, self.aliases(name))

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Every registered model name, sorted."""
        return sorted(str(m) for m in self.redis.smembers(keys.MODELS))

    def _require_model(self, name: str) -> None:
        if not self.redis.sismember(keys.MODELS, name):
            known = ", ".join(self.models()) or "none yet"
            raise ModelNotFound(
                f"no model named {name!r} (registered: {known}); "
                f"register one with `predictq models register {name} PATH`",
                model=name,
            )

    def aliases(self, name: str) -> dict[str, int]:
        """The alias -> version map of ``name``."""
        raw = self.redis.hgetall(keys.model_aliases(name))
        return {str(a): int(v) for a, v in raw.items()}

    def resolve(self, name: str, alias: str = DEFAULT_ALIAS) -> int:
        """The version ``alias`` points at."""
        version = self.redis.hget(keys.model_aliases(name), alias)
        if version is None:
            self._require_model(name)
            raise ModelNotFound(
                f"{name} has no alias {alias!r}: promote a version with "
                f"`predictq models promote {name} VERSION --alias {alias}`",
                model=name,
            )
        return int(version)

    def get(
        self, name: str, version: int | None = None, alias: str = DEFAULT_ALIAS
    ) -> ModelVersion:
        """A version's metadata: the pinned ``version``, else the one ``alias`` points at."""
        if version is None:
            version = self.resolve(name, alias)
        raw = self.redis.hget(keys.model_versions(name), str(version))
        if raw is None:
            self._require_model(name)
            raise ModelNotFound(
                f"{name} has no version {version}: see `predictq models show {name}`",
                model=name,
                version=version,
            )
        return ModelVersion.model_validate_json(raw)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        raw = self.redis.hgetall(keys.model_versions(name))
        if not raw:
            self._require_model(name)
        found = [ModelVersion.model_validate_json(v) for v in raw.values()]
        return sorted(found, key=lambda m: m.version)

    def history(self, name: str) -> list[PromotionEvent]:
        """The promotion history of ``name``, oldest first."""
        self._require_model(name)
        raw = self.redis.lrange(keys.model_history(name), 0, -1)
        return [PromotionEvent.model_validate_json(e) for e in raw]

    def load(self, meta: ModelVersion) -> Any:
        """The estimator of ``meta``, unpickled only after its SHA-256 matched."""
        data = self.store.read_verified(meta.sha256, model=meta.name, version=meta.version)
        return formats.loads(data, meta.format, self.settings.skops_trusted_types,
                             model=meta.name, version=meta.version)  # fmt: skip

    # -- recovery --------------------------------------------------------------------------

    def rebuild(self) -> int:
        """Restore versions, aliases and history from the artifact store; returns versions seen."""
        count = 0
        top: dict[str, int] = {}
        pipe = self.redis.pipeline()
        for meta in self.store.manifests():
            pipe.hset(keys.model_versions(meta.name), str(meta.version), meta.model_dump_json())
            pipe.sadd(keys.MODELS, meta.name)
            top[meta.name] = max(top.get(meta.name, 0), meta.version)
            count += 1
        pipe.execute()
        for name, version in top.items():
            self._raise_seq(keys=[keys.model_seq(name)], args=[version])
            self._rebuild_aliases(name)
        return count

    def _rebuild_aliases(self, name: str) -> None:
        aliases = self.store.load_aliases(name)
        if not aliases or self.redis.exists(keys.model_aliases(name)):
            return
        history = self.store.load_history(name)[-keys.HISTORY_LIMIT :]
        stacks: dict[str, list[int]] = {}
        for event in history:
            stack = stacks.setdefault(event.alias, [])
            if event.action == "rollback":
                if stack:
                    stack.pop()
            elif event.from_version is not None:
                stack.append(event.from_version)
        pipe = self.redis.pipeline()
        pipe.hset(keys.model_aliases(name), mapping={a: str(v) for a, v in aliases.items()})
        for alias, stack in stacks.items():
            if stack:
                pipe.rpush(keys.model_stack(name, alias), *stack[-keys.STACK_LIMIT :])
        if history:
            pipe.rpush(keys.model_history(name), *(e.model_dump_json() for e in history))
        pipe.execute()


def _load_to_register(
    path: Path, data: bytes, fmt: formats.Format, trusted: list[str], name: str
) -> Any:
    """The estimator in a file being registered; any failure is one line naming the file."""
    try:
        return formats.loads(data, fmt, trusted, model=name, version=0)
    except PredictqError:
        raise
    except ImportError as e:  # a module the opcodes did not name, or that fails to import
        raise unimportable(e.name or str(e), name) from e
    except Exception as e:  # a broken or foreign file raises anything at all
        raise InvalidInput(
            f"{path} could not be loaded as a {fmt} artifact ({type(e).__name__}: {e}): "
            "save the fitted estimator with joblib.dump (or skops.io.dump for .skops files)",
            model=name,
        ) from e
