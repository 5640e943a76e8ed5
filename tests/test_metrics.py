"""Prometheus metrics: a real worker node and a real API scraped during a run, parsed as
Prometheus parses them; and ``predictq status --json`` checked against the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry import Registry, Settings, keys
from registry.status import snapshot
from worker.metrics import BATCH_BUCKETS, CONTRACT, QUEUE_BUCKETS, _Shard, bucket_counts

from .conftest import REPO, ApiServer, free_port, wait_for
from .poison import KillerClassifier, SlowClassifier

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
ROW = [0.5] * 6


def scrape(url: str) -> Samples:
    """Every sample of ``url``/metrics, parsed by prometheus_client's own text parser."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def status_json(env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "worker", "status", "--json"], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def pool_pids(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children()}


@pytest.mark.timeout(240)
def test_worker_and_api_metrics_and_status_follow_a_run_across_a_promotion(
    env, registry: Registry, client: Client, fitted, dataset, start_worker, r: redis.Redis,
    redis_url: str, tmp_path: Path, settings: Settings,
) -> None:  # fmt: skip
    import os

    penv = {**os.environ, **env}
    x, y = dataset
    registry.register("clf", fitted, promote=True)
    registry.register("other", fitted, promote=True)
    registry.register("slow", SlowClassifier(delay=10.0).fit(x, y), promote=True)
    broken = registry.register("broken", LogisticRegression(C=0.5, max_iter=500).fit(x, y))
    registry.store.blob_path(broken.sha256).write_bytes(b"not the registered artifact")
    api = ApiServer(env, tmp_path / "api.log", workers=2)
    try:
        # A backlog with no worker running: jobs, not messages (submit_many sends batches).
        clf_ids = client.submit_many("clf", [[ROW]] * 30)
        other_ids = client.submit_many("other", [[ROW]] * 10)
        cancelled = client.submit_many("clf", [[ROW]] * 5)
        client.cancel_many(cancelled)
        bad_id = client.submit("broken", [ROW], version=1)
        stock = Celery(broker=redis_url)
        stock.conf.task_serializer = "json"
        nosuch = stock.send_task("predictq.predict", kwargs={"model": "nosuch", "rows": [ROW]},
                                 queue="predictq")  # fmt: skip
        before = scrape(api.url)
        assert value(before, "predictq_queue_jobs", queue="predictq") == 41
        assert value(before, "predictq_queue_jobs", queue="predictq.isolate") == 0
        assert value(before, "predictq_workers") == 0
        assert value(before, "predictq_running_jobs") == 0
        assert value(before, "predictq_served_version", model="clf", alias="production") == 1
        idle = status_json(penv)
        assert idle["queues"]["predictq"]["jobs"] == 41
        assert idle["running"] == 0 and idle["workers"] == []
        assert idle["served"] == {
            "broken": {},
            "clf": {"production": 1},
            "other": {"production": 1},
            "slow": {"production": 1},
        }
        assert idle["recent"]["models"]["clf"]["cancelled"] == 5

        port = free_port()
        node = f"http://127.0.0.1:{port}"
        worker = start_worker(
            concurrency=2, PREDICTQ_METRICS_PORT=str(port), PREDICTQ_MAX_ATTEMPTS="1"
        )
        results = client.wait_many(clf_ids + other_ids + [bad_id], timeout=60)
        assert [res.status for res in results[:-1]] == ["succeeded"] * 40
        assert results[-1].error is not None and results[-1].error.code == "integrity_error"
        wait_for(lambda: client.result(nosuch.id).status == "failed", 30, "the stock job")

        def counted() -> bool:
            s = scrape(node)
            return (value(s, "predictq_jobs_total", model="clf", version="1",
                          status="succeeded") == 30
                    and value(s, "predictq_jobs_total", model="nosuch", version="",
                              status="failed") == 1
                    and value(s, "predictq_jobs_total", model="clf", version="",
                              status="cancelled") == 5)  # fmt: skip

        wait_for(counted, 30, "the node's counters")
        s = scrape(node)
        assert value(s, "predictq_jobs_total", model="other", version="1", status="succeeded") == 10
        assert value(s, "predictq_jobs_total", model="broken", version="1", status="failed") == 1
        assert value(s, "predictq_job_errors_total", model="broken", code="integrity_error") == 1
        assert value(s, "predictq_job_errors_total", model="nosuch", code="model_not_found") == 1
        assert value(s, "predictq_model_load_failures_total", model="broken", version="1") >= 1
        assert value(s, "predictq_job_queue_seconds_count", model="clf") == 30
        assert value(s, "predictq_job_queue_seconds_bucket", model="clf", le="+Inf") == 30
        assert value(s, "predictq_job_run_seconds_count", model="other") == 10
        assert value(s, "predictq_batch_jobs_sum", model="clf") == 30
        assert value(s, "predictq_queue_jobs", queue="predictq") == 0
        assert value(s, "predictq_workers") == 1
        assert value(scrape(api.url), "predictq_queue_jobs", queue="predictq") == 0
        # Every contracted name is exported; no label carries a hostname or a job ID.
        names = {n for (n, _) in s}
        for name, typ in CONTRACT.items():
            assert (f"{name}_count" if typ == "histogram" else name) in names, name
        for _, labels in s:
            for _, label in labels:
                assert worker.name.partition("@")[0] not in label and nosuch.id not in label

        # Running jobs, and status against the run.
        r.hset(keys.LOAD_FAILURES, "clf:9:predictq-gone@host:4242",
               json.dumps({"code": "internal", "message": "x", "at": 1.0}))  # fmt: skip
        slow_id = client.submit("slow", [ROW])
        wait_for(lambda: snapshot(r, settings).running == 1, 30, "the slow job to run")
        assert value(scrape(node), "predictq_running_jobs") == 1
        seen = status_json(penv)
        assert seen["running"] == 1
        assert [w["name"] for w in seen["workers"]] == [worker.name]
        assert seen["workers"][0]["concurrency"] == 2
        assert seen["queues"]["predictq"]["jobs"] == 0
        assert seen["recent"]["models"]["clf"] == {"succeeded": 30, "failed": 0, "cancelled": 5}
        assert seen["recent"]["models"]["other"]["succeeded"] == 10
        assert seen["recent"]["models"]["broken"]["failed"] == 1
        # The dead node's load failure is left out; the live one's is shown.
        assert {(f["model"], f["version"]) for f in seen["load_failures"]} == {("broken", 1)}
        # A promotion recycles the pool (the slow job's process once it is done): totals never
        # drop, new jobs count under v2.
        old = pool_pids(worker.proc.pid)
        registry.register("clf", fitted)
        registry.promote("clf", 2)
        wait_for(lambda: not (pool_pids(worker.proc.pid) & old), 60, "the pool to be recycled")
        assert client.wait(slow_id, timeout=30).status == "succeeded"
        assert snapshot(r, settings).running == 0
        v2 = client.submit_many("clf", [[ROW]] * 20)
        assert {res.version for res in client.wait_many(v2, timeout=60)} == {2}

        def promoted() -> bool:
            s = scrape(node)
            return value(s, "predictq_jobs_total", model="clf", version="2",
                         status="succeeded") == 20  # fmt: skip

        wait_for(promoted, 30, "v2's jobs to be counted")
        after = scrape(node)
        assert (
            value(after, "predictq_jobs_total", model="clf", version="1", status="succeeded") == 30
        )
        assert value(after, "predictq_jobs_total", model="other", version="1",
                     status="succeeded") == 10  # fmt: skip
        assert value(after, "predictq_job_queue_seconds_count", model="clf") == 50
        assert value(after, "predictq_served_version", model="clf", alias="production") == 2
        assert value(scrape(api.url), "predictq_served_version", model="clf",
                     alias="production") == 2  # fmt: skip
        # The exited processes' files were folded into the node's.
        files = [Path(f.path) for pid in pool_pids(worker.proc.pid)
                 for f in psutil.Process(pid).open_files() if f.path.endswith(".db")]  # fmt: skip
        assert files, "the pool processes write no metric files"
        left = {p.name for p in files[0].parent.glob("*.db")}
        assert "counter_node.db" in left

        # A job that kills its process is failed by the node's sweeper, which counts it.
        registry.register("killer", KillerClassifier().fit(x, y))
        killed = client.wait(client.submit("killer", [[666, *ROW[1:]]], version=1), timeout=60)
        assert killed.error is not None and killed.error.code == "worker_lost"

        def contained() -> bool:
            s = scrape(node)
            return (value(s, "predictq_jobs_total", model="killer", version="1",
                          status="failed") == 1
                    and value(s, "predictq_job_errors_total", model="killer",
                              code="worker_lost") == 1)  # fmt: skip

        wait_for(contained, 30, "the contained job to be counted")
        assert snapshot(r, settings).running == 0
        assert not {f for f in left for pid in old if f.endswith(f"_{pid}.db")}, left
    finally:
        api.stop()


def test_bulk_observations_match_one_by_one_observations(tmp_path: Path) -> None:
    """Per-batch aggregation writes what prometheus_client's Histogram.observe would."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    values = [0.0, 0.005, 0.007, 1.0, 3.0, 4000.0, 59.9]
    shard = _Shard(str(tmp_path), "1")
    shard.observe("predictq_job_queue_seconds", ("clf",), *bucket_counts(values, QUEUE_BUCKETS))
    shard.close()
    ours = CollectorRegistry()
    MultiProcessCollector(ours, path=str(tmp_path))

    theirs = CollectorRegistry()
    h = Histogram("predictq_job_queue_seconds", "x", ["model"], buckets=QUEUE_BUCKETS,
                  registry=theirs)  # fmt: skip
    for v in values:
        h.labels("clf").observe(v)

    def samples(reg: CollectorRegistry) -> set[tuple[str, str, float]]:
        text = generate_latest(reg).decode()
        return {(s.name, s.labels.get("le", ""), s.value)
                for f in text_string_to_metric_families(text) for s in f.samples
                if not s.name.endswith("_created")}  # fmt: skip

    assert samples(ours) == samples(theirs)
    assert bucket_counts([1.0, 1.5], BATCH_BUCKETS)[0][:3] == [1, 1, 0]


def test_the_readme_lists_every_metric_of_the_contract_with_its_type() -> None:
    text = (REPO / "README.md").read_text()
    table = text.split("<!-- metrics-contract -->")[1].split("<!-- /metrics-contract -->")[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[2:]]
    assert {name.strip().strip("`"): typ.strip() for name, typ in rows} == CONTRACT


@pytest.mark.timeout(120)
def test_a_metric_directory_that_is_gone_fails_no_job(
    promoted: str, client: Client, start_worker, tmp_path: Path
) -> None:  # fmt: skip
    """Metrics that cannot be written (their directory removed by a /tmp cleaner, a full disk)
    are dropped: every job still succeeds on its first attempt, and the node keeps serving."""
    import shutil

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    worker = start_worker(concurrency=1, PREDICTQ_METRICS_PORT=str(port), TMPDIR=str(tmp))
    (directory,) = tmp.glob("predictq-metrics-*")
    shutil.rmtree(directory)
    ids = client.submit_many("clf", [[ROW]] * 5)
    results = client.wait_many(ids, timeout=60)
    assert [(res.status, res.attempts) for res in results] == [("succeeded", 1)] * 5, (
        worker.output()
    )
    assert "metrics not recorded" in worker.output()
    assert value(scrape(f"http://127.0.0.1:{port}"), "predictq_queue_jobs", queue="predictq") == 0


def test_metric_files_are_allocated_before_they_are_written(tmp_path: Path) -> None:
    """A store to a sparse page of a memory-mapped file on a full disk is SIGBUS, not an error:
    every page of a metric file is allocated before it is written, from the first write on and
    each time the file grows, so a full disk fails the write (dropped) and kills nothing."""
    import os

    shard = _Shard(str(tmp_path), "7")

    def allocated() -> bool:
        st = os.stat(tmp_path / "counter_7.db")
        return st.st_blocks * 512 >= st.st_size

    shard.inc("predictq_jobs_total", ("clf", "1", "succeeded"), 1)
    assert allocated()
    first = os.stat(tmp_path / "counter_7.db").st_size
    for i in range(2000):  # past the initial size: the file doubles
        shard.inc("predictq_jobs_total", (f"m{i}", "1", "succeeded"), 1)
    assert os.stat(tmp_path / "counter_7.db").st_size > first
    assert allocated()
    shard.close()


@pytest.mark.timeout(120)
def test_a_pool_process_that_exits_is_folded_into_the_node_at_once(
    promoted: str, client: Client, start_worker, tmp_path: Path
) -> None:  # fmt: skip
    """The pool reports each exit (its handler is wrapped again after Celery's pool sets its
    own): the dead process's files are folded with no scrape, and its counts are kept."""
    import os
    import signal

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    worker = start_worker(concurrency=1, PREDICTQ_METRICS_PORT=str(port), TMPDIR=str(tmp))
    assert client.wait(client.submit("clf", [ROW]), timeout=60).status == "succeeded"
    (directory,) = tmp.glob("predictq-metrics-*")
    (pid,) = pool_pids(worker.proc.pid)
    wait_for(lambda: (directory / f"counter_{pid}.db").exists(), 30, "the pool process's counts")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not list(directory.glob(f"*_{pid}.db")), 30,
             "the exited process's files to be folded, with no scrape")  # fmt: skip
    s = scrape(f"http://127.0.0.1:{port}")
    assert value(s, "predictq_jobs_total", model="clf", version="1", status="succeeded") == 1


@pytest.mark.timeout(120)
def test_a_job_run_twice_on_celerys_task_path_leaves_nothing_running(
    registry: Registry, client: Client, dataset, start_worker, r: redis.Redis,
    settings: Settings,
) -> None:  # fmt: skip
    """With PREDICTQ_BATCHING=false a redelivered job can run in two processes at once (the
    second START takes the record over): once both ended, neither still counts it running."""
    x, y = dataset
    registry.register("slow", SlowClassifier(delay=3.0).fit(x, y), promote=True)
    start_worker(concurrency=2, PREDICTQ_BATCHING="false")
    job_id = client.submit("slow", [ROW])
    wait_for(lambda: r.hget(keys.job(job_id), "status") == "running", 30, "the job to start")
    r.lpush(settings.queue, r.hget(keys.job(job_id), "payload") or "")  # a redelivered copy
    wait_for(lambda: r.hget(keys.job(job_id), "attempts") == "2", 30, "the copy to start")
    assert client.wait(job_id, timeout=30).status == "succeeded"
    assert r.llen(settings.queue) == 0
    wait_for(lambda: snapshot(r, settings).running == 0, 30,
             f"no job counted running (predictq:running: {r.hgetall(keys.RUNNING)})")  # fmt: skip


@pytest.mark.timeout(60)
def test_hand_made_junk_in_the_status_keys_hides_nothing_else(
    promoted: str, start_worker, r: redis.Redis, settings: Settings, env: dict[str, str]
) -> None:  # fmt: skip
    """A value predictq did not write (a running count that is not a number, a heartbeat that
    is not JSON, an alias that is not a version) counts as nothing: the node's /metrics still
    answers with everything else, and so does `predictq status`."""
    import os

    port = free_port()
    worker = start_worker(concurrency=1, PREDICTQ_METRICS_PORT=str(port))
    r.hset(keys.RUNNING, f"{worker.name}:1", "many")
    r.zadd(keys.NODES, {"junk@host": 1e12})
    r.set(keys.worker("junk@host"), "not json")
    r.zadd(keys.NODES, {"list@host": 1e12})
    r.set(keys.worker("list@host"), "[1, 2]")
    r.hset(keys.model_aliases("clf"), "staging", "soon")
    s = scrape(f"http://127.0.0.1:{port}")
    assert value(s, "predictq_workers") == 1
    assert value(s, "predictq_running_jobs") == 0
    assert value(s, "predictq_served_version", model="clf", alias="production") == 1
    seen = status_json({**os.environ, **env})
    assert [w["name"] for w in seen["workers"]] == [worker.name]
    assert seen["served"]["clf"] == {"production": 1}


@pytest.mark.timeout(120)
def test_a_running_hash_of_the_wrong_type_stalls_no_job(
    promoted: str, client: Client, start_worker, r: redis.Redis
) -> None:  # fmt: skip
    """predictq:running is a count for status and metrics: made a string by hand, it neither
    leaves jobs running (START and FINISH wrote it before anything else could fail) nor pauses
    the recovery sweeps."""
    r.set(keys.RUNNING, "not a hash")
    worker = start_worker(concurrency=1, PREDICTQ_SWEEP_INTERVAL="0.2")
    ids = client.submit_many("clf", [[ROW]] * 5)
    results = client.wait_many(ids, timeout=60)
    assert [(res.status, res.attempts) for res in results] == [("succeeded", 1)] * 5
    assert client.wait(client.submit("clf", [ROW]), timeout=30).status == "succeeded"
    assert "recovery sweeps paused" not in worker.output()


@pytest.mark.timeout(60)
def test_a_metrics_port_in_use_is_a_one_line_error(env: dict[str, str]) -> None:
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "worker", "worker", "--metrics-port", str(port)],
            env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=50,
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error (invalid_settings): cannot serve metrics on port {port} (Address already in "
        "use): another process (another worker on this host?) holds it; give each worker node "
        "its own PREDICTQ_METRICS_PORT / --metrics-port"
    ]
