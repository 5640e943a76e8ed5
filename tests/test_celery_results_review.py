"""Celery results and waiting on records, along the paths that end a job late or twice: a
record that expires while it is waited for, a stock client's job run through Celery's own task
path (``PREDICTQ_BATCHING=false``) and queued again after a dead letter.
"""

from __future__ import annotations

import time

import pytest

from producer import Client, JobNotFound


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
