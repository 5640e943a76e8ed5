"""``python bench/ab.py``: predictq's bulk and lone-job speed, for A/B runs of two checkouts.

Run it with a checkout's own interpreter (``.venv/bin/python bench/ab.py``, from any directory)
and it measures that checkout: it starts its own redis-server and a ``predictq worker -c 2``
from the same tree, registers a 20-feature LogisticRegression (as the full benchmark does), then
times ``submit_many``/``wait_many`` of single-row jobs and lone ``submit``/``wait`` round trips.
It prints one JSON line. To compare a change with an earlier commit, check that commit out in a
git worktree with its own venv, and run the two in turn, several times each, in one sitting:

    for i in 1 2 3; do base/.venv/bin/python bench/ab.py; .venv/bin/python bench/ab.py; done

It uses only what both sides have (the public client, the registry, ``registry.embedded``),
so it runs against checkouts older than itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry import Registry, Settings, keys
from registry.embedded import redis_args, wait_until_answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=20_000, help="single-row jobs in bulk")
    parser.add_argument("--lone", type=int, default=300, help="lone jobs, one at a time")
    args = parser.parse_args()
    import producer

    tree = Path(producer.__file__).resolve().parents[1]
    x, y = make_classification(n_samples=20_000, n_features=20, random_state=0)
    model = LogisticRegression(max_iter=500).fit(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        server = subprocess.Popen(redis_args(port, Path(tmp) / "redis", daemonize=False),
                                  stdout=subprocess.DEVNULL)  # fmt: skip
        worker = None
        try:
            wait_until_answers(url, timeout=10)
            env = {**os.environ, "PREDICTQ_REDIS_URL": url, "PREDICTQ_HOME": f"{tmp}/home",
                   "PREDICTQ_ARTIFACT_DIR": f"{tmp}/artifacts"}  # fmt: skip
            settings = Settings(redis_url=url, home=Path(tmp) / "home",
                                artifact_dir=Path(tmp) / "artifacts")  # fmt: skip
            Registry(settings=settings).register("lr", model, promote=True)
            worker = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker", "-c", "2", "-l", "WARNING",
                 "-n", "ab@localhost"],
                cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            client = Client(url, settings=settings)
            deadline = time.monotonic() + 60
            while not client.redis.exists(keys.worker("ab@localhost")):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start")
                time.sleep(0.05)
            rows = [x[i % len(x) : i % len(x) + 1].tolist() for i in range(args.bulk)]
            client.wait_many(client.submit_many("lr", rows[:2000]), timeout=120)  # warm-up
            t = time.perf_counter()
            results = client.wait_many(client.submit_many("lr", rows), timeout=600)
            bulk = args.bulk / (time.perf_counter() - t)
            assert all(r.status == "succeeded" for r in results)
            for i in range(20):
                client.wait(client.submit("lr", rows[i]), timeout=30)
            lat = []
            for i in range(args.lone):
                t = time.perf_counter()
                client.wait(client.submit("lr", rows[i]), timeout=30)
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(json.dumps({
                "tree": str(tree), "bulk_jobs_per_s": round(bulk),
                "lone_p50_ms": round(statistics.median(lat), 3),
                "lone_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 3),
                "lone_jobs_per_s": round(1000 / statistics.mean(lat)),
            }))  # fmt: skip
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
