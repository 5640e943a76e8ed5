"""Celery results and waiting on records, along the paths that end a job late or twice: a
record that expires while it is waited for, a stock client's job run through Celery's own task
path (``PREDICTQ_BATCHING=false``) and queued again after a dead letter.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis
from celery import Celery

from producer import Client, JobNotFound
from registry import Registry, Settings, keys
from worker.dead_letters import list_dead, retry_dead

from .conftest import wait_for
from .poison import PoisonClassifier, SlowClassifier

X3 = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
Y2 = np.array([0, 1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("jobs", [1, 80], ids=["subscribed", "polled"])
def test_wait_many_fails_fast_when_a_record_it_saw_expires(
    client: Client, promoted: str, jobs: int
) -> None:
    # No worker: the jobs stay queued until their records expire. A waiter that saw a record
    # must not keep waiting its whole timeout for one that can no longer appear (predictq
    # score waits up to 600 s per block on the jobs it submitted).
    ids = client.submit_many(promoted, [[[0.5] * 6]] * jobs, ttl=3)
    began = time.monotonic()
    with pytest.raises(JobNotFound, match="expired"):
        client.wait_many(ids, timeout=40)
    assert time.monotonic() - began < 20


@pytest.mark.timeout(120)
def test_a_stock_job_from_celery_s_task_path_retried_from_its_dead_letter_gets_a_result_again(
    registry: Registry, settings: Settings, start_worker, r: redis.Redis, redis_url: str
) -> None:
    # Celery's own consumer runs the job (batching off); it outlives its time limit and is
    # contained as a dead letter, whose message is the one the record keeps. The model is
    # fixed, and the letter retried to a batch consumer: the stock client waiting again must
    # get the new result, not wait forever on the one the retry deleted.
    registry.register("slow", SlowClassifier().fit(X3, Y2), promote=True)
    old = start_worker(PREDICTQ_BATCHING="false", PREDICTQ_TIME_LIMIT="2",
                       PREDICTQ_VISIBILITY_TIMEOUT="6", PREDICTQ_MAX_ATTEMPTS="1")  # fmt: skip
    first = Celery(broker=redis_url, backend=redis_url)
    try:
        stuck = {"model": "slow", "rows": [[777.0, 0.0, 0.0]]}
        job = str(first.send_task("predictq.predict", queue="predictq", kwargs=stuck).id)
        with pytest.raises(RuntimeError, match=r"^(timeout|worker_lost): "):
            first.AsyncResult(job).get(timeout=60)
    finally:
        first.close()
    wait_for(lambda: any(e["id"] == job for e in list_dead(r)), 30, "the dead letter")

    # The fleet is back on the batch consumer (the default) when the letter is retried.
    old.stop()
    start_worker()
    registry.register("slow", PoisonClassifier().fit(X3, Y2), promote=True)
    assert retry_dead(r, settings, {job}) == {job: "retried"}

    again = Celery(broker=redis_url, backend=redis_url)
    try:
        record = again.AsyncResult(job).get(timeout=30)
    finally:
        again.close()
    assert (record["status"], record["predictions"]) == ("succeeded", [1])


@pytest.mark.timeout(90)
def test_celery_s_own_result_backend_on_the_worker_never_overwrites_the_job_s_result(
    promoted: str, start_worker, r: redis.Redis, redis_url: str
) -> None:
    # CELERY_RESULT_BACKEND in the worker's environment gives Celery's own app a backend, and
    # a stock client's message may say not to ignore results (Python Celery before 5.5 always
    # sent ignore_result false; here it is asked for): Celery's task path (batching off) then
    # stored its task's return value (SUCCESS, None) over a failed job's FAILURE once the task
    # returned (Celery keeps a SUCCESS it finds, so only failures were overwritten).
    worker = start_worker(PREDICTQ_BATCHING="false", CELERY_RESULT_BACKEND=redis_url)
    app = Celery(broker=redis_url, backend=redis_url)
    try:
        ok, missing = (
            str(app.send_task("predictq.predict", queue="predictq",
                              kwargs={"model": model, "rows": [[0.5] * 6]},
                              ignore_result=False).id)
            for model in (promoted, "no-such-model")
        )  # fmt: skip
        assert app.AsyncResult(ok).get(timeout=30)["status"] == "succeeded"
        with pytest.raises(RuntimeError, match=r"^model_not_found: "):
            app.AsyncResult(missing).get(timeout=30)
        # Celery logs a task's end after storing its result.
        for job in (ok, missing):
            wait_for(lambda: f"[{job}] succeeded" in worker.output(), 30, "the task's end")  # noqa: B023
        metas = [json.loads(r.get(keys.celery_meta(j)) or "{}") for j in (ok, missing)]
        assert (metas[0]["status"], metas[0]["result"]["id"]) == ("SUCCESS", ok), metas[0]
        assert (metas[1]["status"], metas[1]["result"]["code"]) == ("FAILURE", "model_not_found")
    finally:
        app.close()


@pytest.mark.timeout(90)
def test_a_job_submitted_again_under_its_id_does_not_answer_with_the_expired_one_s_result(
    settings: Settings, promoted: str, start_worker, r: redis.Redis, redis_url: str
) -> None:
    # With PREDICTQ_CELERY_RESULTS, a job whose record expired while queued ends with a
    # Celery FAILURE 'expired'. Its ID is free again (predictq score resubmits a chunk whose
    # record is gone under the same ID): the new job's waiters must not get that old end.
    with Client(settings=settings.model_copy(update={"celery_results": True})) as client:
        client.submit(promoted, [[0.5] * 6], job_id="reused", ttl=1)
        wait_for(lambda: not r.exists("predictq:job:reused"), 30, "the record to expire")
        worker = start_worker()
        wait_for(lambda: r.exists(keys.celery_meta("reused")), 30, "the expired job's result")
        worker.stop()
        client.submit(promoted, [[0.5] * 6], job_id="reused")
        app = Celery(broker=redis_url, backend=redis_url)
        try:
            assert app.AsyncResult("reused").state == "PENDING"
            start_worker()
            assert app.AsyncResult("reused").get(timeout=30)["status"] == "succeeded"
        finally:
            app.close()
