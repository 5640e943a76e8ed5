"""Batch messages: ``submit_many`` sends one Celery message per many jobs, and every consumer
path (the batch consumer, Celery's own consumer, recovery) still treats each job on its own."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from celery import Celery

from producer import BATCH_TASK_NAME, Client
from registry import Settings

from .conftest import wait_for


def test_submit_many_sends_few_celery_messages_that_decode_to_every_job(
    client: Client, promoted: str, r, dataset
) -> None:
    x, _ = dataset
    ids = client.submit_many(promoted, [x[i : i + 1] for i in range(300)])

    raws = r.lrange("predictq", 0, -1)
    assert 1 < len(raws) < 10  # a message per many jobs, not one per job
    jobs = []
    for raw in raws:
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == BATCH_TASK_NAME
        assert envelope["content-type"] == "application/json"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert (args, kwargs["model"], kwargs["alias"]) == ([], promoted, "production")
        assert envelope["headers"]["predictq_jobs"] == len(kwargs["jobs"])
        jobs += kwargs["jobs"]
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert {j["id"]: j["rows"] for j in jobs}[ids[7]] == x[7:8].tolist()
    # Every job has its own record from the start.
    assert all(client.result(i).status == "queued" for i in ids)


@pytest.mark.parametrize("batching", ["true", "false"])
def test_batch_messages_run_through_either_consumer(
    client: Client, promoted: str, fitted, dataset, start_worker, batching: str
) -> None:
    """With PREDICTQ_BATCHING=false Celery's own consumer runs the batch task."""
    x, _ = dataset
    ids = client.submit_many(promoted, [x[i : i + 2] for i in range(200)], probabilities=True)
    lone = client.submit(promoted, x[:3])
    start_worker(PREDICTQ_BATCHING=batching)

    results = client.wait_many([*ids, lone], timeout=60)

    for i, res in enumerate(results[:-1]):
        assert res.status == "succeeded", res.error
        assert res.predictions == fitted.predict(x[i : i + 2]).tolist()
        np.testing.assert_allclose(res.probabilities, fitted.predict_proba(x[i : i + 2]))
    assert results[-1].predictions == fitted.predict(x[:3]).tolist()


def test_a_stock_celery_client_can_send_a_batch_message(
    client: Client, promoted: str, fitted, dataset, redis_url, worker
) -> None:
    x, _ = dataset
    stock = Celery(broker=redis_url)
    jobs = [{"id": f"stock-{i}", "rows": x[i : i + 1].tolist()} for i in range(20)]
    jobs[5]["rows"] = [[1.0, 2.0]]  # wrong shape: fails alone
    stock.send_task(BATCH_TASK_NAME, kwargs={"model": promoted, "jobs": jobs}, queue="predictq")
    ids = [j["id"] for j in jobs]
    wait_for(lambda: all(client.redis.exists(f"predictq:job:{i}") for i in ids), 30, "records")

    results = client.wait_many(ids, timeout=60)

    assert results[5].status == "failed" and results[5].error is not None
    assert results[5].error.code == "invalid_input"
    for i, res in enumerate(results):
        if i != 5:
            assert res.predictions == fitted.predict(x[i : i + 1]).tolist(), res.error


def test_idempotent_bulk_submit_enqueues_only_new_ids(
    client: Client, promoted: str, fitted, dataset, worker
) -> None:
    x, _ = dataset
    first = client.submit_many(promoted, [x[:1]] * 3, job_ids=["a", "b", "c"])
    client.wait_many(first, timeout=30)

    again = client.submit_many(promoted, [x[:1], x[1:2], x[2:3]], job_ids=["b", "d", "c"])

    assert again == ["b", "d", "c"]
    results = {i: client.wait(i, timeout=30) for i in "abcd"}
    assert all(res.attempts == 1 for res in results.values())  # b and c did not run again
    assert results["b"].predictions == fitted.predict(x[:1]).tolist()
    assert results["d"].predictions == fitted.predict(x[1:2]).tolist()


def test_jobs_whose_message_was_purged_end_instead_of_waiting_forever(
    client: Client, promoted: str, fitted, dataset, start_worker, r, settings: Settings
) -> None:
    """A purged queue: a job sent alone kept its message and runs; batch jobs fail, saying so."""
    x, _ = dataset
    bulk = client.submit_many(promoted, [x[:1]] * 5)
    lone = client.submit(promoted, x[:2])
    r.delete(settings.queue)  # what `celery purge` does
    start_worker(PREDICTQ_LOST_QUEUED_AFTER="0.5", PREDICTQ_SWEEP_INTERVAL="0.2")

    results = client.wait_many([*bulk, lone], timeout=60)

    for res in results[:-1]:
        assert res.status == "failed" and res.error is not None
        assert res.error.code == "worker_lost" and "submit it again" in res.error.message
    assert results[-1].status == "succeeded"
    assert results[-1].predictions == fitted.predict(x[:2]).tolist()
