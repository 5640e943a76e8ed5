"""Liveness under everyday faults: every accepted job reaches a final status.

Each test is written from a trace in the delivery review (``shared/reviews/delivery-review.md``)
or from a fault users meet: Redis restarting, full or failing over, mixed traffic, hostile queue
elements, sweepers racing, a whole node gone. Each prints submitted, succeeded, failed, lost and
duplicated, and asserts that nothing is lost; where nothing crashed, that nothing ran twice.
Real Redis servers, real worker processes; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import redis
from celery import Celery

from producer import Client
from registry import Overloaded, Registry, Settings, keys
from worker.recovery import Sweeper

from .conftest import RedisServer, Worker, finished, report, wait_for
from .poison import PoisonClassifier, SlowClassifier

X3 = np.zeros((2, 3))
Y2 = np.array([0, 1])


@dataclass
class Stage:
    """A Redis server of the test's own (to restart, fill or demote), a model promoted on it,
    a client, and workers started against it."""

    server: RedisServer
    settings: Settings
    r: redis.Redis
    client: Client
    workers: list[Worker]
    start_worker: Callable[..., Worker]

    def worker(self, concurrency: int = 1, **env: str) -> Worker:
        w = self.start_worker(concurrency=concurrency, PREDICTQ_REDIS_URL=self.server.url,
                              redis_client=self.r, **env)  # fmt: skip
        self.workers.append(w)
        return w


@pytest.fixture
def stage(tmp_path: Path, start_worker: Callable[..., Worker]) -> Iterator[Callable[..., Stage]]:
    stages: list[Stage] = []

    def make(model: str, estimator: Any) -> Stage:
        server = RedisServer(tmp_path / f"redis-{len(stages)}")
        settings = Settings(redis_url=server.url, home=tmp_path / "home",
                            artifact_dir=tmp_path / "artifacts", alias_cache_seconds=0)  # fmt: skip
        Registry(settings=settings).register(model, estimator, promote=True)
        made = Stage(server, settings, redis.Redis.from_url(server.url, decode_responses=True),
                     Client(server.url, settings=settings), [], start_worker)  # fmt: skip
        stages.append(made)
        return made

    yield make
    for made in stages:  # workers first: a worker stopping with no Redis waits for it
        for w in made.workers:
            w.stop()
        made.server.stop()


def _statuses(r: redis.Redis, ids: list[str]) -> list[str | None]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "status")
    return pipe.execute()


def test_a_redis_restart_under_light_traffic_leaves_no_job_running(stage) -> None:
    """Review #1 (a): an outage while a lone job runs used to leave it 'running' for 24 h."""
    s = stage("slow", SlowClassifier(delay=1.5).fit(X3, Y2))
    worker = s.worker()
    first = s.client.submit("slow", [[1.0, 0.0, 0.0]])
    wait_for(lambda: s.r.hget(keys.job(first), "status") == "running", 30, "the job to start")

    s.server.stop()
    time.sleep(4)  # an outage longer than redis-py's retries: the fault under test
    s.server.start()
    second = s.client.submit("slow", [[2.0, 0.0, 0.0]])

    results = s.client.wait_many([first, second], timeout=60)
    counts = report("restart under light traffic", [first, second], results, s.r)
    assert counts["lost"] == 0
    assert [res.status for res in results] == ["succeeded", "succeeded"]
    assert not s.r.exists(keys.claiming(results[0].worker or ""))
    assert worker.proc.poll() is None


def test_a_stock_batch_message_of_1000_jobs_followed_by_a_lone_job_runs_every_job_once(
    client: Client, promoted: str, worker, r
) -> None:
    """Review #1 (b): 1000 jobs overflowed Lua's stack in the claim-and-start script, and the
    next claim deleted them with no record."""
    stock = Celery(broker=client.url)
    ids = [f"stock-{i}" for i in range(1000)]
    jobs = [{"id": job_id, "rows": [[float(i % 3)] * 6]} for i, job_id in enumerate(ids)]
    stock.send_task("predictq.predict_batch", queue="predictq",
                    kwargs={"model": promoted, "jobs": jobs})  # fmt: skip
    lone = client.submit(promoted, [[0.5] * 6])

    wait_for(lambda: all(s == "succeeded" for s in _statuses(r, [*ids, lone])), 60,
             "every job to succeed")  # fmt: skip
    results = client.wait_many([*ids, lone], timeout=10)
    counts = report("stock batch of 1000 + lone job", [*ids, lone], results, r)
    assert counts["lost"] == 0
    assert counts["duplicated"] == 0
    assert counts["succeeded"] == 1001


def test_mixed_lone_and_bulk_traffic_with_a_small_batch_limit_runs_no_job_twice(
    registry: Registry, client: Client, start_worker, r
) -> None:
    """Review #3: a claim took up to 120x its limit, overran the time limit, and every job of
    it was run again (1,204 of 3,010 in the issue's measurement)."""
    registry.register("fast", PoisonClassifier().fit(X3, Y2), promote=True)
    ids: list[str] = []
    for i in range(10):
        ids.append(client.submit("fast", [[float(i), 0.0, 0.0]]))
        ids += client.submit_many("fast", [[[float(j), 0.0, 0.0]] for j in range(300)])
    worker = start_worker(concurrency=2, PREDICTQ_BATCH_MAX_ROWS="16", PREDICTQ_TIME_LIMIT="5",
                          PREDICTQ_VISIBILITY_TIMEOUT="30")  # fmt: skip

    results = client.wait_many(ids, timeout=120)

    counts = report("mixed traffic, 16-job limit", ids, results, r)
    assert counts["lost"] == 0
    assert counts["succeeded"] == 3010
    assert counts["duplicated"] == 0
    assert "passed the time limit" not in worker.output()


def test_a_claim_takes_at_most_its_limit_whatever_the_mix_of_messages(
    client: Client, promoted: str, settings: Settings, r
) -> None:
    """Review #3, at the script: each message is weighed on its own."""
    from worker.runtime import Runtime

    client.submit(promoted, [[0.0] * 6])  # the tail: a lone job, weight 1
    for _ in range(5):
        client.submit_many(promoted, [[[0.0] * 6]] * 128)
    rt = Runtime(client.url, settings, hostname="probe@host")
    sizes = []
    while True:
        claimed = rt.claim(16, block=0)
        if claimed is None:
            break
        sizes.append(len(claimed.jobs))
        rt.finish([])
    rt.close()
    # A batch message of 128 jobs is taken alone (a batch is never left empty), and a lone job
    # never drags one along.
    assert sizes == [1, 128, 128, 128, 128, 128]
    assert r.llen("predictq") == 0


def test_non_utf8_elements_on_the_queue_are_dead_lettered_and_every_consumer_keeps_serving(
    client: Client, promoted: str, redis_url: str, start_worker, r
) -> None:
    """Review #2: one element that is not UTF-8 killed the consumer thread for good."""
    raw = redis.Redis.from_url(redis_url)
    raw.lpush("predictq", b"\xff\xfe\x00 not text")  # claimed by the claim script
    worker = start_worker(concurrency=1)
    first = client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30)
    wait_for(lambda: r.llen("predictq") == 0, 10, "the queue to drain")
    time.sleep(0.5)  # let the consumer go idle: the next element is parked by a blocking move
    raw.lpush("predictq", b"{\xc3\x28 broken utf-8")
    second = client.wait(client.submit(promoted, [[1.0] * 6]), timeout=30)

    dead = [json.loads(e) for e in r.lrange(keys.DEAD, 0, -1)]
    counts = report("non-UTF-8 elements", [first.id, second.id], [first, second], r)
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert len(dead) == 2
    assert all("not UTF-8" in d["error"]["message"] for d in dead)
    assert worker.proc.poll() is None
    assert "Exception in thread" not in worker.output()


def test_two_sweepers_racing_for_a_dead_process_claim_list_requeue_each_job_once(
    client: Client, promoted: str, settings: Settings, redis_url: str, r, start_worker
) -> None:
    """Review #6: recovery took three round trips, and each racing sweeper pushed a copy."""
    ids = [client.submit(promoted, [[float(i)] * 6]) for i in range(20)]
    dead = "node-b@host:999999"
    for job_id in ids:
        r.lmove("predictq", keys.claiming(dead), "RIGHT", "LEFT")
        r.hset(keys.job(job_id), mapping={"status": "running", "worker": dead, "attempts": 1})
    sweepers = [
        Sweeper(redis.Redis.from_url(redis_url, decode_responses=True), settings, f"other-{i}")
        for i in range(4)
    ]
    for s in sweepers:
        s._grace_until = 0.0  # trust leases and heartbeats at once, as a long-running one does
    outcomes: list[dict[str, int]] = []
    go = threading.Barrier(len(sweepers))

    def sweep(s: Sweeper) -> None:
        go.wait()
        outcomes.append(s.sweep())

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in sweepers:
        s.redis.close()

    isolated = [json.loads(m)["headers"]["id"] for m in r.lrange(keys.isolate("predictq"), 0, -1)]
    assert sorted(isolated) == sorted(ids)
    assert sum(o.get("requeued", 0) for o in outcomes) == 20
    assert {r.hget(keys.job(j), "attempts") for j in ids} == {"1"}
    start_worker()
    results = client.wait_many(ids, timeout=60)
    counts = report("four sweepers racing", ids, results, r)
    assert counts["lost"] == 0 and counts["succeeded"] == 20
    assert counts["duplicated"] == 20  # the one crash: one more run each, and no more


def test_a_message_that_kills_its_process_before_it_starts_is_contained(
    client: Client, promoted: str, settings: Settings, r
) -> None:
    """Review #7: a crash before START was never counted, so such poison came back forever."""
    ours = client.submit(promoted, [[0.0] * 6])
    stock = Celery(broker=client.url)
    stock.send_task("predictq.predict", task_id="stock-poison", queue="predictq",
                    kwargs={"model": promoted, "rows": [[0.0] * 6]})  # fmt: skip
    sweeper = Sweeper(r, settings, "node-c@host")
    outcomes = []
    for crash in range(settings.max_attempts):
        source = "predictq" if crash == 0 else keys.isolate("predictq")
        dead = f"node-c@host:{999990 + crash}"
        r.hset(keys.CONSUMERS, dead, "{}")  # as its consumer reported itself
        while r.lmove(source, keys.claiming(dead), "RIGHT", "LEFT"):
            pass
        outcomes.append(sweeper.sweep())

    assert outcomes[:-1] == [{"requeued": 2}] * (settings.max_attempts - 1)
    assert outcomes[-1] == {"failed": 2}
    assert r.llen(keys.isolate("predictq")) == 0
    for job_id in (ours, "stock-poison"):
        res = client.result(job_id)
        assert (res.status, res.error and res.error.code) == ("failed", "worker_lost")
    assert sorted(json.loads(d)["id"] for d in r.lrange(keys.DEAD, 0, -1)) == sorted(
        [ours, "stock-poison"]
    )


def test_a_full_redis_refuses_new_jobs_and_drains_the_queue_then_recovers(stage) -> None:
    """The issue's measurement: under noeviction a full Redis deadlocked everything, and a
    worker started then died at start-up."""
    s = stage("fast", PoisonClassifier().fit(X3, Y2))
    ids = s.client.submit_many("fast", [[[float(i % 5), 0.0, 0.0]] for i in range(3000)])
    s.r.config_set("maxmemory-policy", "noeviction")
    s.r.config_set("maxmemory", int(s.r.info("memory")["used_memory"]) - 1024)
    with pytest.raises(Overloaded):
        s.client.submit("fast", [[1.0, 0.0, 0.0]])

    worker = s.worker(concurrency=2)  # started while Redis is full
    results = s.client.wait_many(ids, timeout=120)
    counts = report("full Redis", ids, results, s.r)
    assert counts["lost"] == 0
    assert counts["succeeded"] == 3000
    assert counts["duplicated"] == 0
    assert worker.proc.poll() is None, worker.output()

    s.r.config_set("maxmemory", 0)
    after = s.client.wait(s.client.submit("fast", [[1.0, 0.0, 0.0]]), timeout=30)
    assert after.status == "succeeded"
    assert worker.proc.poll() is None


def test_a_redis_that_fills_up_while_jobs_run_then_empties_loses_nothing(stage) -> None:
    """Review #2 (i): three OOM replies in a row killed the consumer thread of a live process."""
    s = stage("slow", SlowClassifier(delay=0.5).fit(X3, Y2))
    worker = s.worker()
    ids = [s.client.submit("slow", [[float(i), 0.0, 0.0]]) for i in range(6)]
    wait_for(lambda: "running" in _statuses(s.r, ids), 30, "a job to start")
    s.r.config_set("maxmemory-policy", "noeviction")
    s.r.config_set("maxmemory", int(s.r.info("memory")["used_memory"]) - 1024)
    time.sleep(3)  # the fault under test: several seconds of a full Redis
    s.r.config_set("maxmemory", 0)

    results = s.client.wait_many(ids, timeout=60)
    counts = report("Redis fills up", ids, results, s.r)
    assert counts["lost"] == 0
    assert counts["succeeded"] == 6
    assert counts["duplicated"] == 0
    assert worker.proc.poll() is None
    assert "Exception in thread" not in worker.output()


def test_a_redis_outage_longer_than_the_time_limit_does_not_time_jobs_out(stage) -> None:
    """Review #5: the batch deadline counted time spent waiting for Redis."""
    s = stage("slow", SlowClassifier(delay=1.0).fit(X3, Y2))
    worker = s.worker(PREDICTQ_TIME_LIMIT="3", PREDICTQ_VISIBILITY_TIMEOUT="60")
    job = s.client.submit("slow", [[1.0, 0.0, 0.0]])
    wait_for(lambda: s.r.hget(keys.job(job), "status") == "running", 30, "the job to start")
    s.server.stop()
    time.sleep(5)  # the fault under test: an outage longer than the time limit
    s.server.start()

    res = s.client.wait(job, timeout=60)
    report("outage past the time limit", [job], [res], s.r)
    assert res.status == "succeeded", res.error
    assert "stopping this pool process" not in worker.output()


def test_a_job_whose_message_was_lost_ends_while_the_queue_stays_busy(
    registry: Registry, client: Client, start_worker, r
) -> None:
    """Review #9: a lost message was repaired only after the queues had been empty for 5 s."""
    registry.register("slow", SlowClassifier(delay=0.05).fit(X3, Y2), promote=True)
    lost = client.submit("slow", [[1.0, 0.0, 0.0]])
    assert r.lrem("predictq", 1, r.lindex("predictq", 0)) == 1  # the message vanishes
    seconds, _ = r.time()
    r.zadd(keys.queued("predictq"), {lost: seconds - 60})  # ... a minute ago
    busy = client.submit_many("slow", [[[float(i), 0.0, 0.0]] for i in range(600)])
    start_worker(concurrency=1, PREDICTQ_LOST_QUEUED_AFTER="1", PREDICTQ_BATCH_MAX_ROWS="1")

    wait_for(lambda: r.hget(keys.job(lost), "status") == "succeeded", 60, "the lost job to end")
    still_queued = sum(s == "queued" for s in _statuses(r, busy))
    results = client.wait_many([lost, *busy], timeout=120)
    counts = report("lost message under load", [lost, *busy], results, r)
    assert counts["lost"] == 0
    assert still_queued > 0  # it ended while the queue was still busy
    assert results[0].status == "succeeded"


def test_with_batching_off_prefetched_jobs_are_not_taken_for_lost(
    registry: Registry, client: Client, start_worker, r
) -> None:
    """Review #4: Celery's prefetched messages sit in kombu's unacked hash, off the queue."""
    registry.register("slow", SlowClassifier(delay=0.3).fit(X3, Y2), promote=True)
    ids = client.submit_many("slow", [[[float(i), 0.0, 0.0]] for i in range(3 * 128)])
    start_worker(concurrency=1, PREDICTQ_BATCHING="false", PREDICTQ_LOST_QUEUED_AFTER="1")

    results = client.wait_many(ids, timeout=120)
    counts = report("batching off, prefetched", ids, results, r)
    assert counts["lost"] == 0
    assert counts["failed"] == 0
    assert counts["duplicated"] == 0


def test_a_failover_demotion_does_not_stop_the_worker_node(stage) -> None:
    """Review #10: UNBLOCKED from a demoted Redis made Celery's consumer exit the node."""
    s = stage("fast", PoisonClassifier().fit(X3, Y2))
    worker = s.worker()
    assert s.client.wait(s.client.submit("fast", [[1.0, 0.0, 0.0]]), timeout=30).done
    s.r.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that is not there
    wait_for(lambda: "UNBLOCKED" in worker.output() or "READONLY" in worker.output(), 20,
             "the worker to meet the demotion")  # fmt: skip
    s.r.execute_command("REPLICAOF", "NO", "ONE")

    res = s.client.wait(s.client.submit("fast", [[1.0, 0.0, 0.0]]), timeout=60)
    assert res.status == "succeeded"
    assert worker.proc.poll() is None, worker.output()


def test_a_whole_node_killed_has_its_jobs_requeued_within_15_seconds(
    registry: Registry, client: Client, start_worker, r
) -> None:
    """The issue's measurement: a SIGKILLed node's jobs showed 'running' for 52 s."""
    registry.register("slow", SlowClassifier(delay=0.2).fit(X3, Y2), promote=True)
    # One bulk message: the pool process that claims it runs 4 rows (0.2 s) at a time, 4 s in
    # all, so the kill lands mid-run; then the survivor runs them all again.
    ids = client.submit_many("slow", [[[float(i), 0.0, 0.0]] for i in range(80)])
    doomed = start_worker(concurrency=2, PREDICTQ_BATCH_MAX_ROWS="4")
    survivor = start_worker(concurrency=1, PREDICTQ_BATCH_MAX_ROWS="4")
    node = doomed.name

    def running_on_doomed() -> int:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "status", "worker")
        return sum(st == "running" and (w or "").startswith(node + ":")
                   for st, w in pipe.execute())  # fmt: skip

    wait_for(lambda: running_on_doomed() > 0, 30, "jobs running on the doomed node")
    main = psutil.Process(doomed.proc.pid)
    for p in [*main.children(recursive=True), main]:
        os.kill(p.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: running_on_doomed() == 0, 30, "the dead node's jobs to be requeued")
    requeued_after = time.monotonic() - killed_at

    results = client.wait_many(ids, timeout=120)
    counts = report("whole node SIGKILLed", ids, results, r)
    print(f"requeued {requeued_after:.1f}s after the kill")
    assert counts["lost"] == 0
    assert counts["succeeded"] == 80
    assert counts["results_written"] == 80
    assert requeued_after <= 15
    assert survivor.proc.poll() is None


def test_a_worker_warns_about_any_eviction_policy_but_noeviction(
    r, start_worker, promoted: str
) -> None:
    """Review #8: volatile-* evicts exactly the job records, and was called safe."""
    r.config_set("maxmemory-policy", "volatile-lru")
    try:
        worker = start_worker()
        wait_for(lambda: "maxmemory-policy is volatile-lru" in worker.output(), 10, "the warning")
        assert "Set it to noeviction" in worker.output()
    finally:
        r.config_set("maxmemory-policy", "noeviction")


def test_dead_letters_keep_a_bounded_excerpt_of_a_large_refused_message(
    client: Client, promoted: str, worker, r
) -> None:
    """Review #11: each dead letter kept up to 64 KiB of its message."""
    r.lpush("predictq", json.dumps({"headers": {"task": "predictq.predict"}, "pad": "x" * 10**6}))
    wait_for(lambda: r.llen(keys.DEAD) == 1, 30, "the dead letter")
    assert len(r.lindex(keys.DEAD, 0) or "") < 8192
    assert client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30).status == "succeeded"
    assert finished(r) == 1


def test_consumers_that_keep_failing_keep_looping_and_say_so_in_status_and_readyz(
    client: Client, promoted: str, worker, api, r, env
) -> None:
    """A consumer never dies of what it meets, and a node that takes no jobs is not ready."""
    import subprocess
    import sys

    def ready() -> tuple[int, dict]:
        with api.http() as http:
            resp = http.get("/readyz")
        return resp.status_code, resp.json()

    wait_for(lambda: ready()[0] == 200, 30, "the API to be ready")
    r.set(keys.isolate("predictq"), "not a list")  # every claim now fails with WRONGTYPE
    wait_for(lambda: ready()[0] == 503, 30, "readyz to see the failing consumer")
    status = subprocess.run([sys.executable, "-m", "worker", "status"],
                            env={**os.environ, **env, "COLUMNS": "300"},  # no wrapped cells
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    r.delete(keys.isolate("predictq"))
    wait_for(lambda: ready()[0] == 200, 30, "readyz to see the consumer back")

    assert ready()[1] == {"ready": True, "redis": True, "workers": True, "consumers": True}
    assert "backing off" in status.stdout and "WRONGTYPE" in status.stdout, status.stdout
    assert client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30).status == "succeeded"
    assert worker.proc.poll() is None


def test_a_pool_process_whose_batch_was_taken_over_is_replaced_and_status_counts_it(
    client: Client, promoted: str, worker, r, env
) -> None:
    """A live process that another node took for dead must not run on beside its jobs."""
    import subprocess
    import sys

    wait_for(lambda: r.hlen(keys.CONSUMERS) == 1, 30, "the consumer to report")
    process = r.hkeys(keys.CONSUMERS)[0]
    pid = int(process.rpartition(":")[2])

    def replaced() -> bool:
        # What a stale takeover by another sweeper leaves. Set again on every poll: this idle
        # process clears its busy marker with each empty claim (it holds nothing then), and a
        # process caught mid-batch is what the marker is for.
        if psutil.pid_exists(pid):
            r.set(keys.busy(process), "taken")
            return False
        return True

    wait_for(replaced, 30, "the process to be replaced")
    wait_for(lambda: '"replaced": 1' in (r.get(keys.worker(worker.name)) or ""), 30,
             "the heartbeat to count it")  # fmt: skip
    status = subprocess.run([sys.executable, "-m", "worker", "status"],
                            env={**os.environ, **env, "COLUMNS": "300"},  # no wrapped cells
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "1 replaced" in status.stdout, status.stdout
    assert client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30).status == "succeeded"
    assert worker.proc.poll() is None


def test_a_stock_batch_job_too_deep_to_re_encode_fails_alone_and_others_run(
    client: Client, promoted: str, worker, r
) -> None:
    """Liveness review #1: a message the parser took but could not split again orphaned the
    whole claim list it sat on. Now the job whose rows cannot be encoded again fails on its
    own record, and nothing needs the dead letters."""
    stock = Celery(broker=client.url)
    deep: Any = [0.0]
    for _ in range(300):  # orjson reads 1024 levels, writes about 254
        deep = [deep]
    stock.send_task("predictq.predict_batch", queue="predictq",
                    kwargs={"model": promoted, "jobs": [{"id": "deep", "rows": deep}]})  # fmt: skip
    ids = client.submit_many(promoted, [[[float(i)] * 6] for i in range(100)])

    results = client.wait_many(ids, timeout=60)
    counts = report("too deep to split, and 100 jobs", ids, results, r)
    assert counts["lost"] == 0 and counts["succeeded"] == 100
    wait_for(lambda: r.exists(keys.job("deep")), 30, "the deep job's record")
    deep_result = client.wait("deep", timeout=30)
    assert deep_result.status == "failed" and deep_result.error is not None
    assert deep_result.error.code == "invalid_input"
    assert "cannot be read" in deep_result.error.message
    assert not list(r.scan_iter(match=keys.recovering("*", "*")))
    assert worker.proc.poll() is None


def test_a_stock_batch_split_on_recovery_still_writes_each_job_a_record(
    client: Client, promoted: str, settings: Settings, start_worker, r
) -> None:
    """Liveness review #2: split messages claimed that records existed, and START then skipped
    the jobs of a stock batch as expired, with no trace."""
    stock = Celery(broker=client.url)
    ids = [f"stock-split-{i}" for i in range(5)]
    stock.send_task("predictq.predict_batch", queue="predictq", kwargs={
        "model": promoted, "jobs": [{"id": i, "rows": [[0.0] * 6]} for i in ids]})  # fmt: skip
    dead = "node-d@host:999999"
    r.lmove("predictq", keys.claiming(dead), "RIGHT", "LEFT")  # claimed, then the process died
    assert Sweeper(r, settings, "node-d@host").sweep() == {"requeued": 5}
    start_worker()

    # A stock job has no record until it starts: wait for the records, then for the jobs.
    wait_for(lambda: _all_recorded(r, ids), 30, "a record for every stock job")
    results = client.wait_many(ids, timeout=60)
    counts = report("stock batch split on recovery", ids, results, r)
    assert counts["lost"] == 0 and counts["succeeded"] == 5


def _all_recorded(r: redis.Redis, ids: list[str]) -> bool:
    return all(s in ("succeeded", "failed") for s in _statuses(r, ids))


def test_a_producer_clock_running_ahead_never_fails_jobs_still_in_the_queue(
    registry: Registry, settings: Settings, start_worker, r, monkeypatch
) -> None:
    """Liveness review #3: queued times and message stamps came from each producer's clock."""
    import producer.client
    import producer.messages

    registry.register("slow", SlowClassifier(delay=0.05).fit(X3, Y2), promote=True)
    real = time.time
    with Client(settings=settings) as ahead:
        monkeypatch.setattr(producer.client.time, "time", lambda: real() + 30)
        monkeypatch.setattr(producer.messages.time, "time", lambda: real() + 30)
        # Enough lone jobs ahead that the batch behind them waits past the lost-job pass's
        # confirmation period.
        early = [ahead.submit("slow", [[float(i), 0.0, 0.0]]) for i in range(200)]
        monkeypatch.undo()
    with Client(settings=settings) as on_time:
        later = on_time.submit_many("slow", [[[1.0, 0.0, 0.0]]] * 128)
        start_worker(PREDICTQ_LOST_QUEUED_AFTER="1", PREDICTQ_BATCH_MAX_ROWS="1")
        results = on_time.wait_many([*early, *later], timeout=120)
    counts = report("a producer 30 s ahead", [*early, *later], results, r)
    assert counts["lost"] == 0
    assert counts["failed"] == 0
    assert counts["duplicated"] == 0


def test_jobs_waiting_in_another_queue_on_the_same_redis_are_left_alone(
    registry: Registry, settings: Settings, start_worker, r
) -> None:
    """Liveness review #4: one queued index for every queue let one queue's sweeper repair the
    jobs of another."""
    registry.register("fast", PoisonClassifier().fit(X3, Y2), promote=True)
    other = settings.model_copy(update={"queue": "gpu"})
    with Client(settings=other) as gpu:
        lone = [gpu.submit("fast", [[1.0, 0.0, 0.0]]) for _ in range(3)]
        bulk = gpu.submit_many("fast", [[[1.0, 0.0, 0.0]]] * 100)
    seconds, _ = r.time()
    r.zadd(keys.queued("gpu"), {job_id: seconds - 60 for job_id in [*lone, *bulk]})
    start_worker(PREDICTQ_LOST_QUEUED_AFTER="1")  # serves the queue "predictq"
    with Client(settings=settings) as ours:
        assert ours.wait(ours.submit("fast", [[1.0, 0.0, 0.0]]), timeout=30).done
    deadline = time.monotonic() + 12  # two confirmation periods of the lost-job pass
    while time.monotonic() < deadline:
        assert set(_statuses(r, [*lone, *bulk])) == {"queued"}
        time.sleep(0.5)
    assert r.llen("gpu") > 0 and r.llen("predictq") == 0


def test_dead_retry_of_a_stock_job_contained_before_it_started_runs_it(
    client: Client, promoted: str, settings: Settings, r
) -> None:
    """Liveness review #7: the record containment wrote had no alias, and START then broke on
    the retried job."""
    from worker.dead_letters import retry_dead

    stock = Celery(broker=client.url)
    stock.send_task("predictq.predict", task_id="stock-retry", queue="predictq",
                    kwargs={"model": promoted, "rows": [[0.0] * 6]})  # fmt: skip
    sweeper = Sweeper(r, settings, "node-e@host")
    for crash in range(settings.max_attempts):
        dead = f"node-e@host:{999980 + crash}"
        r.hset(keys.CONSUMERS, dead, "{}")
        source = "predictq" if crash == 0 else keys.isolate("predictq")
        r.lmove(source, keys.claiming(dead), "RIGHT", "LEFT")
        sweeper.sweep()
    assert client.result("stock-retry").status == "failed"

    assert retry_dead(r, settings, {"stock-retry"}) == {"stock-retry": "retried"}
    from worker.runtime import Runtime

    rt = Runtime(client.url, settings, hostname="probe@host")
    claimed = rt.claim(16, block=0)
    assert claimed is not None and [j.id for j in claimed.jobs] == ["stock-retry"]
    rt.run(claimed.jobs)
    rt.close()
    assert client.result("stock-retry").status == "succeeded"
