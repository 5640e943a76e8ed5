"""Artifacts in an S3 bucket: moto's server mode on loopback plays S3.

It speaks S3's HTTP API (PUT, GET, ranged GET, list, copy, delete, conditional PUT) but does
not check signatures or IAM policies, is strongly consistent where real S3 is too, and has
no multipart-size or request-rate limits: those are not tested here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry import ArtifactUnavailable, IntegrityError, Registry, Settings
from registry.artifact_cache import VerifiedCache
from registry.object_store import ObjectStore

from .cache_race import DIGEST, PAYLOAD, race
from .conftest import REPO, free_port, wait_for
from .poison import Canary

pytestmark = pytest.mark.timeout(90)

PREFIX = "predictq-store"


class MotoServer:
    """``python -m moto.server`` on a free loopback port, in its own process."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(self._answers, 30, "moto's S3 server")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def aws(s3: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment pointing at moto (moto accepts any key)."""
    found = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3.url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in found.items():
        monkeypatch.setenv(k, v)
    return found


@pytest.fixture
def bucket(aws: dict[str, str]) -> str:
    name = f"predictq-{uuid.uuid4().hex[:12]}"
    _fs().mkdir(name)
    return name


@pytest.fixture
def env(redis_url: str, tmp_path: Path, aws: dict[str, str], bucket: str) -> dict[str, str]:
    """Every process of a test shares the bucket; each worker node gets its own cache."""
    return {
        "PREDICTQ_REDIS_URL": redis_url,
        "PREDICTQ_HOME": str(tmp_path / "home"),
        "PREDICTQ_ARTIFACT_DIR": f"s3://{bucket}/{PREFIX}",
        **aws,
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=env["PREDICTQ_REDIS_URL"],
        home=Path(env["PREDICTQ_HOME"]),
        artifact_dir=env["PREDICTQ_ARTIFACT_DIR"],
        alias_cache_seconds=0,
    )


def _fs() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _downloads(log: Path, sha: str) -> int:
    """Downloads of blob ``sha`` a worker node logged."""
    return len(re.findall(rf"downloaded artifact {sha[:12]}", log.read_text(errors="replace")))


def _cached(cache: Path) -> set[str]:
    """Names in a cache directory, lock files left out."""
    return {p.name for p in cache.iterdir() if p.name != ".locks"} if cache.exists() else set()


def test_two_nodes_each_download_a_model_once_and_serve_it(
    settings: Settings,
    registry: Registry,
    fitted: LogisticRegression,
    dataset: Any,
    start_worker: Callable[..., Any],
    tmp_path: Path,
    bucket: str,
) -> None:
    x, y = dataset
    v1 = registry.register("clf", fitted)
    v2 = registry.register("clf", LogisticRegression(C=0.01, max_iter=500).fit(x, y))
    blobs = set(_fs().find(f"{bucket}/{PREFIX}/blobs"))
    assert blobs == {f"{bucket}/{PREFIX}/blobs/{m.sha256[:2]}/{m.sha256}" for m in (v1, v2)}

    nodes = {}
    for node in ("a", "b"):
        # Separate homes give each node its own cache (PREDICTQ_CACHE_DIR's default for an
        # object store); separate queues make each node's share of the jobs certain.
        nodes[node] = start_worker(3, PREDICTQ_HOME=str(tmp_path / f"home-{node}"),
                                   PREDICTQ_QUEUE=f"q-{node}")  # fmt: skip
    for node, w in nodes.items():
        node_settings = settings.model_copy(update={"queue": f"q-{node}"})
        with Client(settings=node_settings) as client:
            # Pinned versions, which no alias serves: the node's pool processes load them on
            # demand, several at once, and still download each once. (A promoted version is
            # loaded before the fork, when Celery does not log yet.)
            ids = [client.submit("clf", x[i : i + 1], version=2) for i in range(24)]
            ids += [client.submit("clf", x[i : i + 1], version=1) for i in range(6)]
            results = client.wait_many(ids, timeout=60)
        assert [r.status for r in results] == ["succeeded"] * 30, [r.error for r in results]
        assert [r.version for r in results] == [2] * 24 + [1] * 6
        assert all(w.name in (r.worker or "") for r in results), {r.worker for r in results}
        assert [r.predictions[0] for r in results[:24]] == [
            int(p) for p in registry.load(v2).predict(x[:24])
        ]
        assert _cached(tmp_path / f"home-{node}" / "cache") == {v1.sha256, v2.sha256}
        assert (_downloads(w.log, v1.sha256), _downloads(w.log, v2.sha256)) == (1, 1), w.output()


def test_a_tampered_object_is_refused_and_nothing_is_cached(
    registry: Registry,
    client: Client,
    fitted: LogisticRegression,
    start_worker: Callable[..., Any],
    tmp_path: Path,
    bucket: str,
) -> None:
    meta = registry.register("clf", fitted)
    canary = tmp_path / "canary"
    blob = f"{bucket}/{PREFIX}/blobs/{meta.sha256[:2]}/{meta.sha256}"
    _fs().pipe_file(blob, pickle.dumps(Canary(canary)))
    cache = tmp_path / "fresh-cache"
    start_worker(2, PREDICTQ_CACHE_DIR=str(cache))

    res = client.wait(client.submit("clf", [[0.0] * 6], version=1), timeout=30)

    assert res.status == "failed"
    assert res.error is not None and res.error.code == "integrity_error", res.error
    assert "downloaded from s3://" in res.error.message and "not loaded" in res.error.message
    assert not canary.exists()
    assert _cached(cache) == set()


def test_an_unreachable_store_fails_the_job_with_a_clear_code_and_the_worker_lives_on(
    registry: Registry,
    client: Client,
    fitted: LogisticRegression,
    start_worker: Callable[..., Any],
    tmp_path: Path,
) -> None:
    registry.register("clf", fitted)
    w = start_worker(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="1",
                     PREDICTQ_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip

    res = client.wait(client.submit("clf", [[0.0] * 6], version=1), timeout=60)

    assert (res.status, res.error and res.error.code) == ("failed", "artifact_unavailable")
    assert "could not read from the artifact store s3://" in res.error.message
    assert "check the network" in res.error.message
    assert w.proc.poll() is None
    assert _cached(tmp_path / "cache") == set()


def test_models_rebuild_restores_versions_from_the_bucket_after_redis_is_flushed(
    registry: Registry,
    fitted: LogisticRegression,
    dataset: Any,
    env: dict[str, str],
    r: redis.Redis,
    bucket: str,
) -> None:
    x, y = dataset
    registry.register("clf", fitted, promote=True)
    registry.register("clf", LogisticRegression(C=0.1, max_iter=500).fit(x, y), promote=True)
    doomed = registry.register("clf", LogisticRegression(C=0.01, max_iter=500).fit(x, y))
    registry.archive("clf", 1)
    registry.delete("clf", 3)
    # Delete's blob collection ran against the bucket: v3's bytes were its own.
    assert not _fs().exists(f"{bucket}/{PREFIX}/blobs/{doomed.sha256[:2]}/{doomed.sha256}")
    r.flushdb()

    out = subprocess.run(
        [sys.executable, "-m", "worker", "models", "rebuild"],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    assert f"restored 2 version(s) of 1 model(s) from s3://{bucket}/{PREFIX}" in " ".join(
        out.stdout.split()
    )
    rebuilt = Registry(settings=registry.settings)
    assert [(m.version, m.archived) for m in rebuilt.versions("clf")] == [(1, True), (2, False)]
    assert rebuilt.aliases("clf") == {"production": 2}
    assert [e.action for e in rebuilt.history("clf")] == ["promote", "promote", "archive",
                                                          "delete"]  # fmt: skip
    assert rebuilt.register("clf", fitted).version == 4  # v3's tombstone keeps its number


def test_a_store_that_cannot_be_used_says_why_in_one_line(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = ObjectStore(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p")
    with pytest.raises(ArtifactUnavailable, match=r"does not exist.*create it") as e:
        missing.put_bytes(b"x")
    assert "\n" not in e.value.message

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries; s3fs's own still run
    with pytest.raises(ArtifactUnavailable, match=r"could not list .*check the network") as e:
        ObjectStore("s3://any/p").last_versions()
    assert "\n" not in e.value.message

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ArtifactUnavailable, match=r"no credentials .*AWS_ACCESS_KEY_ID"):
        ObjectStore("s3://any/p").last_versions()

    with pytest.raises(ArtifactUnavailable, match="pip install gcsfs"):
        ObjectStore("gs://bucket/p").last_versions()


# -- one download per digest across processes ------------------------------------------------


def test_processes_racing_on_one_digest_download_it_once(tmp_path: Path) -> None:
    # The test process has threads, so no plain fork; a fork server imports the racers' module
    # once instead of once per process.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.cache_race"])
    racers, opened, cache = 4, tmp_path / "opened", tmp_path / "cache"
    arrived, out = ctx.Value("i", 0), ctx.Queue()
    procs = [ctx.Process(target=race, args=(str(cache), str(opened), arrived, racers, out))
             for _ in range(racers)]  # fmt: skip
    for p in procs:
        p.start()
    digests = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)

    assert [p.exitcode for p in procs] == [0] * racers
    assert digests == [DIGEST] * racers
    assert len(opened.read_text().splitlines()) == 1
    assert _cached(cache) == {DIGEST}
    assert (cache / DIGEST).read_bytes() == PAYLOAD


def test_a_download_that_does_not_match_its_digest_leaves_nothing_in_the_cache(
    tmp_path: Path,
) -> None:
    cache = VerifiedCache(tmp_path / "cache")
    with pytest.raises(IntegrityError, match="not loaded or cached"):
        cache.read(DIGEST, lambda: io.BytesIO(PAYLOAD[:-1] + b"!"), origin="test",
                   model="m", version=1)  # fmt: skip
    assert _cached(tmp_path / "cache") == set()

    # A process killed mid-download left its partial temporary file: the next download of
    # that digest removes it, so that kills do not pile copies up on the disk.
    (tmp_path / "cache" / f".tmp-{DIGEST}-killed").write_bytes(PAYLOAD[:5])
    (tmp_path / "cache" / DIGEST).write_bytes(b"altered on disk after it was verified")
    assert cache.read(DIGEST, lambda: io.BytesIO(PAYLOAD), origin="test",
                      model="m", version=1) == PAYLOAD  # fmt: skip
    assert (tmp_path / "cache" / DIGEST).read_bytes() == PAYLOAD
    assert _cached(tmp_path / "cache") == {DIGEST}


def test_a_cache_directory_that_cannot_be_used_still_serves_verified_bytes(
    settings: Settings, registry: Registry, fitted: LogisticRegression, tmp_path: Path
) -> None:
    meta = registry.register("clf", fitted)
    # A cache path under a regular file: nothing can be created there, even by root (as a
    # read-only or full disk would refuse it). The job must not fail for want of a cache.
    (tmp_path / "file").write_bytes(b"")
    store = ObjectStore(settings.artifact_location, tmp_path / "file" / "cache")
    data = store.read_verified(meta.sha256, model="clf", version=1)
    assert hashlib.sha256(data).hexdigest() == meta.sha256

    # A cache that fails part-way (a full disk refuses the flush to disk) is abandoned, its
    # temporary file removed, and the verified bytes still served.
    full = VerifiedCache(tmp_path / "full")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", no_space)
        got = full.read(DIGEST, lambda: io.BytesIO(PAYLOAD), origin="t", model="m", version=1)
    assert got == PAYLOAD and _cached(tmp_path / "full") == set()


def test_an_endpoint_that_never_answers_fails_the_read_after_a_bounded_number_of_tries(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import s3fs

    # A listener that accepts connections and never answers; s3fs's read timeout shortened so
    # that the test counts tries, not seconds.
    silent = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                connections.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(s3fs.S3FileSystem, "read_timeout", 0.2)
    store = ObjectStore("s3://b/p", tmp_path / "cache")
    try:
        with pytest.raises(ArtifactUnavailable, match=r"could not read from.*ReadTimeout"):
            store.read_verified("ab" * 32, model="m", version=1)
    finally:
        silent.close()
        for conn in connections:
            conn.close()
    # 2 x 2 tries (25 before, over 7 minutes with the default 15 s timeout).
    assert 1 <= len(connections) <= 4, len(connections)
