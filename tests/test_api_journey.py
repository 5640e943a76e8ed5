"""The HTTP journey through a real ``predictq api`` (uvicorn), real Redis and real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis

from producer import FINAL_STATUSES
from registry import Registry, keys

from .conftest import REPO, ApiServer, wait_for


def _submit(api: ApiServer, who: str, rows: list, **fields: object) -> str:
    with api.http(who) as http:
        answer = http.post("/v1/models/clf/jobs", json={"rows": rows, **fields})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.json()["status_url"] == f"/v1/jobs/{job_id}"
    assert answer.headers["location"] == f"/v1/jobs/{job_id}"
    return str(job_id)


def _final(http: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    """Long-poll the job until it is final, as a client would: each wait is capped (5 s here)."""
    deadline = time.monotonic() + timeout
    while True:
        record: dict = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        if record["status"] in FINAL_STATUSES or time.monotonic() > deadline:
            return record


def test_a_job_submitted_over_http_is_long_polled_to_the_same_answer_as_predict(
    api: ApiServer, promoted: str, fitted, dataset, worker
) -> None:
    x, _ = dataset
    job_id = _submit(api, "svc", x[:3].tolist(), probabilities=True)

    with api.http("svc") as http:
        done = _final(http, job_id)
        again = http.get(f"/v1/jobs/{job_id}").json()

    assert done["status"] == "succeeded", done["error"]
    assert done["id"] == job_id and done["model"] == "clf" and done["version"] == 1
    assert done["predictions"] == fitted.predict(x[:3]).tolist()
    np.testing.assert_allclose(done["probabilities"], fitted.predict_proba(x[:3]), rtol=1e-12)
    assert done["worker"].startswith(worker.name)
    assert again == done


def test_records_and_batches_are_accepted_and_each_job_gets_its_result(
    api: ApiServer, registry: Registry, fitted, dataset, worker
) -> None:
    x, _ = dataset
    registry.register("clf", fitted, promote=True)
    body = {"jobs": [{"rows": x[i : i + 2].tolist()} for i in range(0, 10, 2)]}
    with api.http("svc") as http:
        answer = http.post("/v1/models/clf/jobs:batch", json=body)
        assert answer.status_code == 202, answer.text
        ids = [j["id"] for j in answer.json()["jobs"]]
        results = [_final(http, i) for i in ids]
    assert len(set(ids)) == 5
    for i, res in zip(range(0, 10, 2), results, strict=True):
        assert res["status"] == "succeeded"
        assert res["predictions"] == fitted.predict(x[i : i + 2]).tolist()


def test_a_long_poll_on_a_job_nobody_runs_answers_its_queued_record_when_the_wait_ends(
    api: ApiServer, promoted: str
) -> None:
    job_id = _submit(api, "svc", [[0.0] * 6])
    with api.http("svc") as http:
        started = time.monotonic()
        short = http.get(f"/v1/jobs/{job_id}", params={"wait": 1})
        middle = time.monotonic()
        # Longer than PREDICTQ_API_MAX_WAIT (5 s for test servers): capped, not refused.
        capped = http.get(f"/v1/jobs/{job_id}", params={"wait": 600})
        ended = time.monotonic()
    assert short.status_code == capped.status_code == 200
    assert short.json()["status"] == capped.json()["status"] == "queued"
    assert 0.9 <= middle - started < 8
    assert 4.9 <= ended - middle < 15


def test_a_long_poll_returns_as_soon_as_the_job_ends(
    api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    job_id = _submit(api, "svc", [[0.0] * 6])

    def scripts_run() -> int:
        return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    before = scripts_run()
    with api.http("svc") as poller, api.http("svc") as canceller, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(poller.get, f"/v1/jobs/{job_id}", params={"wait": 5})
        # The poll is under way once the server read the job (one script call; nothing else
        # runs scripts here: no worker serves the model), and it now waits on its result list.
        wait_for(lambda: scripts_run() > before, 10, "the long-poll")
        assert canceller.delete(f"/v1/jobs/{job_id}").status_code == 200
        ended = time.monotonic()
        answer = waiting.result(timeout=10)
        woke_after = time.monotonic() - ended
    assert answer.json()["status"] == "cancelled"
    # Well before the 5 s cap, and before the 1 s re-read that backs up missed wake-ups.
    assert woke_after < 0.9


@pytest.mark.timeout(120)
def test_a_job_that_ended_before_its_long_poll_is_answered_at_once_and_as_its_record_says(
    api: ApiServer, promoted: str, start_worker, r: redis.Redis
) -> None:
    # The gateway answers a long-poll on a job it submitted from the result the worker told it,
    # without reading the record: it must not wait for a result it was told before the poll
    # came, and what it answers must be the record itself.
    start_worker()
    with api.http("svc") as http:
        _final(http, _submit(api, "svc", [[0.0] * 6]))  # the worker has loaded the model
        job_id = _submit(api, "svc", [[1.0] * 6])
        wait_for(lambda: r.hget(keys.job(job_id), "status") == "succeeded", 30, "the job")
        began = time.monotonic()
        told = http.get(f"/v1/jobs/{job_id}", params={"wait": 5})
        took = time.monotonic() - began
        again = http.get(f"/v1/jobs/{job_id}", params={"wait": 5})
        other = http.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {api.keys['other']}"}
        )
    assert told.status_code == 200 and told.json()["status"] == "succeeded"
    assert took < 0.9  # before the 1 s re-read that backs up a missed result
    assert again.json() == told.json()
    assert other.status_code == 404


def test_a_queued_job_is_cancelled_and_a_finished_one_is_not(
    api: ApiServer, promoted: str, start_worker, r: redis.Redis
) -> None:
    queued = _submit(api, "svc", [[0.0] * 6])
    with api.http("svc") as http:
        cancelled = http.delete(f"/v1/jobs/{queued}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        start_worker()
        finished = _submit(api, "svc", [[0.0] * 6])
        assert _final(http, finished)["status"] == "succeeded"
        refused = http.delete(f"/v1/jobs/{finished}")
        assert http.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    assert refused.status_code == 409
    assert refused.json()["code"] == "not_cancellable"
    assert "succeeded" in refused.json()["message"]


def test_an_admin_key_promotes_and_rolls_back_and_new_jobs_follow(
    api: ApiServer, registry: Registry, fitted, dataset, worker
) -> None:
    x, _ = dataset
    registry.register("clf", fitted, promote=True)
    registry.register("clf", fitted)
    with api.http("ops") as ops:
        promoted = ops.post("/v1/models/clf/versions/2/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json() == {"model": "clf", "alias": "production", "version": 2}
        on_v2 = _submit(api, "svc", x[:1].tolist())
        assert _final(ops, on_v2)["version"] == 2
        rolled = ops.post("/v1/models/clf/rollback")
        assert rolled.json()["version"] == 1
        canary = ops.post("/v1/models/clf/versions/2/promote", params={"alias": "canary"})
        assert canary.json() == {"model": "clf", "alias": "canary", "version": 2}
        nothing = ops.post("/v1/models/clf/rollback", params={"alias": "canary"})
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_to_roll_back"
    assert registry.aliases("clf") == {"production": 1, "canary": 2}
    assert [e.action for e in registry.history("clf")] == ["promote", "promote", "rollback",
                                                           "promote"]  # fmt: skip
    with api.http("reader") as reader:
        detail = reader.get("/v1/models/clf").json()
        version = reader.get("/v1/models/clf/versions/2").json()
        listed = reader.get("/v1/models").json()
        missing = reader.get("/v1/models/clf/versions/9")
    assert detail["aliases"] == {"production": 1, "canary": 2}
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert len(detail["history"]) == 4
    assert version["signature"]["n_features"] == 6 and version["sha256"]
    assert listed == {"models": [{"name": "clf", "aliases": {"production": 1, "canary": 2}}]}
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"


def test_missing_or_wrong_keys_get_401_and_keys_without_the_scope_get_403(
    api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    body = {"rows": [[0.0] * 6]}
    with api.http() as anonymous:
        missing = anonymous.post("/v1/models/clf/jobs", json=body)
        wrong_key = "x" + api.keys["svc"]
        wrong = anonymous.post("/v1/models/clf/jobs", json=body,
                               headers={"Authorization": f"Bearer {wrong_key}"})  # fmt: skip
        basic = anonymous.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for answer in (missing, wrong, basic):
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthorized"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert wrong_key not in wrong.text
    with api.http("reader") as reader, api.http("svc") as svc:
        cases = [
            reader.post("/v1/models/clf/jobs", json=body),
            svc.get("/v1/models"),
            svc.post("/v1/models/clf/versions/1/promote"),
            reader.post("/v1/models/clf/rollback"),
        ]
    for answer in cases:
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "forbidden"
    assert r.llen("predictq") == 0
    assert r.hgetall(keys.model_aliases("clf")) == {"production": "1"}
    with api.http() as anonymous:
        assert anonymous.get("/healthz").status_code == 200


def test_a_key_reads_and_cancels_only_its_own_jobs_and_an_admin_reads_any(
    api: ApiServer, promoted: str
) -> None:
    mine = _submit(api, "svc", [[0.0] * 6])
    with api.http("other") as other, api.http("ops") as ops, api.http("svc") as svc:
        unknown = other.get("/v1/jobs/never-submitted")
        foreign = other.get(f"/v1/jobs/{mine}")
        foreign_cancel = other.delete(f"/v1/jobs/{mine}")
        assert svc.get(f"/v1/jobs/{mine}").json()["status"] == "queued"
        assert ops.get(f"/v1/jobs/{mine}").json()["status"] == "queued"
        # A caller-chosen ID is idempotent for its owner and refused to anyone else.
        first = svc.post("/v1/models/clf/jobs", json={"rows": [[0.0] * 6], "job_id": "order-42"})
        again = svc.post("/v1/models/clf/jobs", json={"rows": [[1.0] * 6], "job_id": "order-42"})
        stolen = other.post("/v1/models/clf/jobs", json={"rows": [[0.0] * 6], "job_id": "order-42"})
    assert foreign.status_code == 404 and unknown.status_code == 404
    assert foreign.json()["code"] == unknown.json()["code"] == "job_not_found"
    assert foreign_cancel.status_code == 404
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == "order-42"
    assert stolen.status_code == 409 and stolen.json()["code"] == "job_id_taken"


def test_readyz_needs_redis_and_a_live_worker_that_takes_jobs(api: ApiServer, start_worker) -> None:
    with api.http() as http:
        before = http.get("/readyz")
        # What Kubernetes probes when workers scale to zero: Redis alone.
        without_workers = http.get("/readyz", params={"workers": "false"})
        start_worker()
        # Its pool processes start taking jobs a moment after the node's first heartbeat.
        wait_for(lambda: http.get("/readyz").status_code == 200, 30, "readyz to turn ready")
        after = http.get("/readyz")
    assert before.status_code == 503
    # No consumer has reported yet, and none is failing: only the missing worker says no.
    assert before.json() == {"ready": False, "redis": True, "workers": False, "consumers": True}
    assert without_workers.status_code == 200
    assert without_workers.json() == {**before.json(), "ready": True}
    assert after.json() == {"ready": True, "redis": True, "workers": True, "consumers": True}


def test_no_key_ever_reaches_the_api_log(api: ApiServer, promoted: str) -> None:
    _submit(api, "svc", [[0.0] * 6])
    with api.http() as http:
        http.get("/v1/models", headers={"Authorization": f"Bearer {api.keys['ops']}x"})
    api.stop()
    log = api.log.read_text()
    assert "POST /v1/models/clf/jobs" in log  # the access log is on
    for key in api.keys.values():
        assert key not in log


def test_predictq_api_refuses_to_start_without_keys(env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "worker", "api", "--port", "1"],
        env={k: v for k, v in {**os.environ, **env}.items()
             if not k.startswith("PREDICTQ_API_KEYS")},
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 1
    assert "no API keys configured" in run.stderr
    assert "--insecure-no-auth" in run.stderr
