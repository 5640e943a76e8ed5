"""Fixtures: a real redis-server per session, a clean database per test, real worker processes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from producer import Client, JobResult
from registry import Registry, Settings, keys
from registry.embedded import find_redis_server, redis_args, server_version, wait_until_answers

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header() -> str:
    """Which server the session runs on (PREDICTQ_REDIS_SERVER picks one; CI runs both)."""
    binary = find_redis_server()
    name, version = server_version(binary)
    return f"redis server: {name} {version} ({binary})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def report(name: str, ids: list[str], results: list[JobResult], r: redis.Redis) -> Counter[str]:
    """Print and return the counts every fault test asserts on.

    ``duplicated`` counts extra deliveries (attempts past the first); ``results_written`` counts
    final records the workers wrote, which exceeds ``submitted`` only if a result was written
    twice.
    """
    status = Counter(res.status for res in results)
    counts = Counter(
        submitted=len(ids),
        succeeded=status["succeeded"],
        failed=status["failed"],
        lost=len(ids) - sum(status[s] for s in ("succeeded", "failed", "cancelled")),
        duplicated=sum(res.attempts - 1 for res in results if res.attempts > 1),
        results_written=finished(r, ("succeeded", "failed")),
    )
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


_FINAL = ("succeeded", "failed", "cancelled")


def finished(r: redis.Redis, statuses: tuple[str, ...] = _FINAL) -> int:
    """Final records written so far, from the per-minute stats."""
    return sum(int(v) for k in r.scan_iter(match="predictq:stats:*")
               for s, v in r.hgetall(k).items() if s in statuses)  # fmt: skip


class RedisServer:
    """A real redis-server on a free port with its own data directory (AOF on)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(redis_args(self.port, self.data_dir, daemonize=False))
        wait_until_answers(self.url, timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    r.close()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The PREDICTQ_* environment every process of one test shares."""
    return {
        "PREDICTQ_REDIS_URL": redis_url,
        "PREDICTQ_HOME": str(tmp_path / "home"),
        "PREDICTQ_ARTIFACT_DIR": str(tmp_path / "artifacts"),
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=env["PREDICTQ_REDIS_URL"],
        home=Path(env["PREDICTQ_HOME"]),
        artifact_dir=Path(env["PREDICTQ_ARTIFACT_DIR"]),
        alias_cache_seconds=0,
    )


@pytest.fixture
def registry(settings: Settings) -> Registry:
    return Registry(settings=settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as c:
        yield c


class Service:
    """A real predictq process writing to ``log``: stopped with SIGTERM, killed if it hangs."""

    log: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Worker(Service):
    """A real ``predictq worker`` process."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int, r: redis.Redis) -> None:
        self.log = log
        self.name = f"test-{os.getpid()}-{time.monotonic_ns()}@localhost"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker", "-c", str(concurrency),
                 "-n", self.name, "-l", "INFO"],
                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:
            wait_for(lambda: r.exists(keys.worker(self.name)) or self.proc.poll() is not None,
                     60, "the worker's heartbeat")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.output()}")


@pytest.fixture
def start_worker(
    env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(
        concurrency: int = 1, redis_client: redis.Redis | None = None, **extra_env: str
    ) -> Worker:
        log = tmp_path / f"worker-{len(workers)}.log"
        w = Worker({**env, **extra_env}, log, concurrency, redis_client or r)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def worker(start_worker: Callable[..., Worker]) -> Worker:
    return start_worker()


@pytest.fixture(scope="session")
def dataset() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=0)
    return x, y


@pytest.fixture(scope="session")
def fitted(dataset: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = dataset
    return LogisticRegression(max_iter=1000).fit(x, y)


@pytest.fixture
def promoted(registry: Registry, fitted: LogisticRegression) -> str:
    """A model named 'clf' with v1 registered and promoted to production."""
    registry.register("clf", fitted, promote=True)
    return "clf"


# Key names and scopes every test API server is started with; the keys are fresh per server.
API_KEYS = {"svc": "submit", "other": "submit", "reader": "read", "ops": "admin"}


class ApiServer(Service):
    """A real ``predictq api`` process (uvicorn) on a free port, with freshly generated keys."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.keys = {name: secrets.token_urlsafe(24) for name in API_KEYS}
        keys_env = ",".join(f"{n}:{self.keys[n]}:{scopes}" for n, scopes in API_KEYS.items())
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "api", "--port", str(self.port),
                 "--workers", str(workers)],
                env={**os.environ, **env, "PREDICTQ_API_KEYS": keys_env,
                     "PREDICTQ_API_MAX_WAIT": "5"},
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:
            wait_for(lambda: self._answers() or self.proc.poll() is not None, 60, "the API")
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is not None:
            pytest.fail(f"predictq api exited with {self.proc.returncode}:\n{self.output()}")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def auth(self, name: str) -> dict[str, str]:
        """The Authorization header of key ``name``."""
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def http(self, name: str | None = None) -> httpx.Client:
        """An HTTP client for the server, sending key ``name`` when given."""
        headers = self.auth(name) if name else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def api(env: dict[str, str], tmp_path: Path) -> Iterator[ApiServer]:
    """A ``predictq api`` sharing this test's Redis database and artifact store."""
    server = ApiServer(env, tmp_path / "api.log")
    yield server
    server.stop()


def module_env(redis_server: RedisServer, home: Path) -> dict[str, str]:
    """The PREDICTQ_* environment of a server a whole module shares (see shared_api)."""
    return {
        "PREDICTQ_REDIS_URL": redis_server.url,
        "PREDICTQ_HOME": str(home / "home"),
        "PREDICTQ_ARTIFACT_DIR": str(home / "artifacts"),
    }


@pytest.fixture(scope="module")
def shared_api(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """One ``predictq api`` for a whole module, on the session's Redis (flushed per test)."""
    home = tmp_path_factory.mktemp("api")
    # Two uvicorn worker processes, as in production.
    server = ApiServer(module_env(redis_server, home), home / "api.log", workers=2)
    yield server
    server.stop()
