"""The artifact store in a bucket: ``s3://bucket/prefix`` (s3fs), or any fsspec backend.

The layout is the local store's (registry/store.py), with two differences an object store
imposes: an exclusive create is a conditional PUT (``If-None-Match: *``), and history, which
cannot be appended to, is one object per event under ``models/{name}/history.jsonl.d/``.

Credentials and the endpoint come from the backend's own environment: for S3 botocore's
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL,
or a pod or instance role). Nothing here reads or logs them. Every failure of the store (a
missing bucket, no credentials, the network, a missing backend package) becomes one
ArtifactUnavailable line.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from .artifact_cache import VerifiedCache
from .errors import ArtifactUnavailable, PredictqError
from .store import ArtifactStore

__all__ = ["ObjectStore"]

# Package to install for each protocol fsspec routes to another package.
_BACKENDS = {
    "s3": "'predictq[s3]' (s3fs)",
    "s3a": "'predictq[s3]' (s3fs)",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}


# s3fs tries each request 5 times, and botocore each of those 5 times, each waiting up to 15 s
# for a reply: one read of an endpoint that accepts connections and never answers took 427 s,
# past the visibility timeout (300 s). The sweeper then killed the loading process, and its
# jobs, rerun, ended worker_lost after minutes instead of artifact_unavailable. 2 x 2 tries
# bound one request to about a minute. AWS_MAX_ATTEMPTS / AWS_RETRY_MODE still win.
_S3_TRIES = 2


def _s3_bounds() -> dict[str, Any]:
    """botocore's tries, unless its environment sets them."""
    if {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & set(os.environ):
        return {}
    return {"config_kwargs": {"retries": {"total_max_attempts": _S3_TRIES}}}


class ObjectStore(ArtifactStore):
    """The artifact store under an fsspec URL such as ``s3://bucket/prefix``."""

    def __init__(self, url: str, cache_dir: Path | None = None) -> None:
        # No super().__init__(): a bucket has no root directory, so no ``root``.
        self.cache = VerifiedCache(Path(cache_dir)) if cache_dir else None
        self.url = url.rstrip("/")
        self.protocol = self.url.split("://", 1)[0]
        self._base = self.url.split("://", 1)[1]
        self.bucket = self._base.split("/", 1)[0]
        self._fs_pid = -1
        self._fs_cached: Any = None

    @property
    def location(self) -> str:
        return self.url

    def blob_path(self, sha256: str) -> Path:
        raise TypeError("a bucket's blobs have no local path: use has_blob or read_verified")

    def _fs(self) -> Any:
        """This process's filesystem: made afresh after a fork, since an s3fs client's event
        loop and connections belong to the process that made them."""
        if self._fs_pid != os.getpid():
            try:
                import fsspec

                cls = fsspec.get_filesystem_class(self.protocol)
            except (ImportError, ValueError) as e:
                package = _BACKENDS.get(self.protocol)
                hint = f"pip install {package}" if package else "install its fsspec backend"
                raise ArtifactUnavailable(
                    f"PREDICTQ_ARTIFACT_DIR is {self.url}, but {self.protocol}:// needs a "
                    f"package that is not installed: {hint}"
                ) from e
            # Listings must be fresh: blob collection re-reads them to decide what to delete.
            s3 = self.protocol in ("s3", "s3a")
            self._fs_cached = cls(skip_instance_cache=True, use_listings_cache=False,
                                  **(_s3_bounds() if s3 else {}))  # fmt: skip
            if s3:
                self._fs_cached.retries = _S3_TRIES  # s3fs's own tries: a class attribute
            self._fs_pid = os.getpid()
        return self._fs_cached

    def _full(self, key: str) -> str:
        return f"{self._base}/{key}"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn whatever the backend raises into one line saying what to fix; a missing key
        (FileNotFoundError) is the caller's to handle, after the bucket was checked."""
        try:
            yield
        except FileNotFoundError:
            self._check_bucket()
            raise
        except (FileExistsError, PredictqError):
            raise
        except Exception as e:  # the backend's network stack raises anything at all
            raise self._unavailable(action, e) from e

    def _check_bucket(self) -> None:
        try:
            exists = self._fs().exists(self.bucket)
        except PredictqError:
            raise
        except Exception as e:
            raise self._unavailable("reach", e) from e
        if not exists:
            raise ArtifactUnavailable(
                f"the bucket {self.bucket!r} of the artifact store {self.url} does not exist "
                "(or these credentials cannot see it): create it, or fix PREDICTQ_ARTIFACT_DIR"
            )

    def _unavailable(self, action: str, e: Exception) -> ArtifactUnavailable:
        name = type(e).__name__
        if name in _NO_CREDENTIALS:
            fix = (
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give "
                "the pod or instance a role"
                if self.protocol.startswith("s3")
                else f"configure the credentials of the {self.protocol}:// backend"
            )
            return ArtifactUnavailable(f"no credentials to {action} {self.url}: {fix}")
        if isinstance(e, PermissionError):
            return ArtifactUnavailable(
                f"access denied to {action} {self.url}: check the credentials, and that they "
                "may read, write, list and delete objects under it"
            )
        detail = " ".join(str(e).split())[:200]
        return ArtifactUnavailable(
            f"could not {action} the artifact store {self.url} ({name}: {detail}): check the "
            "network and the endpoint (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION)"
        )

    # -- the primitives, over fsspec ---------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        try:
            with self._errors("read from"):
                return cast(bytes, self._fs().cat_file(self._full(key)))
        except FileNotFoundError:
            return None

    def _read_many(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        paths = {self._full(key): key for key in keys}
        with self._errors("read from"):
            found = self._fs().cat(list(paths), on_error="return")
        read = {}
        for path, data in found.items():
            if isinstance(data, FileNotFoundError):
                continue  # deleted between the listing and the read
            if isinstance(data, Exception):
                raise self._unavailable("read from", data) from data
            read[paths[path]] = data
        return read

    def _write(self, key: str, data: bytes) -> None:
        # One PUT: readers see the old object or the new one, never a part.
        with self._errors("write to"):
            self._fs().pipe_file(self._full(key), data)

    def _create(self, key: str, data: bytes) -> bool:
        with self._errors("write to"):
            try:
                self._fs().pipe_file(self._full(key), data, mode="create")
            except FileExistsError:
                return False
            except (TypeError, NotImplementedError, ValueError):
                # A backend without conditional writes: check, then write. Version numbers
                # come from Redis's INCR anyway; this guard only matters after Redis was lost.
                if self._exists(key):
                    return False
                self._write(key, data)
        return True

    def _exists(self, key: str) -> bool:
        with self._errors("read from"):
            return bool(self._fs().exists(self._full(key)))

    def _move(self, src: str, dst: str) -> bool:
        # A copy then a delete: see ArtifactStore.remove_blob for why that is enough.
        try:
            with self._errors("write to"):
                self._fs().copy(self._full(src), self._full(dst))
        except FileNotFoundError:
            return False
        self._delete(src)
        return True

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._errors("delete from"):
            self._fs().rm_file(self._full(key))

    def _find(self, key: str) -> list[str]:
        """The keys of every object under ``key``, sorted."""
        try:
            with self._errors("list"):
                found = self._fs().find(self._full(key))
        except FileNotFoundError:
            return []
        prefix = len(self._base) + 1
        return sorted(str(path)[prefix:] for path in found)

    def _numbered(self) -> list[tuple[str, int]]:
        numbered = []
        for key in self._find("models"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2].endswith(".json") and parts[2][:-5].isdigit():
                numbered.append((parts[1], int(parts[2][:-5])))
        return numbered

    def _append(self, key: str, line: str) -> None:
        # Named by time so that a listing reads them in order (across hosts, to their clocks'
        # agreement); the random part keeps two events of one nanosecond apart.
        self._write(f"{key}.d/{time.time_ns():020d}-{os.urandom(4).hex()}", line.encode())

    def _lines(self, key: str) -> list[str]:
        keys = self._find(f"{key}.d")
        if not keys:
            return []
        with self._errors("read from"):
            found = self._fs().cat([self._full(k) for k in keys])
        return [found[self._full(k)].decode().strip() for k in keys]

    def _open(self, key: str) -> BinaryIO:
        with self._errors("read from"):
            return cast(BinaryIO, self._fs().open(self._full(key), "rb"))
