"""The artifact store: content-addressed blobs plus JSON manifests, the registry's durable copy.

Layout under the root (a local directory or a shared mount: this module; an object-store URL
such as ``s3://bucket/prefix``: registry/object_store.py)::

    blobs/ab/abcdef...           artifact bytes, named by their SHA-256
    models/{name}/{version}.json ModelVersion manifest, created exclusively: it reserves the
                                 number; a tombstone once the version is deleted, so that the
                                 number stays taken
    models/{name}/aliases.json   last known alias -> version map
    models/{name}/history.jsonl  promotion history, one event per line (in a bucket, which
                                 cannot append: one object per event under history.jsonl.d/)

Redis holds the live copy; everything here is enough to rebuild it after Redis is lost.
The store's logic is written once over a few primitives on keys (``models/x/1.json``), which
the object store overrides.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ValidationError

from .artifact_cache import VerifiedCache
from .errors import IntegrityError, ModelNotFound
from .models import ModelVersion, PromotionEvent

__all__ = ["ArtifactStore", "Tombstone", "is_remote", "open_store", "sha256_of"]

log = logging.getLogger(__name__)


class Tombstone(BaseModel):
    """What is left of a deleted version's manifest: enough to say so, and to keep its number."""

    name: str
    version: int
    sha256: str
    deleted_at: datetime
    deleted_by: str


def _is_tombstone(data: object) -> bool:
    return isinstance(data, dict) and "deleted_at" in data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-store URL (s3://, gs://, az://...), not a directory."""
    return "://" in location and not location.startswith("file://")


def open_store(location: str, cache_dir: Path | None = None) -> ArtifactStore:
    """The store at ``location``: a directory, or an object-store URL read through fsspec."""
    if is_remote(location):
        from .object_store import ObjectStore

        return ObjectStore(location, cache_dir)
    return ArtifactStore(Path(location.removeprefix("file://")), cache_dir)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def _manifest_key(name: str, version: int) -> str:
    return f"models/{name}/{version}.json"


class ArtifactStore:
    """Content-addressed artifact blobs and version manifests in one directory tree."""

    def __init__(self, root: Path, cache_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.cache = VerifiedCache(Path(cache_dir)) if cache_dir else None

    @property
    def location(self) -> str:
        """Where the store is, as PREDICTQ_ARTIFACT_DIR names it."""
        return str(self.root)

    # -- primitives on keys: a local directory here, overridden by the object store ---------

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Where the object store turns its backend's failures into ArtifactUnavailable."""
        return contextlib.nullcontext()

    def _read(self, key: str) -> bytes | None:
        """The bytes at ``key``, None when there is none."""
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def _read_many(self, keys: list[str]) -> dict[str, bytes]:
        """The bytes at each of ``keys`` that exist (a bucket fetches them concurrently)."""
        found = {}
        for key in keys:
            try:
                data = self._read(key)
            except OSError as e:  # unreadable: skipped like a malformed one
                log.warning("skipping unreadable %s: %s", key, e)
                continue
            if data is not None:
                found[key] = data
        return found

    def _write(self, key: str, data: bytes) -> None:
        """Replace ``key`` atomically: a reader sees the old bytes or the new, never a part."""
        _atomic_write(self.root / key, data)

    def _create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False when it does."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True

    def _exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def _move(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst``; False when ``src`` is gone."""
        try:
            os.rename(self.root / src, self.root / dst)
        except FileNotFoundError:
            return False
        return True

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def _numbered(self) -> list[tuple[str, int]]:
        """(model, version) of every manifest or tombstone: the files named by a number."""
        paths = sorted((self.root / "models").glob("*/*.json"))
        return [(p.parent.name, int(p.stem)) for p in paths if p.stem.isdigit()]

    def _append(self, key: str, line: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _lines(self, key: str) -> list[str]:
        data = self._read(key)
        return data.decode().splitlines() if data is not None else []

    def _open(self, key: str) -> BinaryIO:
        """A stream of the bytes at ``key`` (FileNotFoundError when there are none)."""
        return open(self.root / key, "rb")

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """The file of a blob in a local store."""
        return self.root / _blob_key(sha256)

    def has_blob(self, sha256: str) -> bool:
        return self._exists(_blob_key(sha256))

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` under its SHA-256; returns (sha256, size)."""
        sha = sha256_of(data)
        self._write(_blob_key(sha), data)
        return sha, len(data)

    def _missing(self, model: str, version: int) -> ModelNotFound:
        return ModelNotFound(
            f"artifact of {model} v{version} is missing from the store at {self.location}: "
            "point PREDICTQ_ARTIFACT_DIR at the store it was registered in",
            model=model,
            version=version,
        )

    def read_verified(self, sha256: str, *, model: str, version: int) -> bytes:
        """The artifact's bytes, only after their SHA-256 matched the registry's."""
        if self.cache is not None:
            try:
                with self._errors("download from"):
                    return self.cache.read(
                        sha256, lambda: self._open(_blob_key(sha256)),
                        origin=self.location, model=model, version=version,
                    )  # fmt: skip
            except FileNotFoundError as e:
                raise self._missing(model, version) from e
        data = self._read(_blob_key(sha256))
        if data is None:
            raise self._missing(model, version)
        actual = sha256_of(data)
        if actual != sha256:
            raise IntegrityError(
                f"artifact of {model} v{version} has SHA-256 {actual[:12]}..., the registry "
                f"recorded {sha256[:12]}...; it was not loaded. Re-register the model from a "
                "trusted copy",
                model=model,
                version=version,
            )
        return data

    def referenced(self, sha256: str) -> bool:
        """Whether any version of any model still uses the blob ``sha256``."""
        return any(meta.sha256 == sha256 for meta in self.manifests())

    def remove_blob(self, sha256: str) -> None:
        """Delete a blob (and this host's cached copy) once no manifest references it.

        A registration of the same bytes may run meanwhile: it writes the blob, then its
        manifest, then checks the blob is still there. Here the blob is first moved aside,
        then the manifests are read again: one that appeared puts it back. Whichever order
        the two run in, a manifest never ends up without its blob. (In a bucket a move is a
        copy then a delete; the blob's key still disappears before the second read, which is
        all the argument needs, and S3 lists and reads are strongly consistent.)
        """
        if self.referenced(sha256):
            return
        blob = _blob_key(sha256)
        aside = f"blobs/{sha256[:2]}/.deleting-{sha256}-{os.getpid()}-{os.urandom(4).hex()}"
        if not self._move(blob, aside):
            return
        if self.referenced(sha256) and not self._exists(blob):
            self._move(aside, blob)
        else:
            self._delete(aside)
        if self.cache is not None:
            self.cache.discard(sha256)

    # -- manifests ---------------------------------------------------------------------------

    def reserve(self, meta: ModelVersion) -> bool:
        """Write ``meta``'s manifest exclusively; False when that version number is taken."""
        return self._create(_manifest_key(meta.name, meta.version),
                            meta.model_dump_json(indent=2).encode())  # fmt: skip

    def manifests(self) -> Iterator[ModelVersion]:
        """Every readable version manifest in the store (tombstones left out)."""
        found = self._read_many([_manifest_key(n, v) for n, v in self._numbered()])
        for key, raw in found.items():
            try:
                if _is_tombstone(json.loads(raw)):
                    continue
                yield ModelVersion.model_validate_json(raw)
            except (ValueError, ValidationError) as e:
                log.warning("skipping unreadable manifest %s: %s", key, e)

    def last_versions(self) -> dict[str, int]:
        """The highest version number each model has taken, deleted versions included."""
        top: dict[str, int] = {}
        for name, version in self._numbered():
            top[name] = max(top.get(name, 0), version)
        return top

    def update(self, meta: ModelVersion) -> None:
        """Rewrite the manifest of a version (to record that it was archived), unless it was
        deleted meanwhile: a tombstone is never turned back into a manifest."""
        if self.tombstone(meta.name, meta.version) is not None:
            return
        self._write(_manifest_key(meta.name, meta.version),
                    meta.model_dump_json(indent=2).encode())  # fmt: skip

    def bury(self, tombstone: Tombstone) -> None:
        """Replace a version's manifest with its tombstone; the file keeps the number reserved."""
        self._write(_manifest_key(tombstone.name, tombstone.version),
                    tombstone.model_dump_json(indent=2).encode())  # fmt: skip

    def tombstone(self, name: str, version: int) -> Tombstone | None:
        """The tombstone of a deleted version, if it is one."""
        raw = self._read(_manifest_key(name, version))
        try:
            data = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        if not _is_tombstone(data):
            return None
        try:
            return Tombstone.model_validate(data)
        except ValidationError:
            return None

    # -- aliases and history -----------------------------------------------------------------

    def save_aliases(self, name: str, aliases: dict[str, int]) -> None:
        self._write(f"models/{name}/aliases.json", json.dumps(aliases).encode())

    def load_aliases(self, name: str) -> dict[str, int]:
        raw = self._read(f"models/{name}/aliases.json")
        if raw is None:
            return {}
        return {str(k): int(v) for k, v in json.loads(raw).items()}

    def append_history(self, name: str, event: PromotionEvent) -> None:
        self._append(f"models/{name}/history.jsonl", event.model_dump_json())

    def load_history(self, name: str) -> list[PromotionEvent]:
        lines = self._lines(f"models/{name}/history.jsonl")
        return [PromotionEvent.model_validate_json(line) for line in lines if line.strip()]
