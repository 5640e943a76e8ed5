"""``python -m bench --http``: predictq over HTTP beside its Python client and naive Celery.

One run on the 20-feature LogisticRegression, single-row jobs, three systems, three scenarios:

- lone jobs, one at a time (Python: submit + wait; naive: delay + get; HTTP: POST a job, then a
  long-poll GET);
- ``http_clients`` concurrent clients for ``http_seconds`` (processes for the Python client and
  naive; keep-alive connections of one asyncio process for HTTP, see bench/http_load.py);
- bulk, end to end (Python: submit_many + wait_many; naive: one apply_async per job; HTTP:
  jobs:batch in batches of 1000, read back through jobs:wait, or one GET per job against a server
  that has no jobs:wait).

Each HTTP row carries ``server_cpu_ms_per_job``: the CPU of the ``predictq api`` process (and
of its uvicorn workers) over the measured span, per job.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import http_load, report, scenarios
from .clients import NAIVE, PREDICTQ
from .config import Config
from .models import LR, Models, build_lr
from .systems import Naive, Predictq, Reaper, RedisServer, free_port, wait_for

__all__ = ["HTTP", "Api", "run", "summary"]

HTTP = "predictq-http"
BATCH = 1000  # jobs per jobs:batch request (the API's default PREDICTQ_API_MAX_BATCH_JOBS)
Figures = dict[str, Any]
Log = Callable[[str], None]
Step = Callable[..., Any]  # Run.step: (name, fn, *args) -> fn's result, or None when it failed


class Api:
    """``predictq api`` on a free port, with one random submit key, served until stopped."""

    def __init__(self, reaper: Reaper, pq: Predictq, workers: int, log: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.key = secrets.token_urlsafe(24)
        args = [sys.executable, "-m", "worker", "api", "--host", self.host,
                "--port", str(self.port), "--workers", str(workers)]  # fmt: skip
        env = pq.env(PREDICTQ_API_KEYS=f"bench:{self.key}:submit")
        self.proc = reaper.spawn(args, env=env, log=log)
        wait_for(self._accepts, 60, f"predictq api --workers {workers}", self.proc, log)
        # jobs:wait came after the load generator; without it, bulk reads one GET per job.
        schema = f"http://{self.host}:{self.port}/openapi.json"
        with urllib.request.urlopen(schema, timeout=60) as r:
            self.has_bulk_wait = "/v1/jobs:wait" in json.loads(r.read())["paths"]

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    @property
    def target(self) -> tuple[str, int, str]:
        """(host, port, key): the first arguments of every bench/http_load.py call."""
        return self.host, self.port, self.key


def run(cfg: Config, tmp: Path, reaper: Reaper, log: Log, step: Step) -> list[Figures]:
    """Rows for the report: lone, concurrent and bulk for predictq, naive and predictq-http."""
    log("fitting the LogisticRegression")
    models = build_lr(cfg.data_rows, tmp / "models")
    pq = Predictq(reaper, RedisServer(reaper, tmp / "redis-predictq").url, tmp / "predictq")
    naive = Naive(reaper, RedisServer(reaper, tmp / "redis-naive").url, models.paths)
    pq.registry.register(LR, models.estimators[LR], promote=True)
    c = cfg.worker_concurrency
    log(f"starting a predictq worker and a naive Celery worker (-c {c} each)")
    workers = [pq.spawn_worker(c, tmp / "worker-predictq.log"),
               naive.spawn_worker(tmp / "worker-naive.log", c)]  # fmt: skip
    try:
        pq.wait_ready(workers[0])
        naive.wait_ready(workers[1])
        log(f"starting predictq api --workers {cfg.api_workers}")
        # Not a *.log: its access log has a line per request, and *.log files are kept.
        api = Api(reaper, pq, cfg.api_workers, tmp / "api.out")
        try:
            return _measure(cfg, pq, naive, api, models, log, step)
        finally:
            log(f"stopped predictq api (exit code {reaper.stop(api.proc)})")
    finally:
        for w in workers:
            log(f"stopped {w.name} worker (exit code {reaper.stop(w.proc)})")


def _measure(
    cfg: Config, pq: Predictq, naive: Naive, api: Api, models: Models, log: Log, step: Step
) -> list[Figures]:
    timeout, warmup, n = cfg.job_timeout, cfg.warmup_jobs, cfg.http_clients
    rows = models.rows(cfg.http_bulk_jobs)
    expected = scenarios.predict_all(models.estimators[LR], rows)
    pid = api.proc.pid
    out: list[Figures] = []

    def add(figures: Figures | None) -> None:
        pq.clear_jobs()
        naive.clear_results()
        if figures is not None:
            out.append(figures)
            log("  " + report.brief(figures))

    scenarios.warm_up(pq, LR, rows[: 4 * cfg.worker_concurrency])
    lone = slice(0, warmup + cfg.lone_jobs)
    for system in (PREDICTQ, NAIVE):
        add(step(f"lone {LR} {system} ({cfg.lone_jobs} jobs)", scenarios.lone,
                 system, pq, LR, rows[lone], warmup, timeout))  # fmt: skip
    add(step(f"lone {LR} {HTTP} ({cfg.lone_jobs} jobs)", _http, "lone", http_load.lone,
             *api.target, LR, rows[lone], expected[lone], warmup, pid))  # fmt: skip
    spec = {PREDICTQ: pq.client_spec(), NAIVE: {"url": naive.url}}
    for system in (PREDICTQ, NAIVE):
        add(step(f"concurrent {LR} {system} ({n} clients, {cfg.http_seconds}s)",
                 scenarios.concurrent, system, spec[system], LR, rows, n, cfg.http_seconds,
                 warmup, timeout))  # fmt: skip
    add(step(f"concurrent {LR} {HTTP} ({n} clients, {cfg.http_seconds}s)", _http,
             f"concurrent x{n}", http_load.concurrent, *api.target, LR, rows, expected, n,
             cfg.http_seconds, pid))  # fmt: skip
    k = cfg.naive_bulk_jobs
    add(step(f"bulk {LR} in-process", scenarios.in_process, models.estimators[LR], LR, rows))
    add(step(f"bulk {LR} {PREDICTQ} ({len(rows):,} jobs)", scenarios.bulk_predictq,
             pq, LR, rows, expected, timeout))  # fmt: skip
    add(step(f"bulk {LR} {NAIVE} ({k:,} jobs)", scenarios.bulk_naive,
             naive, LR, rows[:k], expected[:k], timeout))  # fmt: skip
    read = "jobs:wait" if api.has_bulk_wait else "GET per job"
    add(step(f"bulk {LR} {HTTP} ({len(rows):,} jobs, batches of {BATCH}, read by {read})",
             _http, "bulk", http_load.bulk, *api.target, LR, rows, expected, BATCH, pid,
             api.has_bulk_wait))  # fmt: skip
    if out and out[-1]["system"] == HTTP and out[-1]["scenario"] == "bulk":
        out[-1]["bulk_read"] = read
    return out


def _http(scenario: str, load: Callable[..., Figures], *args: Any) -> Figures:
    """One bench/http_load.py measurement as a row of the report (rows are jobs here)."""
    figures = load(*args)
    return {"scenario": scenario, "model": LR, "system": HTTP, "rows": figures["jobs"],
            "rows_per_s": figures["jobs_per_s"], **figures}  # fmt: skip


def summary(rows: list[Figures], cfg: Config) -> Figures:
    """What the report's HTTP section says: server CPU per job, HTTP against the Python client."""
    http = {r["scenario"]: r for r in rows if r["system"] == HTTP}
    python = {r["scenario"]: r for r in rows if r["system"] == PREDICTQ}
    out: Figures = {
        "api_workers": cfg.api_workers,
        "bulk_read": http.get("bulk", {}).get("bulk_read"),
        "server_cpu_ms_per_job": {s: r["server_cpu_ms_per_job"] for s, r in http.items()},
        "http_over_python": {},
        # The table has no column for them: every row's counts, so that a bad run shows.
        "failed": sum(r.get("failed", 0) for r in rows),
        "wrong": sum(r.get("wrong", 0) for r in rows),
    }
    for scenario, r in http.items():
        if scenario in python:
            out["http_over_python"][scenario] = {
                "http_jobs_per_s": r["jobs_per_s"],
                "python_jobs_per_s": python[scenario]["jobs_per_s"],
                "ratio": r["jobs_per_s"] / python[scenario]["jobs_per_s"],
            }
    if "p50_ms" in http.get("lone", {}) and "p50_ms" in python.get("lone", {}):
        out["lone_p50_ms"] = {"http": http["lone"]["p50_ms"], "python": python["lone"]["p50_ms"]}
    return out
