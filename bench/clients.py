"""Client processes of the concurrent scenario: each submits one job, waits for it, repeats.

They run under multiprocessing's forkserver, so they share nothing with the bench process.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from producer import Client
from registry import Settings

from . import naive_app

PREDICTQ = "predictq"
NAIVE = "naive"


def _job_runner(
    system: str, spec: dict[str, str], model: str, timeout: float
) -> Callable[..., Any]:
    """A function running one single-row job to its result on ``system``."""
    if system == PREDICTQ:
        home = Path(spec["home"])
        settings = Settings(redis_url=spec["url"], home=home, artifact_dir=home / "artifacts")
        client = Client(spec["url"], settings=settings)

        def run_predictq(row: list[float]) -> bool:
            res = client.wait(client.submit(model, [row]), timeout=timeout)
            return res.status == "succeeded"

        return run_predictq
    naive_app.use(spec["url"])

    def run_naive(row: list[float]) -> bool:
        naive_app.predict.delay(model, [row]).get(timeout=timeout)
        return True

    return run_naive


def client_main(
    system: str,
    spec: dict[str, str],
    model: str,
    rows: list[list[float]],
    seconds: float,
    warmup: int,
    timeout: float,
    ready: Any,
    start: Any,
    out: Any,
) -> None:
    """Warm up, say ready, wait for the start, then run jobs back to back for ``seconds``."""
    try:
        run = _job_runner(system, spec, model, timeout)
        for row in rows[:warmup]:
            run(row)
        ready.put(True)
        if not start.wait(timeout=120):
            raise TimeoutError("the start signal never came")
        latencies: list[float] = []
        failed = 0
        i = 0
        began = time.perf_counter()
        end = began + seconds
        while (now := time.perf_counter()) < end:
            ok = run(rows[i % len(rows)])
            latencies.append(time.perf_counter() - now)
            failed += not ok
            i += 1
        out.put(
            {
                "jobs": i,
                "failed": failed,
                "seconds": time.perf_counter() - began,
                "latencies": latencies,
            }
        )
    except BaseException as e:
        ready.put(False)
        out.put({"error": f"{type(e).__name__}: {e}"})
        raise


def run_clients(
    system: str,
    spec: dict[str, str],
    model: str,
    rows: list[list[float]],
    n: int,
    seconds: float,
    warmup: int,
    timeout: float,
) -> list[dict[str, Any]]:
    """``n`` client processes run together for ``seconds``; one dict of figures per client."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["bench.clients"])
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = len(rows) // n
    procs = [
        ctx.Process(
            target=client_main,
            daemon=True,
            args=(
                system,
                spec,
                model,
                rows[i * share : (i + 1) * share],
                seconds,
                warmup,
                timeout,
                ready,
                start,
                out,
            ),
        )
        for i in range(n)
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.get(timeout=120):
                break
        start.set()
        results = [out.get(timeout=seconds + timeout + 60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        return results
    except queue.Empty as e:
        raise TimeoutError(f"{system} clients did not report in time") from e
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
