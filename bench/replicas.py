"""The cost of PREDICTQ_MIN_REPLICAS: bulk and lone-job submission with a replica attached.

A primary with one replica on this host (so WAIT costs a loopback round trip plus the replica's
apply, a lower bound on a real network), one predictq worker, and the same jobs submitted with
MIN_REPLICAS 0 and 1 from one process. ``python -m bench --replicas [--quick]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry.embedded import redis_args, wait_until_answers

from .config import Config
from .scenarios import percentiles
from .systems import Predictq, Reaper, RedisServer, free_port, wait_for

MODEL = "lr"


class Replica:
    """A replica of ``primary``, started like the bench's other servers, once in sync."""

    def __init__(self, reaper: Reaper, data_dir: Path, primary: RedisServer) -> None:
        self.port = free_port()
        args = redis_args(self.port, data_dir, daemonize=False)
        self.proc = reaper.spawn([*args, "--replicaof", "127.0.0.1", str(primary.port)])
        wait_until_answers(f"redis://127.0.0.1:{self.port}/0", 10)
        main = redis.Redis.from_url(primary.url, decode_responses=True)
        # WAIT counts only replicas past their first sync.
        wait_for(lambda: _online(main) >= 1, 60, "the replica's first sync", self.proc)
        main.close()


def _online(r: redis.Redis) -> int:
    info = r.info("replication")
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    states = [v.get("state") for v in replicas]
    return states.count("online")


def run(cfg: Config, tmp: Path, reaper: Reaper, log: Any) -> list[dict[str, Any]]:
    """Rows for the report: bulk and lone figures for MIN_REPLICAS 0 and 1."""
    primary = RedisServer(reaper, tmp / "redis-primary")
    Replica(reaper, tmp / "redis-replica", primary)
    pq = Predictq(reaper, primary.url, tmp / "predictq")
    x, y = make_classification(n_samples=cfg.data_rows, n_features=20, random_state=0)
    pq.registry.register(MODEL, LogisticRegression(max_iter=500).fit(x, y), promote=True)
    worker = pq.start_worker(cfg.worker_concurrency, tmp / "worker-replicas.log")
    rows: list[dict[str, Any]] = []
    jobs = [[row] for row in x[: cfg.bulk_jobs].tolist()]
    try:
        for need in (0, 1):
            settings = pq.settings.model_copy(update={"min_replicas": need})
            with Client(primary.url, settings=settings) as client:
                system = f"min_replicas={need}"
                client.wait_many(client.submit_many(MODEL, jobs[:20]), timeout=60)  # warm up
                t0 = time.perf_counter()
                ids = client.submit_many(MODEL, jobs)
                t1 = time.perf_counter()
                results = client.wait_many(ids, timeout=cfg.job_timeout)
                t2 = time.perf_counter()
                rows.append(_row("bulk+replica", system, len(ids), t2 - t0,
                                 submit_seconds=t1 - t0,
                                 failed=sum(r.status != "succeeded" for r in results)))  # fmt: skip
                log(f"  bulk {system}: submit {t1 - t0:.3f}s, all done {t2 - t0:.3f}s")
                submit_lat, total_lat = [], []
                lone = jobs[: cfg.lone_jobs]
                t0 = time.perf_counter()
                for job in lone:
                    t = time.perf_counter()
                    job_id = client.submit(MODEL, job)
                    submit_lat.append(time.perf_counter() - t)
                    client.wait(job_id, timeout=cfg.job_timeout)
                    total_lat.append(time.perf_counter() - t)
                n = len(lone)
                submit_p50 = float(np.percentile(np.asarray(submit_lat) * 1000, 50))
                rows.append(_row("lone+replica", system, n, time.perf_counter() - t0,
                                 submit_p50_ms=submit_p50, **percentiles(total_lat)))  # fmt: skip
                log(f"  lone {system}: submit p50 {submit_p50:.2f} ms")
                pq.clear_jobs()
    finally:
        reaper.stop(worker.proc)
    return rows


def _row(scenario: str, system: str, jobs: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "model": MODEL, "system": f"predictq {system}", "jobs": jobs,
            "rows": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds,
            "rows_per_s": jobs / seconds, **extra}  # fmt: skip
