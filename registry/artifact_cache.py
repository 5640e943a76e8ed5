"""A host's local cache of artifacts, keyed by SHA-256 and verified on the way in.

Workers on several hosts read a remote store (a bucket, a shared mount). Each host keeps one
copy per digest under the cache directory::

    <cache>/<sha256>                verified artifact bytes
    <cache>/.tmp-<sha256>-...       a download in progress (same directory: os.replace is atomic)
    <cache>/.locks/<sha256>.lock    flock'ed by the one process downloading that digest

A download is hashed while it streams; a mismatch raises IntegrityError, and its temporary
file is removed, so nothing unverified is ever under the digest's name. The pool processes of
a node (and several nodes sharing a cache directory on one host) take an exclusive
``fcntl.flock`` on the digest's lock file: the first downloads, the others wait and then read
the file it placed. Lock files stay (empty): unlinking one while another process waits on it
would let a third take a fresh lock beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import IntegrityError

__all__ = ["VerifiedCache"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if need be); released when the fd closes,
    so also when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class VerifiedCache:
    """Artifact bytes of one host, each file named by (and checked against) its SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def read(
        self,
        sha256: str,
        source: Callable[[], BinaryIO],
        *,
        origin: str,
        model: str,
        version: int,
    ) -> bytes:
        """The bytes of ``sha256``: from the cache, else downloaded once from ``source()``.

        Cached bytes are hashed again here, on every load (once per process and version,
        never per job): one SHA-256 pass costs far less than the unpickling it guards, and it
        catches a cached file that was corrupted or altered on disk after it was verified.
        Such a file is dropped and downloaded again.
        """
        cached = self._cached(sha256)
        if cached is not None:
            return cached
        with _locked(self.root / ".locks" / f"{sha256}.lock"):
            # Another process may have placed it while this one waited for the lock.
            cached = self._cached(sha256)
            if cached is not None:
                return cached
            return self._download(sha256, source, origin=origin, model=model, version=version)

    def discard(self, sha256: str) -> None:
        """Forget this host's copy (its blob was deleted from the store)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def _cached(self, sha256: str) -> bytes | None:
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
        log.warning("dropping corrupt cached artifact %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def _download(
        self,
        sha256: str,
        source: Callable[[], BinaryIO],
        *,
        origin: str,
        model: str,
        version: int,
    ) -> bytes:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".tmp-{sha256}-")
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        try:
            with os.fdopen(fd, "wb") as out, source() as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    chunks.append(chunk)
                actual = digest.hexdigest()
                if actual != sha256:
                    raise IntegrityError(
                        f"artifact of {model} v{version} downloaded from {origin} has SHA-256 "
                        f"{actual[:12]}..., the registry recorded {sha256[:12]}...; it was not "
                        "loaded or cached. Re-register the model from a trusted copy",
                        model=model,
                        version=version,
                    )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path(sha256))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)
        data = b"".join(chunks)
        log.info("downloaded artifact %s... of %s v%s (%d bytes) from %s into %s",
                 sha256[:12], model, version, len(data), origin, self.root)  # fmt: skip
        return data


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a crash must not leave the name pointing nowhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
