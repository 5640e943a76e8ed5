"""Scenario (g): ``predictq score`` on a large CSV beside ``submit_many`` on the same rows.

One predictq worker; a CSV of an ID column and four numeric columns (a LogisticRegression fitted
on named columns). ``predictq score`` runs as its own process, as a user runs it, and its peak
RSS is the process's own high-water mark (``VmHWM``, read while it runs); it is measured on
the full file and on a fifth of it, to show that memory does not grow with the file. The
``submit_many`` leg sends the same rows, already in memory, in jobs of the same size and waits
for them: the queue's own rate, without reading or writing files.
``python -m bench --score [--rows N]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from .config import Config
from .systems import REPO, Predictq, Reaper, RedisServer, _clean_env

MODEL = "score-lr"
FEATURES = ["a", "b", "c", "d"]
ROWS_PER_JOB = 1000


def _csv(path: Path, rows: int, seed: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)).round(6), columns=FEATURES)
    frame.insert(0, "id", np.arange(rows))
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    return frame


def _score(pq: Predictq, path: Path, out: Path) -> dict[str, Any]:
    """``predictq score`` as a process: its summary, wall time and peak RSS."""
    env = _clean_env(PREDICTQ_REDIS_URL=pq.url, PREDICTQ_HOME=str(pq.home),
                     PREDICTQ_ARTIFACT_DIR=str(pq.home / "artifacts"))  # fmt: skip
    errors = out.with_suffix(".stderr")
    t0 = time.perf_counter()
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "score", MODEL, str(path), "-o", str(out),
             "--id-column", "id", "--rows-per-job", str(ROWS_PER_JOB), "--json"],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
        # Not ru_maxrss: the kernel folds into it the high-water mark of the image the child
        # was forked from, before exec (this bench's process, holding every row): it grew with
        # the bench's rows (371 MiB at 2M, 859 MiB at 10M) for a score process whose sampled
        # RSS stayed near 220 MiB. VmHWM is reset at exec.
        peak = [0]
        watcher = threading.Thread(target=_watch_hwm, args=(proc, peak), daemon=True)
        watcher.start()
        stdout = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait()
        watcher.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = errors.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"predictq score exited {proc.returncode}: {tail}")
    summary = json.loads(stdout)
    return {"summary": summary, "seconds": seconds, "peak_rss_mib": peak[0] / 1024}


def _watch_hwm(proc: subprocess.Popen[bytes], peak: list[int]) -> None:
    """Keep ``peak[0]`` at the process's VmHWM (KiB) until it exits; it only grows, so the
    last read before exit misses at most the final 20 ms."""
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:  # exited (or a zombie whose status has no memory lines)
            break
        time.sleep(0.02)


def run(cfg: Config, tmp: Path, reaper: Reaper, log: Any, rows: int) -> list[dict[str, Any]]:
    """Rows for the report: score (full file and a fifth), and submit_many on the same rows."""
    pq = Predictq(reaper, RedisServer(reaper, tmp / "redis-score").url, tmp / "predictq")
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(5000, 4)), columns=FEATURES)
    y = (x["a"] + x["b"] - x["c"] > 0).astype(int)
    estimator = LogisticRegression().fit(x, y)
    pq.registry.register(MODEL, estimator, promote=True)
    big, small = tmp / "score-big.csv", tmp / "score-small.csv"
    t = time.perf_counter()
    frame = _csv(big, rows, 1)
    _csv(small, max(ROWS_PER_JOB, rows // 5), 2)
    log(f"  wrote {rows:,}-row CSV ({big.stat().st_size / 2**20:.0f} MiB) in "
        f"{time.perf_counter() - t:.1f}s")  # fmt: skip
    worker = pq.start_worker(cfg.worker_concurrency, tmp / "worker-score.log")
    out: list[dict[str, Any]] = []
    try:
        jobs = [[r] for r in frame[FEATURES].head(20).to_numpy().tolist()]
        pq.client.wait_many(pq.client.submit_many(MODEL, jobs), timeout=60)  # warm up
        for path, label in ((small, "score (1/5 file)"), (big, "score")):
            leg = _score(pq, path, tmp / f"{path.stem}-out.csv")
            s = leg["summary"]
            wrong = 0
            if path == big:
                got = pd.read_csv(tmp / f"{path.stem}-out.csv", usecols=["prediction"])
                wrong = int(
                    (got["prediction"].to_numpy() != estimator.predict(frame[FEATURES])).sum()
                )
            out.append(_row(label, "predictq score", s["jobs"], s["rows"], leg["seconds"],
                            peak_rss_mib=leg["peak_rss_mib"], inside_seconds=s["seconds"],
                            failed=s["failed"], wrong=wrong))  # fmt: skip
            log(f"  {label}: {s['rows']:,} rows in {leg['seconds']:.1f}s "
                f"({s['rows'] / leg['seconds']:,.0f} rows/s, {s['rows_per_second']:,.0f} inside "
                f"the process), peak RSS {leg['peak_rss_mib']:.0f} MiB, wrong {wrong}")  # fmt: skip
        pq.clear_jobs()
        values = frame[FEATURES].to_numpy().tolist()
        chunks = [values[i : i + ROWS_PER_JOB] for i in range(0, len(values), ROWS_PER_JOB)]
        t0 = time.perf_counter()
        ids = pq.client.submit_many(MODEL, chunks)
        results = pq.client.wait_many(ids, timeout=cfg.job_timeout)
        seconds = time.perf_counter() - t0
        failed = sum(r.status != "succeeded" for r in results)
        out.append(_row("score", "submit_many", len(ids), len(values), seconds, failed=failed))
        log(f"  submit_many: {len(values):,} rows in {seconds:.1f}s "
            f"({len(values) / seconds:,.0f} rows/s)")  # fmt: skip
    finally:
        reaper.stop(worker.proc)
    return out


def _row(scenario: str, system: str, jobs: int, rows: int, seconds: float,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"scenario": scenario, "model": "lr", "system": system, "jobs": jobs, "rows": rows,
            "seconds": seconds, "jobs_per_s": jobs / seconds, "rows_per_s": rows / seconds,
            **extra}  # fmt: skip
