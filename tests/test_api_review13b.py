"""Defects found reviewing 0130a56..cb9fa24 (the told-result cache of the HTTP gateway's long-poll,
and its fast path), each reproduced on a real ``predictq api`` process and real workers."""

from __future__ import annotations

import time

import pytest
import redis

from registry import keys

from .conftest import ApiServer, wait_for


@pytest.mark.timeout(90)
def test_a_job_id_submitted_again_after_its_record_was_lost_is_not_answered_with_the_old_result(
    api: ApiServer, promoted: str, start_worker, r: redis.Redis
) -> None:
    # A job with a chosen ID ends, and nobody has asked for it yet: the gateway keeps the result
    # it was told. Redis then loses the record (a restart without persistence, a failover to a
    # replica that lacked it) and the caller submits the same ID again, as the README says to
    # (a chosen ID makes a retry safe). The new job is queued: reading it must say so, not hand
    # back the old job's result, which Redis no longer has and which this job never produced.
    worker = start_worker()
    job = "reused-after-loss"
    with api.http("svc") as http:
        first = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [[0.0] * 6], "job_id": job})
        assert first.status_code == 202, first.text
        wait_for(lambda: r.hget(keys.job(job), "status") == "succeeded", 60, "the first job")
        # The gateway's listener has taken the result off its reply list.
        wait_for(lambda: not any(r.llen(k) for k in r.scan_iter(keys.reply("api-*"))), 30,
                 "the reply list drained")  # fmt: skip
        worker.stop()
        r.delete(keys.job(job))  # the record is lost; its owner (this key) stays

        again = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [[5.0] * 6], "job_id": job})
        assert again.status_code == 202, again.text
        assert r.hget(keys.job(job), "status") == "queued"

        read = http.get(f"/v1/jobs/{job}")
        assert read.status_code == 200, read.text
        assert read.json()["status"] == "queued", read.json()


@pytest.mark.timeout(60)
def test_a_long_poll_on_a_job_whose_record_expired_in_the_queue_answers_404_at_once(
    api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    # No worker: the job's record expires after its TTL while it waits in the queue, and no
    # result is ever told for it. A long-poll on it must answer 404 as soon as it reads that the
    # record is gone, as for any other unknown ID, not first wait a second for a told result
    # that cannot come (and again on every poll, since the job stays remembered).
    with api.http("svc") as http:
        sent = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [[0.0] * 6], "ttl": 1})
        assert sent.status_code == 202, sent.text
        job = sent.json()["id"]
        wait_for(lambda: not r.exists(keys.job(job)), 30, "the record to expire")
        for _ in range(2):
            began = time.monotonic()
            read = http.get(f"/v1/jobs/{job}", params={"wait": 4})
            took = time.monotonic() - began
            assert read.status_code == 404, read.text
            # A read is milliseconds; the told result's wait is a whole second.
            assert took < 0.9, f"404 after {took:.2f}s"


@pytest.mark.timeout(60)
def test_a_job_id_submitted_again_after_its_record_expired_stays_readable_by_its_key(
    api: ApiServer, promoted: str, r: redis.Redis
) -> None:
    # No worker: the first job's record expires in the queue after its TTL, and the caller
    # submits the same ID again (a chosen ID makes a retry safe) while its claim on the ID,
    # which lives twice the first TTL, is still there. The new job lives a minute: its key must
    # be able to read it for that long, not get 404 once the first job's claim runs out (no
    # other key could claim the ID either: the job would run with nobody able to read it).
    job = "resubmitted-after-expiry"
    with api.http("svc") as http:
        first = http.post(f"/v1/models/{promoted}/jobs",
                          json={"rows": [[0.0] * 6], "job_id": job, "ttl": 2})  # fmt: skip
        assert first.status_code == 202, first.text
        wait_for(lambda: not r.exists(keys.job(job)), 30, "the first record to expire")
        again = http.post(f"/v1/models/{promoted}/jobs",
                          json={"rows": [[0.0] * 6], "job_id": job, "ttl": 60})  # fmt: skip
        assert again.status_code == 202, again.text
        wait_for(lambda: r.ttl(keys.owner(job)) < 0 or r.ttl(keys.owner(job)) > 4, 10,
                 "the first claim's lifetime to pass")  # fmt: skip
        read = http.get(f"/v1/jobs/{job}")
        assert read.status_code == 200, read.text
        assert read.json()["status"] == "queued"
