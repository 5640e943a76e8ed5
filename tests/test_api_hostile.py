"""Hostile HTTP bodies: each gets a 4xx quickly, names the problem, and enqueues nothing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from .conftest import ApiServer

ROW = "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"
TEN_MB = 10 * 1024 * 1024


def _padded(size: int) -> bytes:
    """A syntactically valid submission of about ``size`` bytes."""
    rows = ",".join([ROW] * (size // (len(ROW) + 1)))
    return f'{{"rows": [{rows}]}}'.encode()


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _nested(depth: int) -> bytes:
    return b'{"rows": ' + b"[" * depth + b"0" + b"]" * depth + b"}"


JSON = {"Content-Type": "application/json"}
CASES = {
    "10 MB with a Content-Length": (_padded(TEN_MB), JSON, 413, "payload_too_large", "bytes"),
    "nested 10^4 deep": (_nested(10_000), JSON, 400, "malformed_request", "nested deeper"),
    "NaN": (b'{"rows": [[NaN, 1, 2, 3, 4, 5]]}', JSON, 400, "malformed_request", "NaN"),
    "Infinity": (b'{"rows": [[Infinity, 1, 2, 3, 4, 5]]}', JSON, 400, "malformed_request",
                 "Infinity"),
    "-Infinity": (b'{"rows": [[-Infinity, 1, 2, 3, 4, 5]]}', JSON, 400, "malformed_request",
                  "Infinity"),
    "truncated JSON": (b'{"rows": [[1, 2', JSON, 400, "malformed_request", "not valid JSON"),
    "empty body": (b"", JSON, 400, "malformed_request", "empty"),
    "text/plain": (b'{"rows": [[1, 2, 3, 4, 5, 6]]}', {"Content-Type": "text/plain"}, 415,
                   "unsupported_media_type", "application/json"),
    "a form": (b"rows=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
               "unsupported_media_type", "application/json"),
    "no content type": (b'{"rows": [[1, 2, 3, 4, 5, 6]]}', {}, 415, "unsupported_media_type",
                        "nothing"),
    "JSON in latin-1": (b'{"rows": [[1, 2, 3, 4, 5, 6]]}',
                        {"Content-Type": "application/json; charset=latin-1"}, 415,
                        "unsupported_media_type", "application/json"),
    "not an object": (b"[[1, 2, 3, 4, 5, 6]]", JSON, 422, "invalid_input", "body"),
    "strings for numbers": (b'{"rows": [["1", 2, 3, 4, 5, 6]]}', JSON, 422, "invalid_input",
                            "must be a number"),
    "booleans for numbers": (b'{"rows": [[true, 2, 3, 4, 5, 6]]}', JSON, 422, "invalid_input",
                             "must be a number"),
    "an unknown field": (b'{"rows": [[1, 2, 3, 4, 5, 6]], "probabilites": true}', JSON, 422,
                         "invalid_input", "probabilites"),
    "wrong feature count": (b'{"rows": [[1, 2]]}', JSON, 422, "invalid_input",
                            "expects 6 features"),
    "too many rows": (_padded(700_000), JSON, 422, "invalid_input", "more than the limit"),
}  # fmt: skip


def _unchanged(r: redis.Redis, before: int) -> None:
    assert r.llen("predictq") == 0
    assert list(r.scan_iter(match="predictq:job:*")) == []
    assert list(r.scan_iter(match="predictq:owner:*")) == []
    assert r.dbsize() == before


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_hostile_body_gets_a_quick_4xx_that_names_it_and_enqueues_nothing(
    shared_api: ApiServer, promoted: str, r: redis.Redis, case: str
) -> None:
    body, headers, status, code, words = CASES[case]
    before = r.dbsize()
    with shared_api.http("svc") as http:
        started = time.monotonic()
        answer = http.post("/v1/models/clf/jobs", content=body, headers=headers)
        elapsed = time.monotonic() - started
        assert http.get("/healthz").status_code == 200
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code
    assert words in answer.json()["message"]
    assert elapsed < 3, f"{case} took {elapsed:.1f}s"
    _unchanged(r, before)


def test_a_chunked_body_is_cut_off_at_the_limit(
    shared_api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    before = r.dbsize()
    with shared_api.http("svc") as http:
        started = time.monotonic()
        # A generator body goes out chunked, with no Content-Length to refuse it by.
        answer = http.post("/v1/models/clf/jobs", content=_chunks(_padded(TEN_MB)), headers=JSON)
        elapsed = time.monotonic() - started
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    assert elapsed < 5
    _unchanged(r, before)


def test_a_batch_with_one_bad_job_or_too_many_jobs_enqueues_none(
    shared_api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    before = r.dbsize()
    good = {"rows": [[0.0] * 6]}
    with shared_api.http("svc") as http:
        one_bad = http.post(
            "/v1/models/clf/jobs:batch", json={"jobs": [good, good, {"rows": [[1.0, 2.0]]}, good]}
        )
        too_many = http.post("/v1/models/clf/jobs:batch", json={"jobs": [good] * 1001})
        nan = http.post("/v1/models/clf/jobs:batch", content=b'{"jobs": [{"rows": [[NaN]]}]}',
                        headers=JSON)  # fmt: skip
    assert one_bad.status_code == 422 and "job 2: row 0 has 2 values" in one_bad.json()["message"]
    assert too_many.status_code == 422 and "more than 1000 per batch" in too_many.json()["message"]
    assert nan.status_code == 400
    _unchanged(r, before)


def _raw_status(server: ApiServer, content_length: str) -> int:
    """Send a request whose Content-Length header says ``content_length``; its status."""
    body = b'{"rows": [[1, 2, 3, 4, 5, 6]]}'
    head = (f"POST /v1/models/clf/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nAuthorization: Bearer {server.keys['svc']}\r\n"
            f"Content-Length: {content_length}\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize(("content_length", "status"), [(str(TEN_MB), 413), ("12abc", 400)])
def test_a_content_length_too_large_or_not_a_number_is_refused_before_the_body_is_read(
    shared_api: ApiServer, promoted: str, r: redis.Redis, content_length: str, status: int
) -> None:
    before = r.dbsize()
    assert _raw_status(shared_api, content_length) == status
    _unchanged(r, before)


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "abc"])
def test_a_wait_that_is_not_a_finite_number_of_seconds_is_refused(
    shared_api: ApiServer, wait: str
) -> None:
    with shared_api.http("svc") as http:
        started = time.monotonic()
        answer = http.get("/v1/jobs/anything", params={"wait": wait})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["query", "wait"]
    assert time.monotonic() - started < 3
