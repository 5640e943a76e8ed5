"""Scenarios (a)-(d): bulk, concurrent clients, lone jobs and promotion under load.

Each returns plain dicts (one per system) that report.py tabulates and saves.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import numpy as np
from celery.result import ResultSet

from producer import Client, JobResult

from . import clients, naive_app
from .systems import BenchError, Naive, Predictq, wait_for

Figures = dict[str, Any]


def percentiles(latencies: list[float]) -> Figures:
    """p50/p95/p99 of ``latencies`` (seconds) in milliseconds."""
    if not latencies:
        return {}
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def _figures(
    scenario: str, model: str, system: str, jobs: int, rows: int, seconds: float, **extra: Any
) -> Figures:
    return {
        "scenario": scenario,
        "model": model,
        "system": system,
        "jobs": jobs,
        "rows": rows,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "rows_per_s": rows / seconds,
        **extra,
    }


def model_input(rows: list[Any]) -> Any:
    """What predict() takes in one process: a float array, or a DataFrame of records."""
    if rows and isinstance(rows[0], dict):
        import pandas as pd

        return pd.DataFrame(rows)
    return np.asarray(rows, dtype=np.float64)


def predict_all(estimator: Any, rows: list[Any]) -> list[Any]:
    result: list[Any] = estimator.predict(model_input(rows)).tolist()
    return result


def warm_up(pq: Predictq, model: str, rows: list[list[float]]) -> None:
    """A few jobs on each system, so that no measurement pays for a first call."""
    pq.client.wait_many(pq.client.submit_many(model, [[r] for r in rows]), timeout=60)
    ResultSet([naive_app.predict.delay(model, [r]) for r in rows]).get(timeout=60)


# -- (a) bulk ------------------------------------------------------------------------------


def bulk_predictq(
    pq: Predictq, model: str, rows: list[list[float]], expected: list[Any], timeout: float
) -> Figures:
    """N single-row jobs through submit_many, then wait_many."""
    jobs = [[row] for row in rows]
    cpu = time.process_time()
    t0 = time.perf_counter()
    ids = pq.client.submit_many(model, jobs)
    t1 = time.perf_counter()
    results = pq.client.wait_many(ids, timeout=timeout)
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu
    failed = sum(r.status != "succeeded" for r in results)
    wrong = sum(r.predictions != [e] for r, e in zip(results, expected, strict=True))
    return _figures(
        "bulk",
        model,
        "predictq",
        len(jobs),
        len(jobs),
        t2 - t0,
        submit_seconds=t1 - t0,
        failed=failed,
        wrong=wrong,
        client_cpu_seconds=cpu,
    )


def bulk_naive(
    naive: Naive, model: str, rows: list[list[float]], expected: list[Any], timeout: float
) -> Figures:
    """One apply_async per job, then a ResultSet collects every result."""
    cpu = time.process_time()
    t0 = time.perf_counter()
    pending = [naive_app.predict.apply_async(args=(model, [row])) for row in rows]
    t1 = time.perf_counter()
    values = ResultSet(pending).get(timeout=timeout)
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu
    wrong = sum(v != [e] for v, e in zip(values, expected, strict=True))
    naive.clear_results()
    return _figures(
        "bulk",
        model,
        "naive",
        len(rows),
        len(rows),
        t2 - t0,
        submit_seconds=t1 - t0,
        failed=0,
        wrong=wrong,
        client_cpu_seconds=cpu,
    )


def in_process(estimator: Any, model: str, rows: list[list[float]], repeats: int = 3) -> Figures:
    """One predict() over all rows in this process: the bound (best of ``repeats``)."""
    x = model_input(rows)
    best = min(_timed(estimator.predict, x) for _ in range(repeats))
    return _figures("bulk", model, "in-process", 1, len(rows), best)


def _timed(fn: Any, *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


# -- (b) concurrent clients ----------------------------------------------------------------


def concurrent(
    system: str,
    spec: dict[str, str],
    model: str,
    rows: list[list[float]],
    n_clients: int,
    seconds: float,
    warmup: int,
    timeout: float,
) -> Figures:
    """``n_clients`` processes each running submit-then-wait in a loop for ``seconds``."""
    per_client = clients.run_clients(system, spec, model, rows, n_clients, seconds, warmup, timeout)
    errors = [c["error"] for c in per_client if "error" in c]
    if errors:
        raise BenchError(f"{system} client failed: {errors[0]}")
    jobs = sum(c["jobs"] for c in per_client)
    rate = sum(c["jobs"] / c["seconds"] for c in per_client)
    latencies = [lat for c in per_client for lat in c["latencies"]]
    return {
        "scenario": f"concurrent x{n_clients}",
        "model": model,
        "system": system,
        "jobs": jobs,
        "rows": jobs,
        "seconds": max(c["seconds"] for c in per_client),
        "jobs_per_s": rate,
        "rows_per_s": rate,
        "failed": sum(c["failed"] for c in per_client),
        **percentiles(latencies),
    }


# -- (c) lone jobs -------------------------------------------------------------------------


def lone(
    system: str, pq: Predictq, model: str, rows: list[list[float]], warmup: int, timeout: float
) -> Figures:
    """One job at a time: submit-to-result latency."""
    if system == clients.PREDICTQ:

        def run(row: list[float]) -> bool:
            res = pq.client.wait(pq.client.submit(model, [row]), timeout=timeout)
            return res.status == "succeeded"
    else:

        def run(row: list[float]) -> bool:
            naive_app.predict.delay(model, [row]).get(timeout=timeout)
            return True

    for row in rows[:warmup]:
        run(row)
    latencies = []
    failed = 0
    t0 = time.perf_counter()
    for row in rows[warmup:]:
        t = time.perf_counter()
        failed += not run(row)
        latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    n = len(latencies)
    return _figures("lone", model, system, n, n, total, failed=failed, **percentiles(latencies))


# -- (d) promotion under load --------------------------------------------------------------


def _stream(
    client: Client,
    model: str,
    jobs: list[list[list[float]]],
    chunk: int,
    ids: list[str],
    errors: list[BaseException],
) -> None:
    """Submit ``jobs`` chunk by chunk, appending their IDs to ``ids`` (a producer thread)."""
    try:
        for start in range(0, len(jobs), chunk):
            ids.extend(client.submit_many(model, jobs[start : start + chunk]))
    except BaseException as e:
        errors.append(e)


def promotion(
    pq: Predictq,
    model: str,
    rows: list[list[float]],
    v2: Any,
    expected: dict[int, list[Any]],
    timeout: float,
    chunk: int,
) -> Figures:
    """Jobs stream in from a producer thread; v2 is registered and promoted once half are in.

    Per worker process: the time from promote() returning to its first job that ran on v2
    (started, and finished); and whether any job started after promote() returned ran on v1.
    """
    jobs = [[row] for row in rows]
    ids: list[str] = []
    errors: list[BaseException] = []
    submitter = Client(pq.url, settings=pq.settings)
    producer = threading.Thread(target=_stream, args=(submitter, model, jobs, chunk, ids, errors))
    t0 = time.perf_counter()
    producer.start()
    try:
        wait_for(
            lambda: errors or (len(ids) >= len(jobs) // 2 and pq.client.result(ids[0]).done),
            timeout,
            "half of the promotion run",
        )
        meta = pq.registry.register(model, v2, description="bench: v2, every prediction flipped")
        t_call = time.time()
        pq.registry.promote(model, meta.version)
        t_promoted = time.time()
    finally:
        producer.join(timeout)
    if errors:
        raise BenchError(f"submitting failed: {errors[0]!r}")
    results = submitter.wait_many(ids, timeout=timeout)
    seconds = time.perf_counter() - t0
    submitter.close()
    return _promotion_figures(results, meta.version, t_call, t_promoted, expected, seconds)


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _promotion_figures(
    results: list[JobResult],
    v2: int,
    t_call: float,
    t_promoted: float,
    expected: dict[int, list[Any]],
    seconds: float,
) -> Figures:
    """Who ran what, relative to the moment promote() returned."""
    per_worker: dict[str, Figures] = {}
    after = sorted(
        (r for r in results if (_ts(r.started_at) or 0.0) >= t_promoted),
        key=lambda r: _ts(r.started_at) or 0.0,
    )
    for r in after:
        w = per_worker.setdefault(str(r.worker), {"jobs_after": 0, "v1_after": 0})
        w["jobs_after"] += 1
        w["v1_after"] += r.version != v2
        w.setdefault("first_version", r.version)
        if r.version == v2 and "first_v2_started_ms" not in w:
            w["first_v2_started_ms"] = ((_ts(r.started_at) or 0.0) - t_promoted) * 1000
            w["first_v2_finished_ms"] = ((_ts(r.finished_at) or 0.0) - t_promoted) * 1000
    started = [w.get("first_v2_started_ms") for w in per_worker.values()]
    finished = [w.get("first_v2_finished_ms") for w in per_worker.values()]
    submitted = [_ts(r.submitted_at) or 0.0 for r in results]
    return _figures(
        "promotion",
        results[0].model,
        "predictq",
        len(results),
        len(results),
        seconds,
        failed=sum(r.status != "succeeded" for r in results),
        wrong=sum(
            r.version not in expected or r.predictions != [expected[r.version][i]]
            for i, r in enumerate(results)
        ),
        promote_call_ms=(t_promoted - t_call) * 1000,
        v2=v2,
        jobs_on_v1=sum(r.version != v2 for r in results),
        jobs_on_v2=sum(r.version == v2 for r in results),
        submitted_before_promote=sum(s < t_promoted for s in submitted),
        queued_at_promote=sum(
            s < t_promoted <= (_ts(r.started_at) or 0.0)
            for s, r in zip(submitted, results, strict=True)
        ),
        running_at_promote=sum(
            (_ts(r.started_at) or 0.0) < t_promoted < (_ts(r.finished_at) or 0.0) for r in results
        ),
        v1_started_after_promote=sum(w["v1_after"] for w in per_worker.values()),
        worker_processes=len({str(r.worker) for r in results}),
        workers_reaching_v2=sum(v is not None for v in started),
        all_on_v2_started_ms=max((v for v in started if v is not None), default=None),
        all_on_v2_finished_ms=max((v for v in finished if v is not None), default=None),
        per_worker=per_worker,
    )
