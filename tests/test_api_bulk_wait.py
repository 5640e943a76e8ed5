"""``POST /v1/jobs:wait``: many jobs waited on in one request, over a real ``predictq api``.

One API server serves the module (on the session's Redis, flushed per test), started with a small
``PREDICTQ_API_MAX_BATCH_JOBS`` and ``PREDICTQ_API_MAX_BODY_BYTES`` so that the limits are cheap
to cross; ``PREDICTQ_API_MAX_WAIT`` is the test servers' 5 s. Only the first test needs a worker:
the others make jobs final by cancelling them, and keep others queued by running no worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry import keys

from .conftest import ApiServer, RedisServer, Worker, module_env, wait_for

LIMIT = 8
"""PREDICTQ_API_MAX_BATCH_JOBS of this module's server."""
BODY_LIMIT = 16 * 1024
"""PREDICTQ_API_MAX_BODY_BYTES of this module's server: far above any body of LIMIT IDs."""
MAX_WAIT = 5.0
"""PREDICTQ_API_MAX_WAIT of every test server (conftest.ApiServer)."""
AT_ONCE = MAX_WAIT / 2
"""An answer faster than this did not wait for the cap: generous for a loaded 2-core machine."""
ROW = [0.0] * 6


@pytest.fixture(scope="module")
def bulk_api(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("bulk-wait")
    env = {
        **module_env(redis_server, home),
        "PREDICTQ_API_MAX_BATCH_JOBS": str(LIMIT),
        "PREDICTQ_API_MAX_BODY_BYTES": str(BODY_LIMIT),
    }
    server = ApiServer(env, home / "api.log")
    yield server
    server.stop()


def _submit(http: httpx.Client, jobs: list[list[Any]]) -> list[str]:
    """Submit one job per rows list through ``jobs:batch``; their IDs, in order."""
    answer = http.post("/v1/models/clf/jobs:batch", json={"jobs": [{"rows": r} for r in jobs]})
    assert answer.status_code == 202, answer.text
    return [str(job["id"]) for job in answer.json()["jobs"]]


def _cancel(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """Cancel a queued job (so it is final); its record."""
    answer = http.delete(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    assert record["status"] == "cancelled"
    return record


def _wait(http: httpx.Client, ids: list[Any], wait: float | None = None) -> tuple[Any, float]:
    """POST ``/v1/jobs:wait``: the 200 answer's body and how long it took."""
    body: dict[str, Any] = {"ids": ids} if wait is None else {"ids": ids, "wait": wait}
    started = time.monotonic()
    answer = http.post("/v1/jobs:wait", json=body)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    return answer.json(), took


def _refused(answer: httpx.Response, status: int, code: str) -> str:
    """Assert the API's one error shape with ``status`` and ``code``; its message."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code, body
    assert set(body) <= {"code", "message", "errors"}, body
    message = str(body["message"])
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.timeout(90)
def test_it_answers_as_soon_as_every_job_is_final_with_each_jobs_record_in_the_order_asked(
    bulk_api: ApiServer,
    promoted: str,
    fitted: LogisticRegression,
    dataset: tuple[np.ndarray, np.ndarray],
    worker: Worker,
) -> None:
    x, _ = dataset
    inputs = [x[i : i + 1 + i % 3] for i in range(0, 24, 4)]  # 6 jobs of 1 to 3 rows
    with bulk_api.http("svc") as http:
        # Its pool process takes jobs a moment after the worker's first heartbeat: one job run
        # first keeps that warm-up out of the time measured.
        [first] = _submit(http, [[ROW]])
        wait_for(lambda: http.get(f"/v1/jobs/{first}", params={"wait": 5}).json()["status"]
                 == "succeeded", 60, "a first job to run")  # fmt: skip
        ids = _submit(http, [rows.tolist() for rows in inputs])
        # Asked in another order than submitted, with two IDs repeated.
        asked = [*reversed(ids), ids[0], ids[3]]
        body, took = _wait(http, asked, wait=30)
        singles = {i: http.get(f"/v1/jobs/{i}").json() for i in ids}

    assert body["pending"] == [] and body["not_found"] == []
    assert [job["id"] for job in body["jobs"]] == list(reversed(ids))
    for job_id, rows in zip(ids, inputs, strict=True):
        [record] = [job for job in body["jobs"] if job["id"] == job_id]
        assert record["status"] == "succeeded", record["error"]
        assert record["predictions"] == fitted.predict(rows).tolist()
        assert record["worker"].startswith(worker.name)
        # The same JSON as GET /v1/jobs/{id}.
        assert record == singles[job_id]
    # The wait asked for was 30 s (capped at 5): it ended when the jobs did.
    assert took < AT_ONCE, f"answered after {took:.2f}s"


def _scripts_run(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def _woken_by_cancels(
    http: httpx.Client, ids: list[str], r: redis.Redis
) -> tuple[Any, list[dict[str, Any]], float]:
    """Wait on queued jobs, cancel them all once the wait is under way: its answer, the
    cancelled records, and how long after the last cancel it came."""
    before = _scripts_run(r)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_wait, http, ids, 30)
        # Under way once the server read the jobs (one script call; nothing else runs scripts
        # here: no worker serves the model).
        wait_for(lambda: _scripts_run(r) > before, 10, "the wait to read its jobs")
        records = [_cancel(http, job_id) for job_id in ids]
        ended = time.monotonic()
        body, _ = waiting.result(timeout=15)
        return body, records, time.monotonic() - ended


@pytest.mark.timeout(60)
def test_it_wakes_when_the_last_job_ends_whether_this_gateway_or_another_submitted_it(
    bulk_api: ApiServer, promoted: str, client: Client, r: redis.Redis
) -> None:
    # No worker runs: the jobs end when they are cancelled, while the wait is under way. This
    # gateway hears of its own jobs' ends on its reply list, of the Python client's through
    # their pub/sub channels.
    with bulk_api.http("svc") as svc, bulk_api.http("ops") as ops:
        over_http = _submit(svc, [[ROW], [ROW]])
        by_client = client.submit("clf", [ROW])
        own, own_records, own_woke = _woken_by_cancels(svc, over_http, r)
        other, other_records, other_woke = _woken_by_cancels(ops, [by_client], r)
    assert own == {"jobs": own_records, "pending": [], "not_found": []}
    assert other == {"jobs": other_records, "pending": [], "not_found": []}
    # Well before the 5 s cap, and before the 1 s re-read that backs up a missed wake-up.
    assert own_woke < 0.9 and other_woke < 0.9, (own_woke, other_woke)


@pytest.mark.timeout(60)
def test_jobs_that_cannot_finish_are_pending_when_the_wait_ends_and_final_ones_are_answered(
    bulk_api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    # No worker runs: the queued jobs cannot end; one is cancelled first, so it is final.
    with bulk_api.http("svc") as http:
        first, second, third = _submit(http, [[ROW], [ROW], [ROW]])
        cancelled = _cancel(http, second)
        waited, took = _wait(http, [first, second, third], wait=1.5)
        at_once, at_once_took = _wait(http, [first, second, third])

    expected = {"jobs": [cancelled], "pending": [first, third], "not_found": []}
    assert waited == expected
    assert 1.4 <= took < 1.5 + 5, f"answered after {took:.2f}s"
    # Without a wait (default 0) it answers at once, with the same partition.
    assert at_once == expected
    assert at_once_took < AT_ONCE, f"answered after {at_once_took:.2f}s"
    assert r.hget(keys.job(first), "status") == r.hget(keys.job(third), "status") == "queued"


@pytest.mark.timeout(60)
def test_a_wait_longer_than_the_cap_is_cut_to_predictq_api_max_wait_not_refused(
    bulk_api: ApiServer, promoted: str
) -> None:
    with bulk_api.http("svc") as http:
        [queued] = _submit(http, [[ROW]])
        body, took = _wait(http, [queued], wait=600)
    assert body == {"jobs": [], "pending": [queued], "not_found": []}
    assert MAX_WAIT - 0.1 <= took < MAX_WAIT + 10, f"answered after {took:.2f}s"


@pytest.mark.timeout(60)
def test_another_keys_jobs_are_not_found_exactly_like_unknown_ids_and_an_admin_sees_them(
    bulk_api: ApiServer, promoted: str, client: Client
) -> None:
    with (
        bulk_api.http("svc") as owner,
        bulk_api.http("other") as other,
        bulk_api.http("ops") as ops,
    ):
        theirs_done, theirs_queued = _submit(owner, [[ROW], [ROW]])
        theirs_record = _cancel(owner, theirs_done)
        mine_done, mine_queued = _submit(other, [[ROW], [ROW]])
        mine_record = _cancel(other, mine_done)
        # A job submitted with the Python client belongs to no API key: GET answers 404 for it.
        no_key = client.submit("clf", [ROW])
        asked = [theirs_done, mine_queued, theirs_queued, "never-submitted", mine_done, no_key]

        seen_by_other, _ = _wait(other, asked)
        # Another key's queued job does not hold the wait up, as an unknown ID would not: the
        # time taken tells nothing either.
        foreign_only, foreign_took = _wait(other, [theirs_queued], wait=30)
        unknown_only, _ = _wait(other, ["never-submitted"], wait=30)
        seen_by_admin, _ = _wait(ops, asked)
        seen_by_owner, _ = _wait(owner, asked)

    assert seen_by_other == {
        "jobs": [mine_record],
        "pending": [mine_queued],
        "not_found": [theirs_done, theirs_queued, "never-submitted", no_key],
    }
    assert foreign_only == {"jobs": [], "pending": [], "not_found": [theirs_queued]}
    assert unknown_only == {"jobs": [], "pending": [], "not_found": ["never-submitted"]}
    assert foreign_took < AT_ONCE, f"answered after {foreign_took:.2f}s"
    assert seen_by_admin == {
        "jobs": [theirs_record, mine_record],
        "pending": [mine_queued, theirs_queued, no_key],
        "not_found": ["never-submitted"],
    }
    assert seen_by_owner == {
        "jobs": [theirs_record],
        "pending": [theirs_queued],
        "not_found": [mine_queued, "never-submitted", mine_done, no_key],
    }


@pytest.mark.timeout(60)
def test_unknown_and_expired_ids_are_not_found_do_not_hold_the_wait_and_repeats_count_once(
    bulk_api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    # Any string of 1 to 200 characters is an ID that may be asked about.
    unknown = ["never-submitted", "no such/job ü", "x" * 200]
    with bulk_api.http("svc") as http:
        done, expired = _submit(http, [[ROW], [ROW]])
        record = _cancel(http, done)
        # As if its record's TTL had run out: its owner key outlives it (owners.owner_ttl).
        r.delete(keys.job(expired))
        asked = [*unknown, done, unknown[0], expired, done, unknown[2]]
        body, took = _wait(http, asked, wait=30)
        only_unknown, only_unknown_took = _wait(http, unknown * 2, wait=30)

    assert body == {"jobs": [record], "pending": [], "not_found": [*unknown, expired]}
    assert only_unknown == {"jobs": [], "pending": [], "not_found": unknown}
    assert took < AT_ONCE, f"answered after {took:.2f}s"
    assert only_unknown_took < AT_ONCE, f"answered after {only_unknown_took:.2f}s"


def _snapshot(r: redis.Redis) -> dict[str, object]:
    """Every key with its type, and each hash (the job records) with its fields."""
    return {k: r.hgetall(k) if r.type(k) == "hash" else r.type(k) for k in r.scan_iter()}


@pytest.mark.timeout(60)
def test_more_ids_than_predictq_api_max_batch_jobs_or_none_are_refused_and_change_nothing(
    bulk_api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    with bulk_api.http("svc") as http:
        ids = _submit(http, [[ROW]] * LIMIT)
        before = _snapshot(r)
        over = http.post("/v1/jobs:wait", json={"ids": [*ids, "one-more"], "wait": 1})
        empty = http.post("/v1/jobs:wait", json={"ids": [], "wait": 1})
        after = _snapshot(r)
        at_the_limit, _ = _wait(http, ids)

    message = _refused(over, 422, "invalid_input")
    assert "PREDICTQ_API_MAX_BATCH_JOBS" in message and str(LIMIT) in message
    _refused(empty, 422, "invalid_input")
    assert after == before
    assert at_the_limit == {"jobs": [], "pending": ids, "not_found": []}


BAD_BODIES = {
    "no ids": {"wait": 1},
    "ids not a list": {"ids": "job-1"},
    "an empty ID": {"ids": ["job-1", ""]},
    "an ID of 201 characters": {"ids": ["x" * 201]},
    "a number for an ID": {"ids": ["job-1", 42]},
    "null for an ID": {"ids": [None]},
    "an object for an ID": {"ids": [{"id": "job-1"}]},
    "a negative wait": {"ids": ["job-1"], "wait": -1},
    "a string for the wait": {"ids": ["job-1"], "wait": "soon"},
    "a boolean for the wait": {"ids": ["job-1"], "wait": True},
    "an unknown field": {"ids": ["job-1"], "wiat": 1},
    "not an object": ["job-1"],
}


@pytest.mark.timeout(60)
def test_a_bad_body_is_refused_with_422_in_the_one_error_shape(
    bulk_api: ApiServer, promoted: str
) -> None:
    with bulk_api.http("svc") as http:
        answers = {case: http.post("/v1/jobs:wait", json=body) for case, body in BAD_BODIES.items()}
        # JSON has no infinity: a number too large for a double is what a client can send.
        infinite = http.post(
            "/v1/jobs:wait",
            content=b'{"ids": ["job-1"], "wait": 1e999}',
            headers={"Content-Type": "application/json"},
        )
    for case, answer in answers.items():
        assert answer.status_code == 422, f"{case}: {answer.status_code} {answer.text}"
        _refused(answer, 422, "invalid_input")
    # Refused by the strict JSON parser before validation, as any NaN or Infinity is (400).
    assert "infinity" in _refused(infinite, 400, "malformed_request")


@pytest.mark.timeout(60)
def test_keys_scopes_content_types_and_size_get_the_usual_errors(
    bulk_api: ApiServer, promoted: str
) -> None:
    body = {"ids": ["job-1"]}
    with (
        bulk_api.http() as anonymous,
        bulk_api.http("reader") as reader,
        bulk_api.http("svc") as svc,
    ):
        answers: dict[str, Callable[[], httpx.Response]] = {
            "unauthorized": lambda: anonymous.post("/v1/jobs:wait", json=body),
            "forbidden": lambda: reader.post("/v1/jobs:wait", json=body),
            "unsupported_media_type": lambda: svc.post(
                "/v1/jobs:wait", content=b'{"ids": ["job-1"]}',
                headers={"Content-Type": "text/plain"},
            ),
            "malformed_request": lambda: svc.post(
                "/v1/jobs:wait", content=b'{"ids": ["job-1"',
                headers={"Content-Type": "application/json"},
            ),
            "payload_too_large": lambda: svc.post(
                "/v1/jobs:wait", json={"ids": ["x" * 200] * (BODY_LIMIT // 200 + 1)}
            ),
        }  # fmt: skip
        got = {code: call() for code, call in answers.items()}
    statuses = {
        "unauthorized": 401,
        "forbidden": 403,
        "unsupported_media_type": 415,
        "malformed_request": 400,
        "payload_too_large": 413,
    }
    for code, answer in got.items():
        _refused(answer, statuses[code], code)
    assert got["unauthorized"].headers["www-authenticate"].startswith("Bearer")
    assert "PREDICTQ_API_MAX_BODY_BYTES" in got["payload_too_large"].json()["message"]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a top-level $ref followed."""
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        defined = document.get("components", {}).get("schemas", {})
        assert name in defined, f"{schema['$ref']} is not defined in the document"
        schema = defined[name]
    return schema


@pytest.mark.timeout(60)
def test_the_served_openapi_document_describes_the_bulk_wait(bulk_api: ApiServer) -> None:
    with bulk_api.http() as http:
        document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/jobs:wait"]["post"]

    request = _resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    assert "ids" in request["required"]
    ids = _resolve(document, request["properties"]["ids"])
    assert ids["type"] == "array" and ids.get("minItems") == 1
    item = _resolve(document, ids["items"])
    assert item["type"] == "string"
    assert item.get("minLength") == 1 and item.get("maxLength") == 200
    wait = _resolve(document, request["properties"]["wait"])
    assert wait.get("type") == "number" or any(
        s.get("type") == "number" for s in wait.get("anyOf", [])
    ), wait

    answer = _resolve(
        document, operation["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert set(answer["properties"]) == {"jobs", "pending", "not_found"}
    jobs = _resolve(document, answer["properties"]["jobs"])
    assert jobs["type"] == "array"
    assert jobs["items"] == {"$ref": "#/components/schemas/JobResult"}
    for name in ("pending", "not_found"):
        listed = _resolve(document, answer["properties"][name])
        assert listed["type"] == "array" and listed["items"]["type"] == "string"
    # The usual errors, each in the one error shape.
    for status in ("401", "403", "413", "415", "422"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (status, schema)
