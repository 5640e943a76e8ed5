"""Real tabular models served end to end: strings, categories, booleans and missing values in;
strings, numbers and multi-output lists out; the same predictions as ``model.predict(df)``
through the Python client, the CLI with a CSV, HTTP and a stock Celery message."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from celery import Celery

from producer import Client, InvalidInput
from registry import Registry

from .conftest import ApiServer, wait_for
from .tabular import MODELS, customers
from .test_cli import predictq

pytestmark = pytest.mark.timeout(240)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a JSON client sends them: NaN becomes null."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def _same(got: list[Any], want: np.ndarray) -> None:
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=1e-9)
    else:
        assert got == want.tolist()


def _http_final(api: ApiServer, name: str, rows: list[Any], **fields: Any) -> dict[str, Any]:
    with api.http("svc") as http:
        answer = http.post(f"/v1/models/{name}/jobs", json={"rows": rows, **fields})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            record: dict[str, Any] = http.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
            if record["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                return record


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_predictions_equal_model_predict_on_every_path(
    kind: str, registry: Registry, client: Client, env, redis_url, api: ApiServer, tmp_path,
    start_worker,
) -> None:  # fmt: skip
    model, train = MODELS[kind]()
    registry.register(kind, model, input_example=train.head(50), promote=True)
    start_worker()
    test = customers(n=30, seed=7)[list(train.columns)]
    if kind == "hgb":
        test["plan"] = test["plan"].astype(train["plan"].dtype)
    if kind == "multi":
        test = test.fillna(0.0)
    want = np.asarray(model.predict(test))
    classifier = hasattr(model, "predict_proba") and kind in ("pipeline", "hgb")

    # The Python client, one job per record, as most services send them.
    ids = client.submit_many(kind, [[r] for r in _records(test)], probabilities=classifier)
    results = client.wait_many(ids, timeout=60)
    assert all(r.status == "succeeded" for r in results), [r.error for r in results]
    _same([r.predictions[0] for r in results if r.predictions], want)
    if classifier:
        assert results[0].classes == model.classes_.tolist()
        got = [r.probabilities[0] for r in results if r.probabilities]
        np.testing.assert_allclose(got, model.predict_proba(test), rtol=1e-9)

    # The Python client, a DataFrame in and a DataFrame out.
    scored = client.predict(kind, test, probabilities=classifier, rows_per_job=7)
    assert list(scored.index) == list(test.index)
    if kind == "multi":
        _same(scored[["prediction_0", "prediction_1"]].to_numpy().tolist(), want)
    else:
        _same(scored["prediction"].tolist(), want)
    if classifier:
        columns = [f"proba_{c}" for c in model.classes_]
        np.testing.assert_allclose(scored[columns], model.predict_proba(test), rtol=1e-9)

    # The CLI with a CSV: empty cells are missing values, strings stay strings.
    csv = tmp_path / "rows.csv"
    test.to_csv(csv, index=False)
    out = predictq(env, "submit", kind, "--file", str(csv), "--rows-per-job", "8", "--wait")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    _same([p for line in lines for p in line["predictions"]], want)

    # HTTP, with null for missing values.
    record = _http_final(api, kind, _records(test.head(3)))
    assert record["status"] == "succeeded", record
    _same(record["predictions"], want[:3])

    # A stock Celery client, checked by the worker alone.
    stock = Celery(broker=redis_url)
    stock.conf.task_serializer = "json"
    sent = stock.send_task("predictq.predict", queue="predictq",
                           kwargs={"model": kind, "rows": _records(test.tail(4))})  # fmt: skip
    wait_for(lambda: client.redis.exists(f"predictq:job:{sent.id}"), 30, "the stock job")
    done = client.wait(sent.id, timeout=30)
    assert done.status == "succeeded", done.error
    _same(done.predictions or [], want[-4:])


@pytest.fixture
def churn(registry: Registry) -> Any:
    model, train = MODELS["pipeline"]()
    registry.register("churn", model, input_example=train.head(50), promote=True)
    return model


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"age": 30, "income": 40_000.0, "plan": "pro", "country": "fr",
                           "active": True}  # fmt: skip
    row.update(changes)
    return row


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"age": "old"}, "row 0 column 'age': expected an integer, got 'old'"),
        ({"age": 30.5}, "row 0 column 'age': expected an integer, got 30.5"),
        ({"plan": 3}, "row 0 column 'plan': expected a string, got 3"),
        ({"active": "yes"}, "row 0 column 'active': expected true or false, got 'yes'"),
        ({"income": True}, "row 0 column 'income': expected a number, got True"),
        ({"plan": None}, "row 0 column 'plan': a value is missing"),
        ({"income": float("inf")}, "row 0 column 'income': expected a finite number"),
    ],
)
def test_what_the_schema_refuses_is_refused_at_submission_naming_row_column_and_value(
    churn: Any, client: Client, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")) as caught:
        client.submit("churn", [_row(**changes)])
    assert "\n" not in caught.value.message
    assert client.redis.llen("predictq") == 0  # nothing was enqueued


def test_missing_values_pass_where_the_schema_allows_them(
    churn: Any, client: Client, start_worker
) -> None:
    start_worker()
    rows = [_row(income=None), _row(income=float("nan"))]
    result = client.wait(client.submit("churn", rows), timeout=30)
    assert result.status == "succeeded", result.error
    frame = pd.DataFrame(rows)
    assert result.predictions == churn.predict(frame).tolist()


def test_the_worker_refuses_what_the_schema_refuses_from_a_stock_client(
    churn: Any, client: Client, redis_url, start_worker, api: ApiServer
) -> None:
    start_worker()
    stock = Celery(broker=redis_url)
    sent = stock.send_task("predictq.predict", queue="predictq",
                           kwargs={"model": "churn", "rows": [_row(age="old")]})  # fmt: skip
    wait_for(lambda: client.redis.exists(f"predictq:job:{sent.id}"), 30, "the stock job")
    bad = client.wait(sent.id, timeout=30)
    assert bad.status == "failed" and bad.error is not None
    assert bad.error.code == "invalid_input"
    assert "row 0 column 'age': expected an integer, got 'old'" in bad.error.message
    # Over HTTP the same refusal is a 422 with the same words.
    with api.http("svc") as http:
        answer = http.post("/v1/models/churn/jobs", json={"rows": [_row(active="yes")]})
    assert answer.status_code == 422
    assert "expected true or false, got 'yes'" in answer.text


def test_a_row_the_model_refuses_fails_alone_with_the_models_words(
    churn: Any, client: Client, start_worker
) -> None:
    jobs = [[_row(age=20 + i)] for i in range(20)]
    jobs[9] = [_row(plan="enterprise")]  # unknown to OneHotEncoder(handle_unknown="error")
    ids = client.submit_many("churn", jobs)
    start_worker()  # after submission: the twenty jobs share one predict() call

    results = client.wait_many(ids, timeout=60)

    failed = [i for i, r in enumerate(results) if r.status != "succeeded"]
    assert failed == [9]
    error = results[9].error
    assert error is not None and error.code == "invalid_input"
    assert "churn v1 refused this job's rows" in error.message
    assert "enterprise" in error.message and "\n" not in error.message
    for i, result in enumerate(results):
        if i != 9:
            assert result.predictions == churn.predict(pd.DataFrame(jobs[i])).tolist()


def test_a_model_registered_without_an_example_is_typed_from_the_fitted_estimator(
    registry: Registry,
) -> None:
    model, _train = MODELS["hgb"]()
    meta = registry.register("hgb", model)
    schema = meta.signature.input_schema
    assert schema.source == "estimator" and schema.frame
    by_name = {c.name: c for c in schema.columns}
    assert by_name["plan"].type == "category"
    assert by_name["plan"].categories == ["free", "pro", "team"]
    assert all(c.nullable for c in schema.columns)  # HistGradientBoosting takes NaN itself

    pipeline, _ = MODELS["pipeline"]()
    columns = {c.name: c for c in registry.register("p", pipeline).signature.input_schema.columns}
    assert columns["country"].type == "category"
    assert columns["country"].categories == ["de", "fr", "uk", "us"]
    assert columns["income"].nullable  # an imputer stands in front of it
    assert not columns["plan"].nullable


def test_a_model_whose_string_columns_cannot_be_read_off_it_warns_to_pass_an_example(
    registry: Registry,
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    # The encoder sits behind another step, so its columns cannot be traced to the input.
    x = np.array([["a", "x"], ["b", "y"], ["a", "y"], ["b", "x"]], dtype=object)
    encode = ColumnTransformer([("enc", OneHotEncoder(), [0])])
    model = make_pipeline(FunctionTransformer(), encode, LogisticRegression())
    model.fit(x, [0, 1, 0, 1])
    with pytest.warns(UserWarning, match="register it with an input example"):
        registry.register("opaque", model)


def test_the_input_example_must_be_one_the_model_predicts_on(registry: Registry) -> None:
    model, train = MODELS["pipeline"]()
    wrong = train.head(5).assign(plan="enterprise")
    with pytest.raises(InvalidInput, match="could not predict on its input example"):
        registry.register("churn", model, input_example=wrong)
    with pytest.raises(InvalidInput, match="do not match the model's feature names"):
        registry.register("churn", model, input_example=train.head(5).drop(columns=["age"]))
    assert registry.models() == []  # nothing was registered


def test_cli_registers_with_an_input_example_and_shows_the_schema(env, tmp_path) -> None:
    import joblib

    model, train = MODELS["pipeline"]()
    joblib.dump(model, tmp_path / "churn.joblib")
    train.head(20).to_csv(tmp_path / "sample.csv", index=False)

    reg = predictq(env, "models", "register", "churn", str(tmp_path / "churn.joblib"),
                   "--input-example", str(tmp_path / "sample.csv"), "--promote")  # fmt: skip
    assert reg.returncode == 0, reg.stderr
    show = predictq(env, "models", "show", "churn")
    assert show.returncode == 0, show.stderr
    for line in ("plan", "string", "income", "number", "active", "boolean"):
        assert line in show.stdout
    one = predictq(env, "models", "show", "churn", "1")
    schema = json.loads(one.stdout)["signature"]["input_schema"]
    assert [c["type"] for c in schema["columns"]] == [
        "integer",
        "number",
        "string",
        "string",
        "boolean",
    ]


def test_http_registry_reads_show_the_schema(churn: Any, api: ApiServer) -> None:
    with api.http("reader") as http:
        version = http.get("/v1/models/churn/versions/1").json()
    columns = version["signature"]["input_schema"]["columns"]
    assert {c["name"]: c["type"] for c in columns}["plan"] == "string"
    assert {c["name"]: c["nullable"] for c in columns}["income"] is True


# -- hostile input, from every side ------------------------------------------------------------


def _send_batch(redis_url: str, model: str, jobs: list[dict[str, Any]]) -> None:
    stock = Celery(broker=redis_url)
    stock.send_task("predictq.predict_batch", kwargs={"model": model, "jobs": jobs},
                    queue="predictq")  # fmt: skip


@pytest.mark.parametrize("bad", ["nan", "nested"])
def test_one_bad_job_in_a_stock_batch_message_fails_alone(
    bad: str, client: Client, promoted: str, dataset, redis_url, worker
) -> None:
    x, _ = dataset
    jobs = [{"id": f"{bad}-{i}", "rows": x[i : i + 1].tolist()} for i in range(5)]
    if bad == "nan":  # Celery's JSON writes NaN, which this all-number model does not take
        jobs[2]["rows"] = [[float("nan")] * 6]
    else:  # deeper than the worker's JSON encoder goes
        deep: Any = 1.0
        for _ in range(300):
            deep = [deep]
        jobs[2]["rows"] = [[deep, 0.0, 0.0, 0.0, 0.0, 0.0]]
    _send_batch(redis_url, promoted, jobs)
    ids = [j["id"] for j in jobs]
    wait_for(lambda: all(client.redis.exists(f"predictq:job:{i}") for i in ids), 30,
             "a record for every job of the message")  # fmt: skip

    results = client.wait_many(ids, timeout=30)

    assert [r.status for r in results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 2
    assert results[2].error is not None and results[2].error.code == "invalid_input"


def test_a_stock_nan_in_a_nullable_column_is_a_missing_value(
    churn: Any, client: Client, redis_url, start_worker
) -> None:
    start_worker()
    stock = Celery(broker=redis_url)
    kwargs = {"model": "churn", "rows": [_row(income=float("nan"))]}
    sent = stock.send_task("predictq.predict", queue="predictq", kwargs=kwargs)
    wait_for(lambda: client.redis.exists(f"predictq:job:{sent.id}"), 30, "the stock job")
    result = client.wait(sent.id, timeout=30)
    assert result.status == "succeeded", result.error
    assert result.predictions == churn.predict(pd.DataFrame([_row(income=None)])).tolist()


def test_values_json_cannot_carry_are_refused_in_one_line_never_a_raw_error(
    churn: Any, client: Client, promoted: str, env, tmp_path
) -> None:
    for call in (
        lambda: client.submit(promoted, [[2**64, 0.0, 0.0, 0.0, 0.0, 0.0]]),
        lambda: client.submit("churn", [_row(country="\ud800")]),
    ):
        with pytest.raises(InvalidInput) as caught:
            call()
        assert "\n" not in caught.value.message
    assert client.redis.llen("predictq") == 0
    # A big integer in a number column is just a number.
    assert client.submit("churn", [_row(income=2**70)])
    csv = tmp_path / "rows.csv"
    csv.write_text("123456789012345678901234567890,0,0,0,0,0\n")
    for args in (["--rows", "[[18446744073709551616, 0, 0, 0, 0, 0]]"], ["--file", str(csv)]):
        done = predictq(env, "submit", promoted, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


def test_output_json_cannot_carry_fails_as_the_models_fault(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    from .poison import DecimalOut

    x, y = dataset
    registry.register("dec", DecimalOut().fit(x, y), promote=True)
    start_worker()
    result = client.wait(client.submit("dec", x[:1]), timeout=30)
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "internal" and "JSON cannot carry" in result.error.message
