"""``python -m bench [--quick] [--events] [--out PATH]``: predictq vs naive Celery vs in-process,
one run; with ``--events``, only what task events cost (bulk single-row jobs, events off vs on);
with ``--http [--api-workers N]``, lone, 16-client and bulk jobs through ``predictq api`` beside
the Python client and naive Celery, with the API's CPU per job."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import celery
import numpy as np
import sklearn

from . import memory, replicas, report, scenarios, scoring, task_events, web
from .clients import NAIVE, PREDICTQ
from .config import Config
from .models import BIG, LR, MIXED, PROMO, RF, Models, build, build_big
from .systems import REPO, Naive, Predictq, Reaper, RedisServer

DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"


class Run:
    """One benchmark run: its systems, the figures it collected and the errors it met."""

    def __init__(self, cfg: Config, tmp: Path, reaper: Reaper) -> None:
        self.cfg = cfg
        self.tmp = tmp
        self.reaper = reaper
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {"rows": [], "notes": [], "errors": []}

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", file=sys.stderr)

    def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one measurement; a failure is recorded and the run goes on."""
        self.log(name)
        try:
            return fn(*args)
        except Exception as e:
            self.log(f"{name} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            self.results["errors"].append({"scenario": name, "error": f"{type(e).__name__}: {e}"})
            return None

    def add(self, figures: dict[str, Any] | None) -> None:
        if figures is None:
            return
        self.results["rows"].append(figures)
        self.log("  " + report.brief(figures))

    def main(self) -> None:
        cfg = self.cfg
        self.log("fitting models")
        t = time.perf_counter()
        models = build(cfg.data_rows, cfg.rf_trees, cfg.rf_fit_rows, self.tmp / "models")
        self.results["models"] = {
            "fit_seconds": models.fit_seconds,
            "seconds": time.perf_counter() - t,
            "rf_trees": cfg.rf_trees,
            "rf_fit_rows": cfg.rf_fit_rows,
        }
        pq_redis = RedisServer(self.reaper, self.tmp / "redis-predictq")
        naive_redis = RedisServer(self.reaper, self.tmp / "redis-naive")
        pq = Predictq(self.reaper, pq_redis.url, self.tmp / "predictq")
        naive = Naive(self.reaper, naive_redis.url, models.paths)
        for name in (LR, RF):
            pq.registry.register(name, models.estimators[name], promote=True)
        pq.registry.register(MIXED, models.estimators[MIXED], promote=True,
                             input_example=models.mixed_frame.head(100))  # fmt: skip
        pq.registry.register(PROMO, models.estimators[LR], promote=True)
        c = cfg.worker_concurrency
        self.log(f"starting a predictq worker and a naive Celery worker (-c {c} each)")
        pq_worker = pq.spawn_worker(c, self.tmp / "worker-predictq.log")
        naive_worker = naive.spawn_worker(self.tmp / "worker-naive.log", c)
        try:
            pq.wait_ready(pq_worker)
            naive.wait_ready(naive_worker)
            self.throughput(pq, naive, models)
        finally:
            for w in (pq_worker, naive_worker):
                code = self.reaper.stop(w.proc)
                self.log(f"stopped {w.name} worker (exit code {code})")
        self.memory(pq)

    def events(self) -> None:
        """Scenario (f) alone: the bulk LogisticRegression scenario with task events off and on."""
        cfg = self.cfg
        self.log("fitting models")
        models = build(cfg.data_rows, cfg.rf_trees, cfg.rf_fit_rows, self.tmp / "models")
        pq = Predictq(self.reaper, RedisServer(self.reaper, self.tmp / "redis-predictq").url,
                      self.tmp / "predictq")  # fmt: skip
        pq.registry.register(LR, models.estimators[LR], promote=True)
        rows = models.rows(cfg.bulk_jobs)
        expected = scenarios.predict_all(models.estimators[LR], rows)
        legs = self.step(
            f"bulk {LR} predictq ({len(rows):,} jobs), task events off vs on, "
            f"{cfg.event_rounds} round(s)",
            task_events.measure, pq, LR, rows, expected, cfg.event_rounds, self.tmp,
            cfg.job_timeout, self.log, cfg.worker_concurrency,
        )  # fmt: skip
        for figures in legs or []:
            self.add(figures)
        self.results["task_events"] = task_events.summary(self.results["rows"])

    def throughput(self, pq: Predictq, naive: Naive, models: Models) -> None:
        """Scenarios (a) to (d), on the two running workers."""
        cfg = self.cfg
        timeout = cfg.job_timeout
        rows = models.rows(cfg.bulk_jobs)
        k = cfg.naive_bulk_jobs

        def clean() -> None:
            pq.clear_jobs()
            naive.clear_results()

        for name in (LR, RF, MIXED):
            est = models.estimators[name]
            bulk = models.records(cfg.bulk_jobs) if name == MIXED else rows
            expected = scenarios.predict_all(est, bulk)
            scenarios.warm_up(pq, name, bulk[: 4 * cfg.worker_concurrency])
            clean()
            self.add(self.step(f"bulk {name} in-process", scenarios.in_process, est, name, bulk))
            self.add(
                self.step(
                    f"bulk {name} predictq ({len(bulk):,} jobs)",
                    scenarios.bulk_predictq,
                    pq,
                    name,
                    bulk,
                    expected,
                    timeout,
                )
            )
            clean()
            self.add(
                self.step(
                    f"bulk {name} naive ({k:,} jobs)",
                    scenarios.bulk_naive,
                    naive,
                    name,
                    bulk[:k],
                    expected[:k],
                    timeout,
                )
            )
            clean()
        specs = {PREDICTQ: pq.client_spec(), NAIVE: {"url": naive.url}}
        for name in (LR, RF):
            for system, spec in specs.items():
                self.add(
                    self.step(
                        f"concurrent {name} {system} ({cfg.clients} clients, "
                        f"{cfg.concurrent_seconds}s)",
                        scenarios.concurrent,
                        system,
                        spec,
                        name,
                        rows,
                        cfg.clients,
                        cfg.concurrent_seconds,
                        cfg.warmup_jobs,
                        timeout,
                    )
                )
                clean()
        lone_rows = rows[: cfg.warmup_jobs + cfg.lone_jobs]
        for name in (LR, RF):
            for system in (PREDICTQ, NAIVE):
                self.add(
                    self.step(
                        f"lone {name} {system} ({cfg.lone_jobs} jobs)",
                        scenarios.lone,
                        system,
                        pq,
                        name,
                        lone_rows,
                        cfg.warmup_jobs,
                        timeout,
                    )
                )
                clean()
        promo_rows = rows[: cfg.promotion_jobs]
        expected_by_version = {
            1: scenarios.predict_all(models.estimators[LR], promo_rows),
            2: scenarios.predict_all(models.promo_v2, promo_rows),
        }
        self.results["promotion"] = self.step(
            f"promotion under load ({len(promo_rows):,} jobs)",
            scenarios.promotion,
            pq,
            PROMO,
            promo_rows,
            models.promo_v2,
            expected_by_version,
            timeout,
            cfg.promotion_chunk,
        )
        clean()

    def memory(self, pq: Predictq) -> None:
        cfg = self.cfg

        def run() -> dict[str, Any]:
            t = time.perf_counter()
            forest = build_big(cfg.big_rows, cfg.big_trees)
            fit = time.perf_counter() - t
            meta = pq.registry.register(BIG, forest, promote=True)

            def register_again() -> int:
                # The same forest as a new version: same bytes, but loaded as a version apart.
                return pq.registry.register(BIG, forest, description="bench: v2").version

            self.log(
                f"  large forest: {cfg.big_trees} trees, {meta.size / 2**20:.1f} MiB, "
                f"fitted in {fit:.1f}s"
            )
            data = np.random.default_rng(0).normal(size=(64, meta.signature.n_features)).tolist()
            out = memory.measure(
                pq,
                BIG,
                data,
                cfg.jobs_per_pool_process,
                self.tmp,
                cfg.job_timeout,
                register_again,
            )
            return {
                "model": BIG,
                "trees": cfg.big_trees,
                "rows": cfg.big_rows,
                "file_mib": meta.size / 2**20,
                "fit_seconds": fit,
                **out,
            }

        self.results["memory"] = self.step("memory (large forest, -c 1 then -c 2)", run)


def _keep_logs(tmp: Path, dest: Path) -> None:
    """Copy the worker and Redis logs next to the JSON (the temp dir is about to go)."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in tmp.rglob("*.log"):
        name = log.name if log.parent == tmp else f"{log.parent.name}-{log.name}"
        shutil.copyfile(log, dest / name)


def _meta(cfg: Config) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "when": datetime.now(UTC).isoformat(),
        "quick": cfg.quick,
        "commit": commit,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "celery": celery.__version__,
        "cpus": _cpus(),
        "platform": platform.platform(),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N and models (< 1 minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="instead: the cost of PREDICTQ_MIN_REPLICAS 0 vs 1, with a replica attached",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="instead: what task events cost: bulk single-row jobs, events off vs on",
    )
    parser.add_argument(
        "--score",
        action="store_true",
        help="instead: `predictq score` on a large CSV (rows/s, peak RSS) beside submit_many",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="with --score: CSV rows")
    parser.add_argument(
        "--http",
        action="store_true",
        help="instead: lone, 16-client and bulk jobs through `predictq api` beside the Python "
        "client and naive Celery (LogisticRegression), with the API's CPU per job",
    )
    parser.add_argument(
        "--api-workers", type=_positive, default=1, help="with --http: uvicorn worker processes"
    )
    args = parser.parse_args(argv)
    cfg = Config.quick_run() if args.quick else Config.full()
    cfg = dataclasses.replace(cfg, api_workers=args.api_workers)
    signal.signal(signal.SIGTERM, _terminate)
    reaper = Reaper()
    with tempfile.TemporaryDirectory(prefix="predictq-bench-") as tmp:
        run = Run(cfg, Path(tmp), reaper)
        try:
            if args.replicas:
                run.results["rows"] += replicas.run(cfg, Path(tmp), reaper, run.log)
            elif args.events:
                run.events()
            elif args.score:
                run.results["rows"] += scoring.run(cfg, Path(tmp), reaper, run.log, args.rows)
            elif args.http:
                run.results["rows"] += web.run(cfg, Path(tmp), reaper, run.log, run.step)
            else:
                run.main()
        except Exception as e:
            run.log(f"run aborted: {type(e).__name__}: {e}")
            traceback.print_exc()
            run.results["errors"].append({"scenario": "run", "error": f"{type(e).__name__}: {e}"})
        finally:
            reaper.close()
            _keep_logs(Path(tmp), args.out.parent / "logs")
    results = {"meta": _meta(cfg), "config": vars(cfg).copy(), **run.results}
    results["wall_seconds"] = time.perf_counter() - run.started
    report.add_ratios(results["rows"])
    results["notes"] = _notes(cfg, results)
    if args.score:
        results["notes"][0] = (
            f"notes: --score: one predictq worker with {cfg.worker_concurrency} processes on "
            f"{results['meta']['cpus']} CPUs; `predictq score` runs as its own process (its wall "
            "time includes start-up, checksum, reading and writing the files; peak RSS is its "
            "VmHWM, read while it runs); submit_many sends the same rows, already in memory, in "
            "jobs of the same size."
        )
    if args.http:
        results["http"] = web.summary(results["rows"], cfg)
        results["notes"][0] = (
            f"notes: --http: one predictq worker and one naive Celery worker with "
            f"{cfg.worker_concurrency} processes each, `predictq api` with {cfg.api_workers} "
            f"uvicorn worker(s), on {results['meta']['cpus']} CPUs with the clients; "
            f"{cfg.http_clients} concurrent clients are processes for the Python client and "
            "naive, connections of one asyncio process for HTTP; HTTP bulk is jobs:batch in "
            f"batches of {web.BATCH}; bulk naive runs {cfg.naive_bulk_jobs:,} jobs (the others "
            f"{cfg.http_bulk_jobs:,}) and is reported as a rate; server CPU is the api "
            "process's user + system time over each measured span, per job."
        )
    if args.replicas:
        results["notes"][0] = (
            "notes: --replicas: a primary with one replica on this host (WAIT costs a loopback "
            "round trip), one predictq worker; the same jobs with PREDICTQ_MIN_REPLICAS 0 and 1."
        )
    print(report.render(results))
    print(f"\nwall time {results['wall_seconds']:.1f}s; figures saved to {args.out}")
    report.save(results, args.out)
    return 1 if results["errors"] else 0


def _notes(cfg: Config, results: dict[str, Any]) -> list[str]:
    if "task_events" in results:
        notes = [
            f"notes: each leg starts a fresh worker with {cfg.worker_concurrency} processes on "
            f"{results['meta']['cpus']} CPUs; an event listener (as Flower) runs in the bench "
            "process, on the same CPUs.",
        ]
        if cfg.quick:
            notes.append("quick run: small N and one round; figures are indicative only.")
        return notes
    notes = [
        f"notes: bulk naive runs {cfg.naive_bulk_jobs:,} jobs (predictq {cfg.bulk_jobs:,}) and "
        "is reported as a rate; in-process is one predict() over all rows (best of 3); "
        f"ratios compare rows/s; every worker has {cfg.worker_concurrency} processes on "
        f"{results['meta']['cpus']} CPUs; clients run on the same CPUs.",
    ]
    if cfg.quick:
        notes.append("quick run: small N and short runs; figures are indicative only.")
    return notes


if __name__ == "__main__":
    sys.exit(main())
