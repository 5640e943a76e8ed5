"""Promotion and rollback reach running workers with no restart and no failed job."""

from __future__ import annotations

import json

from sklearn.dummy import DummyClassifier

from producer import Client
from registry import Registry, keys


def _constant(value: int, dataset) -> DummyClassifier:
    x, y = dataset
    return DummyClassifier(strategy="constant", constant=value).fit(x, y)


def test_promoting_v2_and_rolling_back_reach_a_running_worker_without_restart(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    w = start_worker(concurrency=2)
    pid = w.proc.pid

    first = client.wait_many(client.submit_many("m", [x[:1]] * 20), timeout=30)
    registry.promote("m", 2)
    # Every job submitted after promote() returned must run on v2: no grace period.
    second = client.wait_many(client.submit_many("m", [x[:1]] * 20), timeout=30)
    registry.rollback("m")
    third = client.wait_many(client.submit_many("m", [x[:1]] * 20), timeout=30)

    assert {(r.status, r.version, r.predictions[0]) for r in first} == {("succeeded", 1, 0)}
    assert {(r.status, r.version, r.predictions[0]) for r in second} == {("succeeded", 2, 1)}
    assert {(r.status, r.version, r.predictions[0]) for r in third} == {("succeeded", 1, 0)}
    assert w.proc.poll() is None and w.proc.pid == pid
    assert [(e.action, e.from_version, e.to_version) for e in registry.history("m")] == [
        ("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1),
    ]  # fmt: skip


def test_a_pinned_job_keeps_its_version_while_the_alias_moves(
    registry: Registry, client: Client, dataset, worker
) -> None:
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset), promote=True)

    pinned = client.wait(client.submit("m", x[:1], version=1), timeout=30)
    current = client.wait(client.submit("m", x[:1]), timeout=30)

    assert (pinned.version, pinned.predictions) == (1, [0])
    assert (current.version, current.predictions) == (2, [1])


def test_a_version_that_fails_to_load_leaves_the_old_one_serving_and_is_reported(
    registry: Registry, client: Client, dataset, worker, r
) -> None:
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    assert client.wait(client.submit("m", x[:1]), timeout=30).version == 1
    broken = registry.register("m", _constant(1, dataset))
    registry.store.blob_path(broken.sha256).write_bytes(b"not a pickle")

    registry.promote("m", 2)
    res = client.wait(client.submit("m", x[:1]), timeout=30)

    assert (res.status, res.version, res.predictions) == ("succeeded", 1, [0])
    failures = r.hgetall(keys.LOAD_FAILURES)
    assert any(k.startswith("m:2:") for k in failures), failures
    assert all(json.loads(v)["code"] == "integrity_error" for v in failures.values())


def test_a_promotion_with_a_custom_alias_is_served_on_that_alias(
    registry: Registry, client: Client, dataset, worker
) -> None:
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset), promote=True, alias="canary")

    canary = client.wait(client.submit("m", x[:1], alias="canary"), timeout=30)
    prod = client.wait(client.submit("m", x[:1]), timeout=30)

    assert (canary.version, canary.alias, prod.version, prod.alias) == (
        2,
        "canary",
        1,
        "production",
    )
