"""Fault tests: real Redis, real worker processes, real SIGKILLs and restarts.

Each prints its counts (submitted, succeeded, failed, lost, duplicated executions) and asserts
that nothing is lost.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import redis

from producer import Client
from registry import Registry, Settings, keys

from .conftest import RedisServer, finished, report, wait_for
from .poison import Canary, KillerClassifier, SlowClassifier

X3 = np.zeros((2, 3))
Y2 = np.array([0, 1])


def _pool_pids(worker) -> list[int]:
    return [c.pid for c in psutil.Process(worker.proc.pid).children()]


def test_a_pool_process_killed_mid_run_loses_no_job_and_writes_each_result_once(
    registry: Registry, client: Client, start_worker, r
) -> None:
    registry.register("slow", SlowClassifier(delay=0.002).fit(X3, Y2), promote=True)
    worker = start_worker(concurrency=2, PREDICTQ_BATCH_MAX_ROWS="8")
    ids = client.submit_many("slow", [[[float(i % 7) - 3, 0.0, 0.0]] for i in range(2000)])
    wait_for(lambda: finished(r) >= 300, 60, "300 finished jobs")
    victim = _pool_pids(worker)[0]
    os.kill(victim, signal.SIGKILL)

    try:
        results = client.wait_many(ids, timeout=120)
    except Exception:
        print(worker.output())
        raise

    counts = report("worker SIGKILL", ids, results, r)
    assert counts["lost"] == 0
    assert counts["succeeded"] == 2000
    assert counts["results_written"] == 2000  # a duplicate execution wrote no second result
    assert worker.proc.poll() is None, worker.output()
    assert victim not in _pool_pids(worker)


def test_a_redis_restart_mid_run_loses_no_job_and_workers_reconnect(
    tmp_path: Path, fitted, dataset, start_worker, env
) -> None:
    server = RedisServer(tmp_path / "redis-restart")
    try:
        url = server.url
        settings = Settings(redis_url=url, home=tmp_path / "home",
                            artifact_dir=tmp_path / "artifacts", alias_cache_seconds=0)  # fmt: skip
        Registry(settings=settings).register("slow", SlowClassifier(0.002).fit(X3, Y2),
                                             promote=True)  # fmt: skip
        r = redis.Redis.from_url(url, decode_responses=True)
        worker = start_worker(concurrency=2, PREDICTQ_REDIS_URL=url,
                              PREDICTQ_BATCH_MAX_ROWS="8", redis_client=r)  # fmt: skip
        client = Client(url, settings=settings)
        ids = client.submit_many("slow", [[[float(i % 5), 0.0, 0.0]] for i in range(2000)])
        wait_for(lambda: finished(r) >= 300, 60, "300 finished jobs")

        server.stop()  # SIGTERM: Redis flushes its AOF and exits
        server.start()  # same port, same data directory

        results = client.wait_many(ids, timeout=120)
        counts = report("redis restart", ids, results, r)
        assert counts["lost"] == 0
        assert counts["succeeded"] == 2000
        assert worker.proc.poll() is None
        # The same workers, reconnected, still serve new jobs.
        assert client.wait(client.submit("slow", [[1.0, 0.0, 0.0]]), timeout=30).done
    finally:
        server.stop()


def test_a_job_that_kills_its_process_ends_failed_as_worker_lost_and_others_flow(
    registry: Registry, client: Client, settings: Settings, start_worker, r
) -> None:
    from worker.dead_letters import list_dead, retry_dead

    registry.register("killer", KillerClassifier().fit(X3, Y2), promote=True)
    jobs = [[[float(i) - 10, 0.0, 0.0]] for i in range(30)]
    jobs[7] = [[666.0, 0.0, 0.0]]
    ids = client.submit_many("killer", jobs)
    worker = start_worker(concurrency=1)

    results = client.wait_many(ids, timeout=90)

    counts = report("poison job", ids, results, r)
    assert counts["lost"] == 0
    poison = results[7]
    assert (poison.status, poison.error and poison.error.code) == ("failed", "worker_lost")
    assert poison.attempts == settings.max_attempts
    assert "predictq dead list" in poison.error.message
    assert all(res.status == "succeeded" for i, res in enumerate(results) if i != 7)
    assert worker.proc.poll() is None
    dead = list_dead(r)
    assert [d["id"] for d in dead] == [ids[7]]

    assert retry_dead(r, settings, {ids[7]}) == {ids[7]: "retried"}
    again = client.wait(ids[7], timeout=90)
    assert (again.status, again.attempts) == ("failed", settings.max_attempts)


def test_a_job_over_its_time_limit_fails_with_timeout_and_the_worker_serves_the_next(
    registry: Registry, client: Client, start_worker, r
) -> None:
    registry.register("slow", SlowClassifier().fit(X3, Y2), promote=True)
    worker = start_worker(concurrency=1, PREDICTQ_TIME_LIMIT="2", PREDICTQ_VISIBILITY_TIMEOUT="30")
    stuck = client.submit("slow", [[777.0, 0.0, 0.0]])

    res = client.wait(stuck, timeout=60)
    after = client.wait(client.submit("slow", [[1.0, 0.0, 0.0]]), timeout=60)

    assert (res.status, res.error and res.error.code) == ("failed", "timeout")
    assert "time limit of 2s" in res.error.message
    assert (after.status, after.predictions) == ("succeeded", [1])
    assert worker.proc.poll() is None


def _envelope(job_id: str, body: bytes, content_type: str) -> str:
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "binary",
        "content-type": content_type,
        "headers": {"lang": "py", "task": "predictq.predict", "id": job_id, "retries": 0},
        "properties": {"correlation_id": job_id, "body_encoding": "base64", "delivery_tag": "t",
                       "delivery_info": {"exchange": "", "routing_key": "predictq"}},
    })  # fmt: skip


def test_a_pickle_message_pushed_onto_the_queue_is_refused_and_never_runs(
    client: Client, promoted: str, tmp_path: Path, worker, r
) -> None:
    canary = tmp_path / "canary"
    payload = pickle.dumps(((), {"model": promoted, "rows": Canary(canary)}, {}))
    r.lpush("predictq", _envelope("pickled", payload, "application/x-python-serialize"))
    # The same payload on Celery's own side queue, where kombu's consumer would decode it.
    r.lpush("predictq.celery", _envelope("pickled-2", payload, "application/x-python-serialize"))

    wait_for(lambda: r.hget("predictq:job:pickled", "status") == "failed", 30, "the refusal")
    good = client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30)

    assert "JSON only" in json.loads(r.hget("predictq:job:pickled", "error"))["message"]
    assert not canary.exists()
    assert good.status == "succeeded"
    assert worker.proc.poll() is None


@pytest.mark.parametrize(
    "raw",
    [
        "not json at all",
        json.dumps({"headers": {"task": "predictq.predict"}}),  # no id
        json.dumps(
            {
                "headers": {"id": "x1", "task": "other.task"},
                "content-type": "application/json",
                "body": "W10=",
            }
        ),
        "[" * 10_000 + "]" * 10_000,
        json.dumps(
            {
                "headers": {"id": "x2", "task": "predictq.predict"},
                "content-type": "application/json",
                "body": "!!!",
                "properties": {"body_encoding": "base64"},
            }
        ),
    ],
)
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_serving(
    client: Client, promoted: str, worker, r, raw: str
) -> None:
    r.lpush("predictq", raw)
    wait_for(lambda: r.llen(keys.DEAD) == 1, 30, "the dead letter")
    good = client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30)
    assert good.status == "succeeded"
    assert worker.proc.poll() is None
    assert r.llen("predictq") == 0


def test_messages_a_dead_process_claimed_but_never_started_are_handed_back(
    client: Client, promoted: str, settings: Settings, r
) -> None:
    from celery import Celery

    from worker.recovery import Sweeper

    ours = client.submit(promoted, [[0.0] * 6])
    stock = Celery(broker=client.url)
    kwargs = {"model": promoted, "rows": [[0.0] * 6]}
    stock.send_task("predictq.predict", task_id="stock-1", queue="predictq", kwargs=kwargs)
    bulk = client.submit_many(promoted, [[[0.0] * 6]] * 3)  # one batch message
    dead = "node-a@host:999999"  # no such pid: the process is gone
    for _ in range(3):
        r.lmove("predictq", keys.claiming(dead), "RIGHT", "LEFT")

    counts = Sweeper(r, settings, "node-a@host").sweep()

    assert counts == {"requeued": 5}
    # The batch message comes back as a message per job: each may have to run alone.
    handed_back = [
        json.loads(m)["headers"]["id"] for m in r.lrange(keys.isolate("predictq"), 0, -1)
    ]
    assert sorted(handed_back) == sorted([ours, "stock-1", *bulk])
    assert not r.exists(keys.claiming(dead))
    assert client.result(ours).status == "queued"


def test_an_absurd_ttl_is_refused_before_anything_is_written(
    client: Client, promoted: str, r
) -> None:
    from registry import InvalidInput

    with pytest.raises(InvalidInput, match="ttl must be a whole number of seconds"):
        client.submit(promoted, [[0.0] * 6], ttl=10**16)
    assert list(r.scan_iter(match="predictq:job:*")) == []
    assert r.llen("predictq") == 0
