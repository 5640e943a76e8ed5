"""A user's whole journey: register, promote, submit, wait, and the right predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from producer import Client
from registry import Registry


def test_registered_and_promoted_model_answers_jobs_exactly_like_predict(
    registry: Registry, client: Client, fitted, dataset, worker
) -> None:
    x, _ = dataset
    registry.register("clf", fitted, promote=True, description="lr", metrics={"acc": 0.9})
    jobs = [x[i : i + n] for i, n in [(0, 1), (1, 3), (10, 7), (50, 1), (100, 25)]]

    ids = client.submit_many("clf", jobs, probabilities=True)
    results = client.wait_many(ids, timeout=30)

    for rows, res in zip(jobs, results, strict=True):
        assert res.status == "succeeded", res.error
        assert res.model == "clf"
        assert res.version == 1
        assert res.predictions == fitted.predict(rows).tolist()
        np.testing.assert_allclose(res.probabilities, fitted.predict_proba(rows), rtol=1e-12)
        assert res.attempts == 1
        assert res.worker and res.worker.startswith(worker.name)
        assert res.submitted_at <= res.started_at <= res.finished_at


def test_a_single_submit_and_wait_returns_one_final_record(
    client: Client, promoted: str, fitted, dataset, worker
) -> None:
    x, _ = dataset
    job_id = client.submit(promoted, x[:2].tolist())
    assert len(job_id) >= 16
    res = client.wait(job_id, timeout=30)
    assert res.id == job_id
    assert res.done and res.status == "succeeded"
    assert res.predictions == fitted.predict(x[:2]).tolist()
    assert res.probabilities is None
    assert client.result(job_id) == res


def test_records_keyed_by_feature_name_are_put_in_the_model_feature_order(
    registry: Registry, client: Client, dataset, worker
) -> None:
    pd = pytest.importorskip("pandas")
    x, y = dataset
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, y)
    registry.register("named", model, promote=True)
    # Keys deliberately out of order: the worker must follow feature_names_in_, not dict order.
    records = [dict(reversed(list(row.items()))) for row in frame.iloc[:4].to_dict("records")]

    res = client.wait(client.submit("named", records), timeout=30)

    assert res.status == "succeeded", res.error
    assert res.predictions == model.predict(frame.iloc[:4]).tolist()
