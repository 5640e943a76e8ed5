"""The artifact store: content-addressed blobs plus JSON manifests, the registry's durable copy.

Layout under the root directory (a local path, or a mount shared by every worker host)::

    blobs/ab/abcdef...           artifact bytes, named by their SHA-256
    models/{name}/{version}.json ModelVersion manifest, created exclusively: it reserves the
                                 number; a tombstone once the version is deleted, so that the
                                 number stays taken
    models/{name}/aliases.json   last known alias -> version map
    models/{name}/history.jsonl  promotion history, one event per line

Redis holds the live copy; everything here is enough to rebuild it after Redis is lost.
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

from pydantic import BaseModel, ValidationError

from .errors import IntegrityError, ModelNotFound
from .models import ModelVersion, PromotionEvent

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


class ArtifactStore:
    """Content-addressed artifact blobs and version manifests in one directory tree."""

    def __init__(self, root: Path, cache_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` under its SHA-256; returns (sha256, size)."""
        sha = sha256_of(data)
        _atomic_write(self.blob_path(sha), data)
        return sha, len(data)

    def read_verified(self, sha256: str, *, model: str, version: int) -> bytes:
        """The artifact's bytes, only after their SHA-256 matched the registry's."""
        if self.cache_dir is not None:
            cached = self.cache_dir / sha256
            with contextlib.suppress(FileNotFoundError):
                data = cached.read_bytes()
                if sha256_of(data) == sha256:
                    return data
                log.warning("dropping corrupt cached artifact %s", cached)
        try:
            data = self.blob_path(sha256).read_bytes()
        except FileNotFoundError as e:
            raise ModelNotFound(
                f"artifact of {model} v{version} is missing from the store at {self.root}: "
                "point PREDICTQ_ARTIFACT_DIR at the store it was registered in",
                model=model,
                version=version,
            ) from e
        actual = sha256_of(data)
        if actual != sha256:
            raise IntegrityError(
                f"artifact of {model} v{version} has SHA-256 {actual[:12]}..., the registry "
                f"recorded {sha256[:12]}...; it was not loaded. Re-register the model from a "
                "trusted copy",
                model=model,
                version=version,
            )
        if self.cache_dir is not None:
            _atomic_write(self.cache_dir / sha256, data)
        return data

    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def reserve(self, meta: ModelVersion) -> bool:
        """Write ``meta``'s manifest exclusively; False when that version number is taken."""
        path = self._model_dir(meta.name) / f"{meta.version}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(meta.model_dump_json(indent=2))
        except FileExistsError:
            return False
        return True

    def _numbered(self) -> Iterator[Path]:
        """Every manifest or tombstone file: those named by a version number."""
        for path in sorted((self.root / "models").glob("*/*.json")):
            if path.stem.isdigit():
                yield path

    def manifests(self) -> Iterator[ModelVersion]:
        """Every readable version manifest in the store (tombstones left out)."""
        for path in self._numbered():
            try:
                raw = path.read_bytes()
                if _is_tombstone(json.loads(raw)):
                    continue
                yield ModelVersion.model_validate_json(raw)
            except (OSError, ValueError, ValidationError) as e:
                log.warning("skipping unreadable manifest %s: %s", path, e)

    def last_versions(self) -> dict[str, int]:
        """The highest version number each model has taken, deleted versions included."""
        top: dict[str, int] = {}
        for path in self._numbered():
            name = path.parent.name
            top[name] = max(top.get(name, 0), int(path.stem))
        return top

    def update(self, meta: ModelVersion) -> None:
        """Rewrite the manifest of a version (to record that it was archived), unless it was
        deleted meanwhile: a tombstone is never turned back into a manifest."""
        if self.tombstone(meta.name, meta.version) is not None:
            return
        _atomic_write(self._model_dir(meta.name) / f"{meta.version}.json",
                      meta.model_dump_json(indent=2).encode())  # fmt: skip

    def bury(self, tombstone: Tombstone) -> None:
        """Replace a version's manifest with its tombstone; the file keeps the number reserved."""
        path = self._model_dir(tombstone.name) / f"{tombstone.version}.json"
        _atomic_write(path, tombstone.model_dump_json(indent=2).encode())

    def tombstone(self, name: str, version: int) -> Tombstone | None:
        """The tombstone of a deleted version, if it is one."""
        try:
            data = json.loads((self._model_dir(name) / f"{version}.json").read_bytes())
        except (OSError, ValueError):
            return None
        if not _is_tombstone(data):
            return None
        try:
            return Tombstone.model_validate(data)
        except ValidationError:
            return None

    def referenced(self, sha256: str) -> bool:
        """Whether any version of any model still uses the blob ``sha256``."""
        return any(meta.sha256 == sha256 for meta in self.manifests())

    def remove_blob(self, sha256: str) -> None:
        """Delete a blob (and this host's cached copy) once no manifest references it.

        A registration of the same bytes may run meanwhile: it writes the blob, then its
        manifest, then checks the blob is still there. Here the blob is first moved aside,
        then the manifests are read again: one that appeared puts it back. Whichever order
        the two run in, a manifest never ends up without its blob.
        """
        if self.referenced(sha256):
            return
        blob = self.blob_path(sha256)
        aside = blob.with_name(f".deleting-{sha256}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.rename(blob, aside)
        except FileNotFoundError:
            return
        if self.referenced(sha256) and not blob.exists():
            os.rename(aside, blob)
        else:
            aside.unlink()
        if self.cache_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.cache_dir / sha256).unlink()

    def save_aliases(self, name: str, aliases: dict[str, int]) -> None:
        _atomic_write(self._model_dir(name) / "aliases.json", json.dumps(aliases).encode())

    def load_aliases(self, name: str) -> dict[str, int]:
        try:
            data = json.loads((self._model_dir(name) / "aliases.json").read_bytes())
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def append_history(self, name: str, event: PromotionEvent) -> None:
        path = self._model_dir(name) / "history.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(event.model_dump_json() + "\n")

    def load_history(self, name: str) -> list[PromotionEvent]:
        try:
            lines = (self._model_dir(name) / "history.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [PromotionEvent.model_validate_json(line) for line in lines if line.strip()]
