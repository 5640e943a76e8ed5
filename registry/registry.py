"""The model registry: versions, aliases and promotion history in Redis, artifacts in the store."""

from __future__ import annotations

import getpass
import json
import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from . import formats, keys, scripts
from .connection import connect, resolve_url
from .errors import (
    IncompatibleSchema,
    InvalidInput,
    ModelNotFound,
    NothingToRollBack,
    PredictqError,
    SchemaWarning,
    VersionConflict,
)
from .models import ModelVersion, PromotionEvent
from .modules import require_importable, unimportable
from .names import check_name
from .schema import Column, incompatibilities
from .settings import Settings, get_settings
from .signature import current_environment, signature_of
from .store import Tombstone, open_store

DEFAULT_ALIAS = "production"
# Schema checks a promotion makes before it gives up on an alias that keeps moving under it.
_PROMOTE_TRIES = 5


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
        if artifact_dir:
            self.settings = self.settings.model_copy(update={"artifact_dir": str(artifact_dir)})
        self.store = open_store(self.settings.artifact_location, self.settings.artifact_cache)
        self._promote = self.redis.register_script(scripts.PROMOTE)
        self._rollback = self.redis.register_script(scripts.ROLLBACK)
        self._raise_seq = self.redis.register_script(scripts.RAISE_SEQ)
        self._retire = self.redis.register_script(scripts.RETIRE)

    def _actor(self, actor: str | None = None) -> str:
        """Who the history records: the caller's name (an API key's, over HTTP), else
        PREDICTQ_ACTOR, else user@host."""
        return actor or self.settings.actor or f"{getpass.getuser()}@{socket.gethostname()}"

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
        input_example: Any = None,
        input_columns: Sequence[Column] | None = None,
    ) -> ModelVersion:
        """Store a fitted estimator (or a joblib or .skops file) as the next version of ``name``.

        ``format`` is "joblib" (the default for estimators) or "skops" (loads only allowed
        types); a file's format follows its extension. ``input_example`` (a pandas DataFrame or
        a list of records, a few rows the model takes) types the input columns; without it
        they are typed from what the fitted estimator tells (see registry/schema.py), and a
        SchemaWarning says when that is not enough. ``input_columns`` (an MLflow signature's)
        type them when no example does; see ``import_mlflow``.
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
            estimator = _load_to_register(path, data, fmt, trusted, name)
            sig, notes = signature_of(estimator, input_example, declared=input_columns)
        else:
            fmt = format or "joblib"
            sig, notes = signature_of(estimator_or_path, input_example, declared=input_columns)
            data = formats.dumps(estimator_or_path, fmt, trusted)
            modules = require_importable(data, fmt, name)
        for note in notes:
            warnings.warn(f"{name}: {note}", SchemaWarning, stacklevel=2)
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
        if not self.store.has_blob(sha):
            # A concurrent delete of the last other version with these bytes collected the
            # blob between our write and our manifest: write it again.
            self.store.put_bytes(data)
        pipe = self.redis.pipeline()
        pipe.hset(keys.model_versions(name), str(version), meta.model_dump_json())
        pipe.sadd(keys.MODELS, name)
        pipe.execute()
        if promote:
            self.promote(name, version, alias=alias)
        return meta

    def import_mlflow(
        self,
        name: str,
        source: str,
        *,
        promote: bool = False,
        alias: str = DEFAULT_ALIAS,
        tracking_uri: str | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Register an MLflow scikit-learn model (a directory, ``runs:/`` or ``models:/`` URI)
        as the next version of ``name``; see registry/mlflow.py. Needs ``predictq[mlflow]``."""
        from .mlflow import import_mlflow  # MLflow is optional: imported only when used

        return import_mlflow(
            self, name, source, promote=promote, alias=alias, tracking_uri=tracking_uri,
            description=description, tags=tags,
        )  # fmt: skip

    def promote(
        self,
        name: str,
        version: int,
        alias: str = DEFAULT_ALIAS,
        *,
        actor: str | None = None,
        force: bool = False,
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` atomically, record it and tell the workers.

        Refused (IncompatibleSchema) when the version's input schema is incompatible with the
        one of the version the alias serves now: its callers would be refused, or worse, have
        list rows read into the wrong columns. ``force`` promotes anyway. ``actor`` is who the
        history records (default: PREDICTQ_ACTOR, else user@host).
        """
        check_name(name)
        check_name(alias, "alias")
        meta = self.get(name, version=version)
        for _ in range(_PROMOTE_TRIES):
            checked = "" if force else self._check_schema(meta, alias)
            event = self._promote(
                keys=self._alias_keys(name, alias),
                args=[alias, version, self._actor(actor), _now().isoformat(), keys.EVENTS, name,
                      keys.STACK_LIMIT, keys.HISTORY_LIMIT, checked],
            )  # fmt: skip
            if event != "moved":
                break
        else:
            raise VersionConflict(
                f"{name}'s alias {alias!r} kept moving while v{version} was being promoted: "
                "try again",
                model=name,
                version=version,
            )
        if event is None:
            raise ModelNotFound(f"{name} has no version {version}", model=name, version=version)
        if event == "archived":
            raise VersionConflict(
                f"{name} v{version} is archived: unarchive it first with "
                f"`predictq models unarchive {name} {version}`, or promote another version",
                model=name,
                version=version,
            )
        if event:
            self._persist(name, event)
        return meta

    def _check_schema(self, meta: ModelVersion, alias: str) -> str:
        """The version ``alias`` serves now ("-": none), after checking that ``meta``'s input
        schema is compatible with it; IncompatibleSchema when it is not."""
        current = self.redis.hget(keys.model_aliases(meta.name), alias)
        if current is None:
            return "-"
        if int(current) == meta.version:
            return str(current)
        try:
            served = self.get(meta.name, version=int(current))
        except ModelNotFound:
            # Replaced and deleted since the alias was read: PROMOTE will say it moved.
            return str(current)
        found = incompatibilities(served.signature.input_schema, meta.signature.input_schema)
        if found:
            raise IncompatibleSchema(
                f"{meta.name} v{meta.version} takes different input from v{served.version}, "
                f"which {alias!r} serves: {'; '.join(found)}. Its callers would be refused or "
                "misread; change them first, then promote with --force (force=True)",
                model=meta.name,
                version=meta.version,
            )
        return str(current)

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, *, actor: str | None = None
    ) -> ModelVersion:
        """Point ``alias`` back at the version it had before its last promotion."""
        check_name(name)
        check_name(alias, "alias")
        self._require_model(name)
        event = self._rollback(
            keys=self._alias_keys(name, alias),
            args=[alias, self._actor(actor), _now().isoformat(), keys.EVENTS, name,
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

    def archive(self, name: str, version: int, *, actor: str | None = None) -> ModelVersion:
        """Keep ``version`` for audit but never serve it; refused while an alias serves it.

        It leaves every rollback stack (unarchiving does not put it back). Jobs pinned to it
        are refused at submission and fail in the worker.
        """
        meta = self.get(name, version=version)
        if meta.archived:
            return meta
        who = self._actor(actor)
        meta = meta.model_copy(update={"archived_at": _now(), "archived_by": who})
        self._change(meta, "archive", who)
        self.store.update(meta)
        return meta

    def unarchive(self, name: str, version: int, *, actor: str | None = None) -> ModelVersion:
        """Make an archived ``version`` servable again (promotable, and for pinned jobs)."""
        meta = self.get(name, version=version)
        if not meta.archived:
            return meta
        meta = meta.model_copy(update={"archived_at": None, "archived_by": None})
        self._change(meta, "unarchive", self._actor(actor))
        self.store.update(meta)
        return meta

    def delete(self, name: str, version: int, *, actor: str | None = None) -> ModelVersion:
        """Remove ``version``: from Redis, its manifest (a tombstone keeps its number taken) and
        its artifact when no other version of any model has the same bytes.

        Refused while an alias serves it. It leaves every rollback stack, and workers stop
        serving it to pinned jobs.
        """
        meta = self.get(name, version=version)
        who = self._actor(actor)
        self._change(meta, "delete", who)
        self.store.bury(Tombstone(name=name, version=version, sha256=meta.sha256,
                                  deleted_at=_now(), deleted_by=who))  # fmt: skip
        self.store.remove_blob(meta.sha256)
        return meta

    def _change(self, meta: ModelVersion, action: str, who: str) -> None:
        """Archive, unarchive or delete ``meta`` in Redis atomically, record it, tell workers."""
        name, version = meta.name, meta.version
        event = PromotionEvent(action=action, alias=None, from_version=None,
                               to_version=version, who=who, at=_now())  # fmt: skip
        notice = json.dumps({"model": name, "version": version, "action": action})
        result = self._retire(
            keys=[keys.model_versions(name), keys.model_aliases(name), keys.model_history(name)],
            args=[version, "" if action == "delete" else meta.model_dump_json(),
                  event.model_dump_json(), keys.EVENTS, notice, keys.HISTORY_LIMIT,
                  keys.model_stack(name, "")],
        )  # fmt: skip
        if result is None:
            raise ModelNotFound(f"{name} has no version {version}", model=name, version=version)
        if isinstance(result, list):
            served = sorted(str(a) for a in result)
            names = " and ".join(map(repr, served))
            several = len(served) > 1
            raise VersionConflict(
                f"cannot {action} {name} v{version}: alias{'es' if several else ''} {names} "
                f"serve{'' if several else 's'} it; point {'each' if several else 'it'} at "
                f"another version first with `predictq models promote {name} VERSION --alias "
                f"{served[0]}` or `predictq models rollback {name} --alias {served[0]}`",
                model=name,
                version=version,
            )
        self.store.append_history(name, event)

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
            tomb = self.store.tombstone(name, version)
            if tomb is not None:
                raise ModelNotFound(
                    f"{name} v{version} was deleted ({tomb.deleted_at:%Y-%m-%d %H:%M} by "
                    f"{tomb.deleted_by}): pin another version, or use an alias; see "
                    f"`predictq models show {name}`",
                    model=name,
                    version=version,
                )
            raise ModelNotFound(
                f"{name} has no version {version}: see `predictq models show {name}`",
                model=name,
                version=version,
            )
        return ModelVersion.model_validate_json(raw)

    def servable(self, name: str, version: int) -> ModelVersion:
        """The metadata of a version jobs may run on; ModelNotFound when deleted or archived."""
        meta = self.get(name, version=version)
        if meta.archived:
            raise ModelNotFound(
                f"{name} v{version} is archived and serves no jobs: pin another version, or "
                f"unarchive it with `predictq models unarchive {name} {version}`",
                model=name,
                version=version,
            )
        return meta

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name`` (archived ones too, not deleted ones), oldest first."""
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
        pipe = self.redis.pipeline()
        for meta in self.store.manifests():
            pipe.hset(keys.model_versions(meta.name), str(meta.version), meta.model_dump_json())
            pipe.sadd(keys.MODELS, meta.name)
            count += 1
        pipe.execute()
        # Deleted versions count too: their tombstones keep their numbers from coming back.
        for name, version in self.store.last_versions().items():
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
            if event.alias is None:
                if event.action in ("archive", "delete"):  # it left every stack (RETIRE)
                    for alias, stack in stacks.items():
                        stacks[alias] = [v for v in stack if v != event.to_version]
                continue
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
