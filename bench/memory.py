"""Scenario (e): the memory a large forest costs a predictq worker with one and two processes.

PSS (proportional set size) splits each shared page between the processes that map it, so the
sum over the worker's parent and pool processes counts a copy-on-write model once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .systems import BenchError, Predictq, Worker


def pss_kib(pid: int) -> int:
    """The ``Pss:`` line of /proc/PID/smaps_rollup, in KiB (psutil's figure as a fallback)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return int(psutil.Process(pid).memory_full_info().pss // 1024)


def tree_memory(pid: int) -> dict[str, Any]:
    """PSS and RSS of ``pid`` and all its descendants."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    per = {
        p.pid: {"pss_mib": pss_kib(p.pid) / 1024, "rss_mib": p.memory_info().rss / 2**20}
        for p in procs
    }
    return {
        "pss_mib": sum(v["pss_mib"] for v in per.values()),
        "rss_mib": sum(v["rss_mib"] for v in per.values()),
        "processes": {str(k): v for k, v in per.items()},
    }


def serve_until_each_process_worked(
    pq: Predictq,
    worker: Worker,
    model: str,
    rows: list[list[float]],
    concurrency: int,
    per_process: int,
    timeout: float,
    version: int | None = None,
    rows_per_job: int = 16,
) -> Counter[str]:
    """Submit rounds of jobs until every pool process of ``worker`` served ``per_process``
    (on ``version``, when given)."""
    served: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        pool = {str(c.pid) for c in psutil.Process(worker.proc.pid).children()}
        done = {
            pid
            for pid in pool
            if any(w.endswith(":" + pid) and n >= per_process for w, n in served.items())
        }
        if len(pool) >= concurrency and done == pool:
            return served
        if time.monotonic() > deadline:
            raise BenchError(f"pool processes {sorted(pool - done)} served too few jobs: {served}")
        # One submission per job, so that each idle pool process is woken with its own job.
        batch = [rows[(i + k) % len(rows) :][:rows_per_job] for k in range(2 * concurrency)]
        i += len(batch)
        ids = [pq.client.submit(model, job) for job in batch]
        results = pq.client.wait_many(ids, timeout=timeout)
        bad = [r for r in results if r.status != "succeeded"]
        if bad:
            raise BenchError(f"a job on the large forest failed: {bad[0].error}")
        served.update(str(r.worker) for r in results if version in (None, r.version))


def measure(
    pq: Predictq,
    model: str,
    rows: list[list[float]],
    per_process: int,
    log_dir: Path,
    timeout: float,
    register_again: Callable[[], int],
) -> dict[str, Any]:
    """Serve ``model`` with ``-c 1`` then ``-c 2``; PSS of each worker once it has served.

    Then, on the ``-c 2`` worker, promote a new version (``register_again`` registers it) and
    measure again once every pool process has served it: versions loaded after the fork are
    not shared copy-on-write.
    """
    out: dict[str, Any] = {}
    for concurrency in (1, 2):
        t = time.perf_counter()
        worker = pq.start_worker(
            concurrency, log_dir / f"worker-mem-c{concurrency}.log", models=model, timeout=timeout
        )
        try:
            ready = time.perf_counter() - t
            served = serve_until_each_process_worked(
                pq, worker, model, rows, concurrency, per_process, timeout
            )
            out[f"c{concurrency}"] = {
                "startup_seconds": ready,
                "jobs_served": dict(served),
                **tree_memory(worker.proc.pid),
            }
            if concurrency == 2:
                out["c2_after_promote"] = _after_promote(
                    pq, worker, model, rows, per_process, timeout, register_again
                )
        finally:
            pq.reaper.stop(worker.proc)
    if "c2_after_promote" in out:
        after = out["c2_after_promote"]
        after["pss_growth_mib"] = after["pss_mib"] - out["c2"]["pss_mib"]
    out["pss_ratio_c2_c1"] = out["c2"]["pss_mib"] / out["c1"]["pss_mib"]
    out["rss_ratio_c2_c1"] = out["c2"]["rss_mib"] / out["c1"]["rss_mib"]
    return out


def _after_promote(
    pq: Predictq,
    worker: Worker,
    model: str,
    rows: list[list[float]],
    per_process: int,
    timeout: float,
    register_again: Callable[[], int],
) -> dict[str, Any]:
    version = register_again()
    t = time.perf_counter()
    pq.registry.promote(model, version)
    served = serve_until_each_process_worked(
        pq, worker, model, rows, worker.concurrency, 1, timeout, version=version
    )
    swap = time.perf_counter() - t
    # The old version is only evicted beyond PREDICTQ_MODEL_CACHE_SIZE spare versions.
    serve_until_each_process_worked(
        pq, worker, model, rows, worker.concurrency, per_process, timeout, version=version
    )
    return {
        "version": version,
        "all_on_new_version_seconds": swap,
        "jobs_served": dict(served),
        **tree_memory(worker.proc.pid),
    }
