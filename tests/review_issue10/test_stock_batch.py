"""Review of issue 10: a stock Celery client's messages (which skip client validation).

One hostile job in a stock ``predictq.predict_batch`` message must fail alone; its neighbours
must run. And a NaN where the schema says the column is nullable must be taken as missing
(README: "`null` or NaN where the column is nullable").
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery

from producer import BATCH_TASK_NAME, Client
from registry import Registry, keys

from ..conftest import wait_for
from ..tabular import MODELS

pytestmark = pytest.mark.timeout(180)


def _records_exist(client: Client, ids: list[str]) -> bool:
    return all(client.redis.exists(keys.job(i)) for i in ids)


def _send_batch(redis_url: str, model: str, jobs: list[dict[str, Any]]) -> None:
    stock = Celery(broker=redis_url)
    stock.send_task(BATCH_TASK_NAME, kwargs={"model": model, "jobs": jobs}, queue="predictq")


def _assert_neighbours_ran(client: Client, r, ids: list[str], bad: int, deadline: float) -> None:
    good = [i for k, i in enumerate(ids) if k != bad]
    try:
        wait_for(lambda: _records_exist(client, good), deadline, "the good jobs' records")
    except BaseException:
        dead = [json.loads(d)["error"] for d in r.lrange(keys.DEAD, 0, -1)]
        missing = [i for i in ids if not client.redis.exists(keys.job(i))]
        pytest.fail(f"jobs never got a record (lost): {missing}; dead letters: {dead}")
    results = client.wait_many(good, timeout=30)
    assert [res.status for res in results] == ["succeeded"] * len(good)


def test_one_deeply_nested_job_does_not_lose_its_stock_batch(
    client: Client, promoted: str, dataset, redis_url, worker, r
) -> None:
    x, _ = dataset
    jobs = [{"id": f"stock-{i}", "rows": x[i : i + 1].tolist()} for i in range(5)]
    deep: Any = 1.0
    for _ in range(300):  # orjson.loads takes it (<= 1024 levels); orjson.dumps stops at 255
        deep = [deep]
    jobs[2]["rows"] = [[deep, 0.0, 0.0, 0.0, 0.0, 0.0]]
    _send_batch(redis_url, promoted, jobs)
    _assert_neighbours_ran(client, r, [j["id"] for j in jobs], 2, 20)


def test_one_nan_job_does_not_lose_its_stock_batch(
    client: Client, promoted: str, dataset, redis_url, worker, r
) -> None:
    x, _ = dataset
    jobs = [{"id": f"nan-{i}", "rows": x[i : i + 1].tolist()} for i in range(5)]
    jobs[2]["rows"] = [[float("nan")] * 6]  # kombu's JSON writes NaN; the job should fail alone
    _send_batch(redis_url, promoted, jobs)
    _assert_neighbours_ran(client, r, [j["id"] for j in jobs], 2, 20)


def test_a_stock_nan_in_a_nullable_column_is_a_missing_value(
    registry: Registry, client: Client, redis_url, start_worker
) -> None:
    model, train = MODELS["pipeline"]()
    registry.register("churn", model, input_example=train.head(50), promote=True)
    assert registry.get("churn").signature.input_schema.columns[1].nullable  # income
    start_worker()
    row = {"age": 30, "income": float("nan"), "plan": "pro", "country": "fr", "active": True}
    # The same row through the Python client succeeds (NaN -> null):
    ok = client.wait(client.submit("churn", [row]), timeout=30)
    assert ok.status == "succeeded", ok.error
    stock = Celery(broker=redis_url)
    sent = stock.send_task("predictq.predict", queue="predictq",
                           kwargs={"model": "churn", "rows": [row]})  # fmt: skip
    wait_for(lambda: client.redis.exists(keys.job(sent.id)), 30, "the stock job's record")
    res = client.wait(sent.id, timeout=30)
    assert res.status == "succeeded", res.error
