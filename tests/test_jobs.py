"""Job IDs, cancellation, stock Celery clients and malformed messages."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from celery import Celery

from producer import Client, JobNotFound, JobTimeout, records
from producer.messages import task_message
from registry import keys

from .conftest import wait_for


def test_an_unknown_job_id_raises_job_not_found_never_pending(client: Client, redis_url) -> None:
    with pytest.raises(JobNotFound, match="never submitted, or its record expired"):
        client.result("no-such-job")
    with pytest.raises(JobNotFound):
        client.wait("no-such-job", timeout=1)
    with pytest.raises(JobNotFound):
        client.cancel("no-such-job")


def test_an_expired_job_is_not_found(client: Client, promoted: str, r) -> None:
    job_id = client.submit(promoted, [[0.0] * 6], ttl=1)
    assert client.result(job_id).status == "queued"
    r.delete(f"predictq:job:{job_id}")  # what the TTL does, without waiting for it
    with pytest.raises(JobNotFound):
        client.result(job_id)


def test_the_record_is_written_at_submission_with_its_ttl(client: Client, promoted: str, r) -> None:
    job_id = client.submit(promoted, [[0.0] * 6], ttl=600)
    res = client.result(job_id)
    assert (res.status, res.model, res.alias, res.attempts) == ("queued", promoted, "production", 0)
    assert res.submitted_at is not None and res.started_at is None
    assert 590 < r.ttl(f"predictq:job:{job_id}") <= 600


def test_a_repeated_job_id_returns_the_existing_job_and_enqueues_once(
    client: Client, promoted: str, r, start_worker
) -> None:
    first = client.submit(promoted, [[0.0] * 6], job_id="order-42")
    again = client.submit(promoted, [[1.0] * 6], job_id="order-42")
    assert first == again == "order-42"
    assert r.llen("predictq") == 1

    start_worker()
    res = client.wait("order-42", timeout=30)
    assert (res.status, res.attempts) == ("succeeded", 1)
    assert client.submit(promoted, [[0.0] * 6], job_id="order-42") == "order-42"
    assert r.llen("predictq") == 0
    assert client.result("order-42").finished_at == res.finished_at


def test_cancel_stops_a_queued_job_from_running(
    client: Client, promoted: str, start_worker
) -> None:
    keep, drop = client.submit_many(promoted, [[[0.0] * 6], [[1.0] * 6]])
    assert client.cancel(drop) is True
    assert client.result(drop).status == "cancelled"

    start_worker()
    kept, dropped = client.wait_many([keep, drop], timeout=30)

    assert kept.status == "succeeded"
    assert (dropped.status, dropped.started_at, dropped.predictions) == ("cancelled", None, None)
    assert client.cancel(keep) is False


def test_wait_times_out_with_a_clear_error_when_no_worker_runs(
    client: Client, promoted: str
) -> None:
    job_id = client.submit(promoted, [[0.0] * 6])
    with pytest.raises(JobTimeout, match=r"not final after 0\.3s"):
        client.wait(job_id, timeout=0.3)
    assert client.result(job_id).status == "queued"


def test_a_job_sent_by_a_plain_celery_client_gets_a_result_record(
    client: Client, promoted: str, fitted, dataset, redis_url, worker
) -> None:
    x, _ = dataset
    stock = Celery(broker=redis_url)
    stock.conf.task_serializer = "json"
    sent = stock.send_task(
        "predictq.predict",
        kwargs={"model": promoted, "rows": x[:3].tolist(), "probabilities": True},
        queue="predictq",
    )

    # No record exists until a worker takes the job: stock clients write none at submission.
    wait_for(lambda: client.redis.exists(f"predictq:job:{sent.id}"), 30, "the job record")
    res = client.wait(sent.id, timeout=30)

    assert res.status == "succeeded", res.error
    assert res.predictions == fitted.predict(x[:3]).tolist()
    assert (res.version, res.alias, res.attempts) == (1, "production", 1)


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"model": "clf", "rows": "abc"}, "invalid_input", "rows: Input should be a valid list"),
        ({"model": "clf", "rows": [[1, 2]]}, "invalid_input", "row 0 has 2 values"),
        ({"model": "clf"}, "invalid_input", "malformed job: rows"),
        ({"model": "missing", "rows": [[0] * 6]}, "model_not_found", "no model named 'missing'"),
        ({"model": "clf", "rows": [[0] * 6], "alias": "x"}, "model_not_found", "no alias 'x'"),
    ],
)
def test_bad_messages_fail_their_job_and_the_worker_keeps_serving(
    client: Client, promoted: str, redis_url, worker, kwargs, code, message
) -> None:
    stock = Celery(broker=redis_url)
    sent = stock.send_task("predictq.predict", kwargs=kwargs, queue="predictq")

    wait_for(lambda: client.redis.exists(f"predictq:job:{sent.id}"), 30, "the job record")
    bad = client.wait(sent.id, timeout=30)
    good = client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30)

    assert bad.status == "failed"
    assert bad.error is not None and bad.error.code == code
    assert message in bad.error.message
    assert good.status == "succeeded"
    assert worker.proc.poll() is None


def test_producer_messages_decode_like_the_ones_celery_sends(redis_url) -> None:
    """The hand-built message carries what kombu and Celery read off a send_task() message."""

    kwargs = {"model": "m", "rows": [[1.5, 2]], "version": None, "alias": "production"}
    ours = json.loads(task_message("job-1", kwargs, "predictq"))
    stock = Celery(broker=redis_url)
    stock.send_task("predictq.predict", kwargs=kwargs, task_id="job-1", queue="predictq")
    theirs = json.loads(redis.Redis.from_url(redis_url).rpop("predictq"))

    assert set(ours) == set(theirs)
    extra = {"predictq_record", "predictq_jobs", "predictq_at"}
    assert set(ours["headers"]) == set(theirs["headers"]) | extra
    assert set(ours["properties"]) == set(theirs["properties"])
    for key in ("task", "id", "root_id", "retries", "timelimit"):
        assert ours["headers"][key] == theirs["headers"][key]
    for key in ("correlation_id", "delivery_info", "body_encoding", "delivery_mode"):
        assert ours["properties"][key] == theirs["properties"][key]
    assert json.loads(base64.b64decode(ours["body"]))[:2] == [[], kwargs]
    assert json.loads(base64.b64decode(theirs["body"]))[:2] == [[], kwargs]


def test_a_job_that_fails_before_running_keeps_its_pinned_version(
    client: Client, promoted: str, redis_url, worker, r
) -> None:
    stock = Celery(broker=redis_url)
    kwargs = {"model": promoted, "rows": [[1, 2]], "version": 1}
    sent = stock.send_task("predictq.predict", kwargs=kwargs, queue="predictq")
    wait_for(lambda: r.hget(f"predictq:job:{sent.id}", "status") == "failed", 30, "the failure")
    assert client.result(sent.id).version == 1


def test_a_job_delivered_more_than_max_attempts_fails_as_worker_lost(
    client: Client, promoted: str, settings, worker, r
) -> None:
    job_id = client.submit(promoted, [[0.0] * 6])
    # What repeated redeliveries after crashes leave behind: the attempts are used up.
    r.hset(f"predictq:job:{job_id}", "attempts", settings.max_attempts)
    res = client.wait(job_id, timeout=30)
    assert (res.status, res.error and res.error.code) == ("failed", "worker_lost")
    assert res.attempts == settings.max_attempts + 1


def test_a_job_sent_alone_tells_its_own_waiter_the_result_the_record_holds(
    client: Client, promoted: str, fitted, worker, r
) -> None:
    rows = [[0.5] * 6, [-1.0] * 6]
    job_id = client.submit(promoted, rows, probabilities=True)
    wait_for(lambda: r.llen(keys.result(job_id)) == 1, 30, "the job's wake-up list")

    told = records.parse_told(r.lrange(keys.result(job_id), 0, -1)[0])
    waited = client.wait(job_id, timeout=10)

    record = client.result(job_id)
    assert told is not None and told.model_dump() == record.model_dump()
    assert waited.model_dump() == record.model_dump()
    assert record.predictions == fitted.predict(rows).tolist()
    assert not r.exists(keys.result(job_id))  # the waiter took it


def test_a_waiter_of_a_cancelled_job_sent_alone_wakes_at_once(
    client: Client, promoted: str, r
) -> None:
    job_id = client.submit(promoted, [[0.0] * 6])  # no worker: it stays queued
    assert client.cancel(job_id) is True

    res = client.wait(job_id, timeout=0.5)  # well under the 1 s poll slice

    assert res.status == "cancelled"
