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
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--http",
        action="store_true",
        help="instead: the same through `predictq api` (one lone client, --clients concurrent "
        "clients for --seconds, and --bulk jobs through jobs:batch), with the server's CPU",
    )
    parser.add_argument("--clients", type=int, default=16, help="with --http")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --http")
    parser.add_argument("--api-workers", type=int, default=1, help="with --http")
    parser.add_argument(
        "--no-access-log", action="store_true", help="with --http: the API logs no requests"
    )
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
            if args.http:
                labels = model.predict(x).tolist()
                expected = [labels[i % len(x)] for i in range(args.bulk)]
                flat = [r[0] for r in rows]
                print(json.dumps({"tree": str(tree), **_http(args, tree, env, flat, expected)}))
                return
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


def _http(
    args: argparse.Namespace, tree: Path, env: dict[str, str], rows: list[Any], expected: list[Any]
) -> dict[str, Any]:
    """Serve this checkout's ``predictq api`` and load it (bench/http_load.py)."""
    import http_load  # beside this file: run as a script, bench/ is on sys.path

    key = secrets.token_urlsafe(24)
    port = _free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "worker", "api", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(args.api_workers),
         *(["--no-access-log"] if args.no_access_log else [])],
        cwd=tree, env={**env, "PREDICTQ_API_KEYS": f"ab:{key}:submit"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise SystemExit("the API did not start") from None
                time.sleep(0.05)
        host = "127.0.0.1"
        out: dict[str, Any] = {"api_workers": args.api_workers}
        lone = http_load.lone(host, port, key, "lr", rows[: 20 + args.lone],
                              expected[: 20 + args.lone], 20, api.pid)  # fmt: skip
        out.update({f"lone_{k}": round(v, 3) for k, v in lone.items() if k.endswith(("ms", "job"))})
        many = http_load.concurrent(host, port, key, "lr", rows, expected, args.clients,
                                    args.seconds, api.pid)  # fmt: skip
        out.update({f"c{args.clients}_{k}": round(v, 3) for k, v in many.items()
                    if k.endswith(("ms", "job", "per_s")) or k in ("failed", "wrong")})  # fmt: skip
        has_wait = (
            "/v1/jobs:wait"
            in json.loads(
                urllib.request.urlopen(f"http://{host}:{port}/openapi.json", timeout=30).read()
            )["paths"]
        )
        bulk = http_load.bulk(host, port, key, "lr", rows, expected, 1000, api.pid, has_wait)
        out.update({f"bulk_{k}": round(v, 3) for k, v in bulk.items()
                    if k.endswith(("job", "per_s")) or k in ("failed", "wrong")})  # fmt: skip
        out["bulk_read"] = "jobs:wait" if has_wait else "GET per job"
        return out
    finally:
        api.terminate()
        api.wait(30)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
