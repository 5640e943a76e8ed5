"""A host's local cache of artifacts, keyed by SHA-256 and verified on the way in.

Workers on several hosts read a remote store (a bucket, a shared mount). Each host keeps one
copy per digest under the cache directory::

    <cache>/<sha256>                verified artifact bytes
    <cache>/.tmp-<sha256>-...       a download in progress (same directory: os.replace is atomic);
                                    one a killed process left is removed by the next download
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
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(_locked(self.root / ".locks" / f"{sha256}.lock"))
            except OSError as e:
                # A cache that cannot be used (read-only, full, not a directory) must not fail
                # the jobs: the bytes are read and verified all the same, only not kept.
                log.warning("artifact cache %s cannot be used (%s): reading %s... uncached",
                            self.root, e, sha256[:12])  # fmt: skip
                return self._download(sha256, source, origin=origin, model=model,
                                      version=version, keep=False)  # fmt: skip
            # Another process may have placed it while this one waited for the lock.
            cached = self._cached(sha256)
            if cached is not None:
                return cached
            # Only the lock's holder writes this digest's temporary files: any there now was
            # left by a process killed mid-download (the sweeper kills one stuck that long),
            # and would pile up, one partial copy per kill.
            for stale in self.root.glob(f".tmp-{sha256}-*"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            return self._download(sha256, source, origin=origin, model=model, version=version)
        raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions

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
        except OSError as e:  # an unusable cache directory: read from the store instead
            log.warning("cannot read cached artifact %s: %s", path, e)
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
        keep: bool = True,
    ) -> bytes:
        """Stream ``source()``, verify it, and keep it under its digest when ``keep`` and the
        cache directory allows; a local write that fails (a full disk) only costs the copy."""
        spool = _Spool(self.root, sha256) if keep else None
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        try:
            with source() as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    chunks.append(chunk)
                    if spool is not None:
                        spool.write(chunk)
            actual = digest.hexdigest()
            if actual != sha256:
                raise IntegrityError(
                    f"artifact of {model} v{version} downloaded from {origin} has SHA-256 "
                    f"{actual[:12]}..., the registry recorded {sha256[:12]}...; it was not "
                    "loaded or cached. Re-register the model from a trusted copy",
                    model=model,
                    version=version,
                )
            kept = spool is not None and spool.place(self.path(sha256))
        finally:
            if spool is not None:
                spool.discard()
        data = b"".join(chunks)
        log.info("downloaded artifact %s... of %s v%s (%d bytes) from %s%s",
                 sha256[:12], model, version, len(data), origin,
                 f" into {self.root}" if kept else " (not cached)")  # fmt: skip
        return data


class _Spool:
    """The temporary file a download is written to, in the cache directory (so that
    os.replace is atomic). Any local failure abandons it, logged once: the download goes on."""

    def __init__(self, root: Path, sha256: str) -> None:
        self.root = root
        self.tmp: str | None = None
        self.out: BinaryIO | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(dir=root, prefix=f".tmp-{sha256}-")
            self.out = os.fdopen(fd, "wb")
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        log.warning("artifact cache %s cannot be written (%s): serving the download uncached",
                    self.root, e)  # fmt: skip
        self.discard()

    def write(self, chunk: bytes) -> None:
        if self.out is not None:
            try:
                self.out.write(chunk)
            except OSError as e:
                self._fail(e)

    def place(self, path: Path) -> bool:
        """Make the verified file ``path``, durably; False when the cache refused it."""
        if self.out is None or self.tmp is None:
            return False
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            os.replace(self.tmp, path)
        except OSError as e:
            self._fail(e)
            return False
        self.tmp = None
        with contextlib.suppress(OSError):  # placed and verified: a later read re-checks it
            _fsync_dir(self.root)
        return True

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there."""
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
            self.out = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a crash must not leave the name pointing nowhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
