"""Batching: many queued jobs go through one predict() per version and chunk, with results that
match row-by-row predict(), one bad job failing alone, and every job on its own version."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from producer import Client
from registry import Registry

from .conftest import wait_for
from .poison import PoisonClassifier


def test_batched_results_equal_row_by_row_predict(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    x, y = dataset
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    registry.register("rf", forest, promote=True)
    sizes = [1, 2, 5, 1, 30, 1, 7] * 40  # 280 jobs of mixed sizes, queued before any worker
    starts = np.cumsum([0, *sizes[:-1]]) % (len(x) - 30)
    jobs = [x[s : s + n] for s, n in zip(starts, sizes, strict=True)]
    ids = client.submit_many("rf", jobs, probabilities=True)
    # Small batches force jobs to straddle predict() calls as well as share them.
    start_worker(PREDICTQ_BATCH_MAX_ROWS="64")

    results = client.wait_many(ids, timeout=60)

    for rows, res in zip(jobs, results, strict=True):
        assert res.status == "succeeded", res.error
        assert res.predictions == [forest.predict(r.reshape(1, -1))[0] for r in rows]
        np.testing.assert_allclose(res.probabilities, forest.predict_proba(rows))


def test_a_poisoned_job_inside_a_batch_fails_alone(
    registry: Registry, client: Client, start_worker
) -> None:
    registry.register("poison", PoisonClassifier().fit(np.zeros((2, 3)), np.array([0, 1])),
                      promote=True)  # fmt: skip
    jobs = [[[float(i - 20), 0.0, 0.0]] for i in range(40)]
    jobs[13] = [[666.0, 0.0, 0.0]]  # refused by the model: the caller's input
    jobs[21] = [[667.0, 0.0, 0.0]]  # breaks the model: the model's fault
    jobs[27] = [[1.0, 2.0]]  # wrong shape: caught by validation, also alone
    # Bypass early validation for the bad-shape job, as a stock Celery client would.
    raw_id = _raw_submit(client, "poison", jobs[27])
    ids = [
        *client.submit_many("poison", jobs[:27]),
        raw_id,
        *client.submit_many("poison", jobs[28:]),
    ]
    start_worker()
    wait_for(lambda: client.redis.exists(f"predictq:job:{raw_id}"), 30, "the stock job's record")

    results = client.wait_many(ids, timeout=60)

    failed = {i: r.error.code for i, r in enumerate(results) if r.status == "failed" and r.error}
    assert failed == {13: "invalid_input", 21: "internal", 27: "invalid_input"}
    # The caller gets the model's own words, on one line, naming the version.
    refused = results[13].error
    assert (
        refused is not None and "poison v1 refused this job's rows: poisoned row" in refused.message
    )
    broke = results[21].error
    assert broke is not None and "RuntimeError" in broke.message
    for i, res in enumerate(results):
        if i not in failed:
            assert res.predictions == [int(jobs[i][0][0] > 0)]


def test_mixed_versions_in_one_batch_each_get_their_own_version(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    x, y = dataset
    from sklearn.dummy import DummyClassifier

    for constant in (0, 1, 0):
        registry.register("m", DummyClassifier(strategy="constant", constant=constant).fit(x, y))
    registry.promote("m", 2)
    plan = [None, 1, 3, 2, None, 1, 3] * 10
    ids = [client.submit("m", x[:1], version=v) for v in plan]
    start_worker()

    results = client.wait_many(ids, timeout=60)

    expected = {None: (2, 1), 1: (1, 0), 2: (2, 1), 3: (3, 0)}
    for v, res in zip(plan, results, strict=True):
        assert res.status == "succeeded", res.error
        assert (res.version, res.predictions[0]) == expected[v]


def _raw_submit(client: Client, model: str, rows: list) -> str:
    from celery import Celery

    stock = Celery(broker=client.url)
    return str(
        stock.send_task(
            "predictq.predict", kwargs={"model": model, "rows": rows}, queue="predictq"
        ).id
    )
