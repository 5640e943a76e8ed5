"""Review of issue 10: archive / unarchive while jobs are running or queued, with real workers."""

from __future__ import annotations

import time

import pytest
from sklearn.dummy import DummyClassifier

from producer import Client
from registry import Registry, Settings

from ..conftest import wait_for
from ..poison import SlowClassifier

pytestmark = pytest.mark.timeout(180)


def _constant(value: int, dataset) -> DummyClassifier:  # type: ignore[no-untyped-def]
    x, y = dataset
    return DummyClassifier(strategy="constant", constant=value).fit(x, y)


def test_an_alias_job_already_running_survives_promote_then_archive_of_the_old_version(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    """The usual clean-up, 'promote v2 then archive v1', while a job of the alias is running
    (started on v1; the batch window keeps it between START and its model lookup)."""
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    w = start_worker(PREDICTQ_BATCH_WINDOW_MS="6000")
    job = client.submit("m", x[:1])  # alias production -> v1
    wait_for(lambda: client.result(job).status == "running", 30, "the job to start")

    registry.promote("m", 2)
    registry.archive("m", 1)
    wait_for(lambda: "m v1: archive;" in w.output(), 30, "the worker to hear of the archive")

    res = client.wait(job, timeout=30)
    assert res.status == "succeeded", (res.version, res.error)


def test_a_pinned_job_right_after_unarchive_is_not_refused_as_archived(
    registry: Registry, client: Client, settings: Settings, dataset, start_worker
) -> None:
    x, y = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    registry.register("slow", SlowClassifier(delay=3.0).fit(x, y), promote=True)
    w = start_worker()
    stale = Client(settings=settings.model_copy(update={"alias_cache_seconds": 600}))
    try:
        first = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert first.status == "succeeded", first.error  # stale has v2's metadata cached
        registry.archive("m", 2)
        wait_for(lambda: "pool process exiting" in w.output(), 30, "the pool process to recycle")
        # A fresh pool process sees v2 archived, and remembers that for 30 s.
        refused = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert refused.status == "failed" and refused.error is not None
        assert "is archived" in refused.error.message

        slow = client.submit("slow", x[:1])  # keeps that process busy for 3 s
        wait_for(lambda: client.result(slow).status == "running", 30, "the slow job to start")
        registry.unarchive("m", 2)
        wait_for(lambda: "m v2: unarchive;" in w.output(), 30, "the worker to hear of it")
        job = client.submit("m", x[:1], version=2)  # v2 is servable again: the client agrees

        res = client.wait(job, timeout=30)
        assert client.wait(slow, timeout=30).status == "succeeded"
        assert res.status == "succeeded", res.error
    finally:
        stale.close()


def test_a_worker_serving_other_models_stops_serving_an_archived_version_it_loaded(
    registry: Registry, settings: Settings, dataset, start_worker
) -> None:
    """PREDICTQ_MODELS only says what a worker preloads: it still runs every model's jobs, and
    loads pinned versions on demand. Its listener skips notices for models outside that list."""
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    start_worker(PREDICTQ_MODELS="other")
    stale = Client(settings=settings.model_copy(update={"alias_cache_seconds": 600}))
    try:
        first = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert first.status == "succeeded", first.error  # v2 loaded in the pool process
        registry.archive("m", 2)
        outcomes: list[str] = []
        deadline = time.monotonic() + 10  # a served model's worker refuses within a second
        while time.monotonic() < deadline:  # polling: each round is a whole job
            res = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
            outcomes.append(res.status)
            if res.status == "failed":
                break
        assert outcomes[-1] == "failed", f"archived v2 kept serving: {outcomes}"
    finally:
        stale.close()
