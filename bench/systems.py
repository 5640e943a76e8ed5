"""The processes behind the systems under test: Redis servers, predictq and naive Celery workers.

Every process goes through a :class:`Reaper`, which stops all of them whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery.result import ResultSet

from producer import Client
from registry import Registry, Settings
from registry.embedded import redis_args, wait_until_answers

from . import naive_app

REPO = Path(__file__).resolve().parents[1]
WORKER_KEY = "predictq:worker:"
Proc = subprocess.Popen[bytes]


@dataclass(frozen=True)
class Worker:
    """A worker process the bench started."""

    proc: Proc
    name: str
    log: Path
    concurrency: int


class BenchError(RuntimeError):
    """A system did not come up, or misbehaved during a run."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path | None, chars: int = 2000) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- " + str(log) + " ---\n" + log.read_text(errors="replace")[-chars:]


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``condition`` until it is truthy; raise when ``proc`` dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with code {proc.returncode}{_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}{_tail(log)}")
        time.sleep(0.02)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any PREDICTQ_* setting of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTQ_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


class Reaper:
    """Every process the bench started, each in its own process group, stopped on close()."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def spawn(
        self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None
    ) -> Proc:
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (a warm shutdown), then SIGKILL the process group if it hangs."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Pool processes that outlived their parent are in its group (its pid is the group id).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            try:
                self.stop(proc)
            except Exception as e:  # keep stopping the others
                print(f"could not stop pid {proc.pid}: {e}", file=sys.stderr)


class RedisServer:
    """A redis-server on a free port, configured as predictq's embedded one (AOF on)."""

    def __init__(self, reaper: Reaper, data_dir: Path) -> None:
        self.port = free_port()
        self.proc = reaper.spawn(redis_args(self.port, data_dir, daemonize=False))
        wait_until_answers(self.url, 10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _clear(r: redis.Redis, patterns: list[str]) -> int:
    """Unlink every key matching ``patterns``; returns how many."""
    count = 0
    for pattern in patterns:
        batch: list[Any] = []
        for key in r.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                count += int(r.unlink(*batch))
                batch = []
        if batch:
            count += int(r.unlink(*batch))
    return count


class Predictq:
    """predictq on its own Redis: the registry, a client, and ``predictq worker`` processes."""

    def __init__(self, reaper: Reaper, url: str, home: Path) -> None:
        self.reaper = reaper
        self.url = url
        self.home = home
        self.settings = Settings(redis_url=url, home=home, artifact_dir=home / "artifacts")
        self.registry = Registry(url, settings=self.settings)
        self.client = Client(url, settings=self.settings)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a predictq process (worker, api) on this system."""
        return _clean_env(
            PREDICTQ_REDIS_URL=self.url,
            PREDICTQ_HOME=str(self.home),
            PREDICTQ_ARTIFACT_DIR=str(self.home / "artifacts"),
            **extra,
        )

    def client_spec(self) -> dict[str, str]:
        """What a client process needs to build its own Client."""
        return {"url": self.url, "home": str(self.home)}

    def spawn_worker(
        self, concurrency: int, log: Path, models: str | None = None, task_events: bool = False
    ) -> Worker:
        """Start a ``predictq worker -c N`` (named, so that its heartbeat key is known)."""
        name = f"bench-{uuid.uuid4().hex[:8]}@localhost"
        env = self.env()
        if models:
            env["PREDICTQ_MODELS"] = models
        if task_events:
            env["PREDICTQ_TASK_EVENTS"] = "true"
        args = [sys.executable, "-m", "worker", "worker", "-c", str(concurrency), "-n", name]
        return Worker(self.reaper.spawn(args, env=env, log=log), name, log, concurrency)

    def wait_ready(self, worker: Worker, timeout: float = 120.0) -> None:
        """Return once the worker's heartbeat key is in Redis."""
        wait_for(
            lambda: self.registry.redis.exists(WORKER_KEY + worker.name),
            timeout,
            f"predictq worker -c {worker.concurrency}",
            worker.proc,
            worker.log,
        )

    def start_worker(
        self,
        concurrency: int,
        log: Path,
        models: str | None = None,
        timeout: float = 120.0,
        task_events: bool = False,
    ) -> Worker:
        worker = self.spawn_worker(concurrency, log, models, task_events)
        self.wait_ready(worker, timeout)
        return worker

    def clear_jobs(self) -> int:
        """Drop every job record, wake-up list and HTTP owner; versions and aliases stay."""
        patterns = ["predictq:job:*", "predictq:done:*", "predictq:owner:*"]
        return _clear(self.registry.redis, patterns)


class Naive:
    """The naive Celery app on its own Redis (broker and result backend)."""

    QUEUE = "celery"

    def __init__(self, reaper: Reaper, url: str, model_paths: dict[str, Path]) -> None:
        self.reaper = reaper
        self.url = url
        self.model_paths = model_paths
        self.app = naive_app.use(url)
        self.redis = redis.Redis.from_url(url)

    def spawn_worker(self, log: Path, concurrency: int = 2) -> Worker:
        """Start the prefork worker: ``celery -A bench.naive_app worker -c N``."""
        env = _clean_env(
            **{
                naive_app.URL_ENV: self.url,
                naive_app.MODELS_ENV: json.dumps({k: str(v) for k, v in self.model_paths.items()}),
            }
        )
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.naive_app",
            "worker",
            "-c",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
        ]
        return Worker(self.reaper.spawn(args, env=env, log=log), "naive", log, concurrency)

    def wait_ready(self, worker: Worker, timeout: float = 120.0) -> None:
        """Return once every pool process has answered a ping task."""
        pids: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(pids) < worker.concurrency:
            pending = ResultSet([naive_app.ping.delay() for _ in range(4 * worker.concurrency)])
            remaining = max(0.1, deadline - time.monotonic())
            wait_for(pending.ready, remaining, "the naive Celery worker", worker.proc, worker.log)
            pids.update(int(pid) for pid in pending.get(timeout=1))
        self.clear_results()

    def clear_results(self) -> int:
        """Drop stored task results (the broker's queue and bindings stay)."""
        if self.redis.llen(self.QUEUE):
            raise BenchError(f"{self.redis.llen(self.QUEUE)} naive tasks are still queued")
        return _clear(self.redis, ["celery-task-meta-*"])
