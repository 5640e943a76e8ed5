"""Admission control: overload is refused whole, never half-done, in Python, HTTP and the CLI.

Memory tests set ``maxmemory`` on the session's Redis and put it back to 0 (no limit) after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from producer import Client, Overloaded
from registry import Settings, keys

from .conftest import REPO, ApiServer

ROW = [0.5] * 6


def ledger(r: redis.Redis) -> tuple[int, int, int]:
    """What a submission writes: queued index entries, queue messages, job records."""
    records = sum(1 for _ in r.scan_iter(match=keys.job("*"), count=1000))
    return r.zcard(keys.queued("predictq")), r.llen("predictq"), records


@pytest.fixture
def maxmemory(r: redis.Redis) -> Iterator[Callable[[int], None]]:
    """Sets Redis's maxmemory (noeviction, as recommended) for one test, then lifts it."""
    policy = r.config_get("maxmemory-policy")["maxmemory-policy"]

    def limit(n: int) -> None:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", n)

    try:
        yield limit
    finally:
        r.config_set("maxmemory", 0)
        r.config_set("maxmemory-policy", policy)


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


@pytest.mark.timeout(60)
def test_a_submission_past_max_queued_is_refused_and_writes_nothing(
    settings: Settings, promoted: str, r: redis.Redis
) -> None:
    with Client(settings=settings.model_copy(update={"max_queued": 5})) as client:
        client.submit_many(promoted, [[ROW]] * 4)
        before = ledger(r)
        with pytest.raises(Overloaded) as refused:
            client.submit_many(promoted, [[ROW]] * 2)
        assert ledger(r) == before == (4, 1, 4)
        error = refused.value
        assert (error.code, error.http_status, error.retry_after) == ("overloaded", 503, 1)
        assert "the queue is full: 4 queued" in error.message
        assert "raise PREDICTQ_MAX_QUEUED" in error.message

        client.submit(promoted, [ROW])  # 5 of 5
        with pytest.raises(Overloaded):
            client.submit(promoted, [ROW])
        assert ledger(r) == (5, 2, 5)


@pytest.mark.timeout(60)
def test_a_submit_many_that_would_cross_the_limit_is_refused_whole_not_chunk_by_chunk(
    settings: Settings, promoted: str, r: redis.Redis
) -> None:
    # 2,000 jobs go out in two script calls; the first (1,024) alone would fit under 1,500.
    with Client(settings=settings.model_copy(update={"max_queued": 1500})) as client:
        with pytest.raises(Overloaded, match="2000 more would pass PREDICTQ_MAX_QUEUED"):
            client.submit_many(promoted, [[ROW]] * 2000)
        assert ledger(r) == (0, 0, 0)
        assert len(client.submit_many(promoted, [[ROW]] * 1500)) == 1500
        assert r.zcard(keys.queued("predictq")) == 1500


@pytest.mark.timeout(60)
def test_resubmitting_an_existing_job_id_is_not_refused_when_the_queue_is_full(
    settings: Settings, promoted: str, r: redis.Redis
) -> None:
    with Client(settings=settings.model_copy(update={"max_queued": 1})) as client:
        assert client.submit(promoted, [ROW], job_id="order-1") == "order-1"
        assert client.submit(promoted, [ROW], job_id="order-1") == "order-1"
        with pytest.raises(Overloaded):
            client.submit_many(promoted, [[ROW], [ROW]], job_ids=["order-1", "order-2"])
        assert ledger(r) == (1, 1, 1)


@pytest.mark.timeout(60)
def test_memory_past_the_high_water_mark_refuses_before_sending_anything(
    settings: Settings, promoted: str, r: redis.Redis, maxmemory: Callable[[int], None]
) -> None:
    maxmemory(int(used_memory(r) / 0.95))  # 95% used, the mark is 90%
    with Client(settings=settings) as client:
        with pytest.raises(Overloaded) as refused:
            client.submit_many(promoted, [[ROW]] * 10)
        assert ledger(r) == (0, 0, 0)
        assert "past the high-water mark PREDICTQ_MEMORY_HIGH_WATER (0.9)" in refused.value.message
        assert "raise Redis maxmemory" in refused.value.message
        assert refused.value.retry_after == 5


@pytest.mark.timeout(60)
def test_redis_out_of_memory_refuses_submissions_and_still_lets_queued_jobs_be_cancelled(
    settings: Settings, promoted: str, r: redis.Redis, maxmemory: Callable[[int], None]
) -> None:
    with Client(settings=settings) as client:
        queued = client.submit(promoted, [ROW])
    maxmemory(1)
    with pytest.raises(redis.OutOfMemoryError):
        r.set("anything", "1")  # Redis itself refuses writes now
    with Client(settings=settings) as client:
        with pytest.raises(Overloaded):
            client.submit(promoted, [ROW])
        assert ledger(r) == (1, 1, 1)
        assert client.cancel(queued) is True  # cancelling frees memory, so it runs under OOM
        assert client.result(queued).status == "cancelled"
        assert r.zcard(keys.queued("predictq")) == 0


@pytest.mark.timeout(60)
def test_an_oom_reply_to_a_later_chunk_cancels_what_the_submission_enqueued(
    settings: Settings, promoted: str, r: redis.Redis, maxmemory: Callable[[int], None]
) -> None:
    with Client(settings=settings.model_copy(update={"memory_high_water": 1.0})) as client:
        # What one chunk of 1,024 jobs keeps in this Redis, measured and then removed.
        before = used_memory(r)
        client.submit_many(promoted, [[ROW]] * 1024)
        chunk = used_memory(r) - before
        r.delete(keys.queued("predictq"), "predictq", *r.scan_iter(match=keys.job("*")))
        # Redis refuses a script's first write past maxmemory but lets a script that has written
        # finish: with most of a chunk to spare, the first chunk goes in and a later one is
        # refused.
        maxmemory(used_memory(r) + int(0.8 * chunk))
        with pytest.raises(Overloaded) as refused:
            client.submit_many(promoted, [[ROW]] * 3000)
    assert isinstance(refused.value.__cause__, redis.OutOfMemoryError)
    queued, _, records = ledger(r)
    assert queued == 0 and records in (1024, 2048), (queued, records, chunk)
    assert {r.hget(k, "status") for k in r.scan_iter(match=keys.job("*"))} == {"cancelled"}
    assert refused.value.message.startswith(
        f"Redis is out of memory (used_memory over maxmemory); the {records} jobs this "
        "submission had enqueued were cancelled"
    )


@pytest.mark.timeout(90)
def test_the_api_answers_503_with_retry_after_and_the_error_shape_when_overloaded(
    api: ApiServer, promoted: str, r: redis.Redis, maxmemory: Callable[[int], None]
) -> None:
    maxmemory(int(used_memory(r) / 0.95))
    with api.http("svc") as http:
        one = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [ROW]})
        many = http.post(f"/v1/models/{promoted}/jobs:batch", json={"jobs": [{"rows": [ROW]}] * 3})
        maxmemory(1)  # full: claiming a caller-chosen job ID is refused by Redis itself
        chosen = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [ROW], "job_id": "a-1"})
    for answer in (one, many, chosen):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        body = answer.json()
        assert set(body) == {"code", "message"} and body["code"] == "overloaded"
        assert "raise Redis maxmemory" in body["message"]
    assert "high-water mark" in one.json()["message"]
    assert "out of memory" in chosen.json()["message"]
    assert ledger(r) == (0, 0, 0)
    assert not list(r.scan_iter(match=keys.owner("*")))


@pytest.mark.timeout(90)
def test_predictq_submit_prints_one_line_and_exits_1_when_the_queue_is_full(
    env: dict[str, str], client: Client, promoted: str, r: redis.Redis
) -> None:
    client.submit(promoted, [ROW])
    out = subprocess.run(
        [sys.executable, "-m", "worker", "submit", promoted, "--rows", json.dumps([ROW])],
        env={**os.environ, **env, "PREDICTQ_MAX_QUEUED": "1"}, cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("error (overloaded): the queue is full: 1 queued, 1 more would pass ")
    assert line.endswith("add workers, or raise PREDICTQ_MAX_QUEUED")
    assert ledger(r) == (1, 1, 1)


@pytest.mark.timeout(90)
def test_a_batch_whose_owner_records_fill_redis_over_http_is_written_whole_with_its_owners(
    env: dict[str, str], tmp_path: Path, promoted: str, r: redis.Redis,
    maxmemory: Callable[[int], None],
) -> None:  # fmt: skip
    # The gateway writes the jobs and their owners in one script, which Redis lets finish once
    # it has written: a Redis that fills up part-way never leaves jobs their key cannot read.
    server = ApiServer({**env, "PREDICTQ_MEMORY_HIGH_WATER": "1.0"}, tmp_path / "api.log")
    batch = {"jobs": [{"rows": [ROW]}] * 1000}
    try:
        with server.http("svc") as http:
            # What the jobs of one batch keep in this Redis (not their owners), measured and then
            # removed.
            before = used_memory(r)
            assert http.post(f"/v1/models/{promoted}/jobs:batch", json=batch).status_code == 202
            r.delete(*r.scan_iter(match=keys.owner("*"), count=1000))
            jobs = used_memory(r) - before
            r.delete(
                keys.queued("predictq"), "predictq", *r.scan_iter(match=keys.job("*"), count=1000)
            )
            # Room for the jobs, none left for their owners.
            maxmemory(used_memory(r) + int(0.8 * jobs))
            answer = http.post(f"/v1/models/{promoted}/jobs:batch", json=batch)
            assert answer.status_code == 202, (answer.status_code, answer.text[:300], jobs)
            ids = [j["id"] for j in answer.json()["jobs"]]
            mine = http.post("/v1/jobs:wait", json={"ids": ids}).json()
            theirs = http.post("/v1/jobs:wait", json={"ids": ids}, headers=server.auth("other"))
    finally:
        server.stop()
    queued, _, records = ledger(r)
    assert (queued, records) == (1000, 1000)
    assert mine["not_found"] == [] and len(mine["pending"]) == 1000
    assert theirs.json()["not_found"] == ids
