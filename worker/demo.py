"""``predictq demo``: the whole story on the embedded Redis, in one command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from producer import Client, JobResult
from registry import RedisUnavailable, Registry, Settings, keys
from registry.connection import resolve_url
from registry.console import make_table

MODEL = "iris-demo"


def start_worker(url: str, log_path: Path, concurrency: int = 1) -> subprocess.Popen[bytes]:
    """A ``predictq worker`` process on ``url``, logging to ``log_path``."""
    env = {**os.environ, "PREDICTQ_REDIS_URL": url}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", "-c", str(concurrency)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for_worker(client: Client, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once a worker heartbeat shows up in Redis; raise if the process dies first."""
    deadline = time.monotonic() + timeout
    while not any(client.redis.scan_iter(match=keys.WORKER_PATTERN, count=100)):
        if proc.poll() is not None:
            raise RedisUnavailable(f"the worker exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"no worker became ready within {timeout}s")
        time.sleep(0.1)


def _table(title: str, rows: list[list[float]], results: list[JobResult]) -> Table:
    table = make_table("job", "input", "prediction", "probabilities", "version", title=title)
    for row, res in zip(rows, results, strict=True):
        proba = json.dumps([round(p, 3) for p in res.probabilities[0]]) if res.probabilities else ""
        pred = res.predictions[0] if res.predictions else res.error
        table.add_row(res.id[:8], json.dumps(row), str(pred), proba, f"v{res.version}")
    return table


def _step(label: str, text: str, style: str = "bold") -> Text:
    """A numbered line of the story: the label styled, the text (paths, URLs) printed literally."""
    return Text.assemble((label, style), " ", text)


def run(settings: Settings, console: Console) -> None:
    """Fit, register, promote, serve, submit; then promote a v2 and show it served live."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    url = resolve_url(None, settings)
    console.print(_step("1.", f"Redis at {url.split('@')[-1]} (embedded unless "
                              "PREDICTQ_REDIS_URL is set)"))  # fmt: skip
    registry = Registry(url, settings=settings)
    x, y = load_iris(return_X_y=True)
    v1 = registry.register(
        MODEL, LogisticRegression(max_iter=1000).fit(x, y), promote=True,
        description="demo: logistic regression on iris", tags={"demo": "true"},
    )  # fmt: skip
    console.print(_step("2.", f"registered and promoted {MODEL} v{v1.version} "
                              f"(sha256 {v1.sha256[:12]}...)"))  # fmt: skip
    log_path = settings.home / "demo-worker.log"
    proc = start_worker(url, log_path)
    client = Client(url, settings=settings)
    try:
        wait_for_worker(client, proc, timeout=60)
        console.print(_step("3.", f"worker started (pid {proc.pid}, log {log_path})"))
        samples = [x[i].tolist() for i in (0, 50, 100, 25, 75)]
        ids = client.submit_many(MODEL, [[row] for row in samples], probabilities=True)
        console.print(_table(f"4. {len(ids)} jobs on v{v1.version}", samples,
                             client.wait_many(ids, timeout=60)))  # fmt: skip
        forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
        v2 = registry.register(MODEL, forest, description="demo: random forest on iris")
        registry.promote(MODEL, v2.version)
        console.print(_step("5.", f"registered and promoted v{v2.version} "
                                  "(the worker keeps running)"))  # fmt: skip
        ids = client.submit_many(MODEL, [[row] for row in samples], probabilities=True)
        after = client.wait_many(ids, timeout=60)
        console.print(_table(f"6. the same rows, now on v{v2.version}", samples, after))
        served = {r.version for r in after}
        if served != {v2.version}:
            raise RedisUnavailable(f"expected every job on v{v2.version}, got {served}")
        console.print(_step("done:", f"every job after the promotion ran on v{v2.version}, "
                            "with no restart. Try `predictq models show iris-demo`.",
                            "green"))  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if settings.redis_url is None:
        console.print(f"The embedded Redis keeps running at {url}, with its data in "
                      f"{settings.home / 'redis'}; `predictq redis stop` stops it.",
                      markup=False, soft_wrap=True)  # fmt: skip
