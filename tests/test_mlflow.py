"""Models from a real MLflow registry: import by directory, version and alias, and follow an alias.

MLflow runs in-process on a ``sqlite:///`` tracking URI (mlflow-skinny's SQL store), shared by
the module; the CLI, followers and workers are real processes reading the same store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from registry import InvalidInput, MlflowUnavailable, ModelNotFound, Registry
from registry.follow import Follower

from .conftest import REPO, free_port, wait_for

mlflow = pytest.importorskip("mlflow")

pytestmark = [
    # SQLAlchemy 2.1 deprecates a loader option MLflow's SQL store still configures.
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning"),
    pytest.mark.timeout(120),
]

SKOPS_TRUSTED = "numpy.dtype"  # what the skops Pipeline below holds beyond skops's defaults
INTERVAL = 1.0


@dataclass
class MlflowModels:
    """The module's MLflow registry: model 'churn' v1 (cloudpickle), v2 (skops, same input
    columns, another classifier), v3 (skops-free pickle without the 'visits' column)."""

    uri: str
    client: Any
    rows: pd.DataFrame
    run_ids: dict[int, str]

    def pyfunc(self, version: int, rows: pd.DataFrame | None = None) -> list[Any]:
        model = mlflow.pyfunc.load_model(f"models:/churn/{version}")
        return np.asarray(model.predict(self.rows if rows is None else rows)).tolist()

    def champion(self, version: int) -> None:
        self.client.set_registered_model_alias("churn", "champion", str(version))


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "plan": rng.choice(["free", "pro", "team"], n),
        "age": rng.normal(40, 10, n),
        "visits": rng.integers(0, 20, n),
    })  # fmt: skip
    frame.loc[::5, "age"] = np.nan
    return frame


def _pipeline(final: Any, numeric: list[str]) -> Pipeline:
    columns = ColumnTransformer([
        ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
    ])  # fmt: skip
    return Pipeline([("columns", columns), ("model", final)])


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowModels]:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    home = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{home}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("predictq", (home / "artifacts").as_uri())
        train = _frame(300, 0)
        y = ((train["plan"] == "pro") | (train["visits"] > 12)).astype(int)
        full = ModelSignature(inputs=Schema([
            ColSpec("string", "plan"), ColSpec("double", "age", required=False),
            ColSpec("long", "visits"),
        ]))  # fmt: skip
        narrow = ModelSignature(inputs=Schema([
            ColSpec("string", "plan"), ColSpec("double", "age", required=False),
        ]))  # fmt: skip
        models = [
            (_pipeline(LogisticRegression(), ["age", "visits"]), full, "cloudpickle", {}),
            (_pipeline(LogisticRegression(C=0.01, class_weight="balanced"), ["age", "visits"]),
             full, "skops", {"skops_trusted_types": [SKOPS_TRUSTED]}),
            (_pipeline(LogisticRegression(), ["age"]), narrow, "pickle", {}),
        ]  # fmt: skip
        run_ids = {}
        for version, (model, signature, fmt, extra) in enumerate(models, start=1):
            model.fit(train[[c.name for c in signature.inputs.inputs]], y)
            # MLflow warns about its own type-hint inference while logging: not ours to fix.
            with mlflow.start_run(experiment_id=experiment) as run, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                # Explicit requirements: inferring them loads the model in a subprocess (seconds).
                mlflow.sklearn.log_model(
                    model, name="model", signature=signature, serialization_format=fmt,
                    pip_requirements=["scikit-learn"], registered_model_name="churn", **extra,
                )  # fmt: skip
            run_ids[version] = run.info.run_id
        found = MlflowModels(uri=uri, client=client, rows=_frame(12, 1), run_ids=run_ids)
        found.champion(1)
        yield found
        mlflow.set_tracking_uri(None)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a job carries them: null for a missing value."""
    return list(json.loads(frame.to_json(orient="records")))


def test_imported_by_directory_version_and_alias_it_predicts_what_mlflow_predicts(
    mlflow_models, registry, client, start_worker, tmp_path
) -> None:
    mlflow_models.champion(1)
    directory = Path(mlflow.artifacts.download_artifacts("models:/churn/1", dst_path=str(tmp_path)))

    by_dir = registry.import_mlflow("by-dir", str(directory))
    by_version = registry.import_mlflow("churn", "models:/churn/1")
    by_alias = registry.import_mlflow("churn", "models:/churn@champion", promote=True)

    # The MLflow model file's own bytes, checksummed like any artifact.
    import hashlib

    sha = hashlib.sha256((directory / "model.pkl").read_bytes()).hexdigest()
    assert by_dir.sha256 == by_version.sha256 == by_alias.sha256 == sha
    assert by_alias.tags == {
        "mlflow.source": "models:/churn@champion", "mlflow.run_id": mlflow_models.run_ids[1],
        "mlflow.model_name": "churn", "mlflow.model_version": "1", "mlflow.alias": "champion",
        "mlflow.model_id": by_alias.tags["mlflow.model_id"],
    }  # fmt: skip
    assert by_version.tags["mlflow.model_version"] == "1"
    assert by_dir.tags["mlflow.source"] == str(directory)
    assert by_dir.tags["mlflow.run_id"] == mlflow_models.run_ids[1]
    schema = by_alias.signature.input_schema
    assert schema.source == "signature" and schema.frame
    assert [(c.name, c.type) for c in schema.columns] == [
        ("plan", "string"), ("age", "number"), ("visits", "integer")]  # fmt: skip
    assert schema.columns[1].nullable  # required: false

    registry.promote("by-dir", by_dir.version)
    start_worker()
    rows = _records(mlflow_models.rows)
    expected = mlflow_models.pyfunc(1)
    for name in ("churn", "by-dir"):
        result = client.wait(client.submit(name, rows), timeout=60)
        assert result.status == "succeeded", result.error
        assert result.predictions == expected


def test_skops_models_are_trusted_from_predictq_settings_never_from_the_mlmodel_file(
    mlflow_models, settings
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Registry(settings=settings).import_mlflow("churn", "models:/churn/2")
    assert "['numpy.dtype']" in refused.value.message
    assert "PREDICTQ_SKOPS_TRUSTED" in refused.value.message

    trusted = Registry(settings=settings.model_copy(update={"skops_trusted": SKOPS_TRUSTED}))
    meta = trusted.import_mlflow("churn", "models:/churn/2")
    assert meta.format == "skops"
    model = trusted.load(meta)
    assert model.predict(mlflow_models.rows).tolist() == mlflow_models.pyfunc(2)


def _predictq(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "models", *args], env={**os.environ, **env}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_models_import_prints_the_schema_and_fails_in_one_line_with_exit_codes(
    mlflow_models, env, tmp_path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "  xgboost:\n    data: model.xgb\n"
    )
    # Three processes at once: each pays for importing MLflow.
    runs = [
        _predictq(env, "import", "churn", "models:/churn/1", "--promote"),
        _predictq(env, "import", "churn", "models:/churn@nope"),
        _predictq(env, "import", "churn", str(foreign)),
    ]
    (ok, _), (missing_out, missing), (foreign_out, not_sklearn) = [p.communicate(timeout=90)
                                                                  for p in runs]  # fmt: skip
    codes = [p.returncode for p in runs]

    assert codes == [0, 3, 2], (missing, not_sklearn)
    assert ok.startswith("imported churn v1 (sha256 ")
    assert "model_name churn, model_version 1" in ok and "promoted to 'production'" in ok
    assert "input schema (from the signature)" in ok and "visits" in ok
    assert missing_out == foreign_out == ""
    assert missing.count("\n") == 1 and missing.startswith("error (model_not_found): MLflow has")
    assert "churn@nope" in missing
    assert not_sklearn == (
        f"error (invalid_input): {foreign} is not a scikit-learn model (its MLflow flavors: "
        "xgboost): predictq imports models logged with mlflow.sklearn only\n"
    )


def test_follow_serves_each_version_the_mlflow_alias_moves_to_with_no_failed_job(
    mlflow_models, env, registry, client, start_worker, tmp_path
) -> None:
    mlflow_models.champion(1)
    env = {**env, "PREDICTQ_SKOPS_TRUSTED": SKOPS_TRUSTED}
    start_worker(PREDICTQ_SKOPS_TRUSTED=SKOPS_TRUSTED)
    # Two followers at once: each MLflow version must still be imported once.
    logs = [tmp_path / f"follow-{i}.log" for i in range(2)]
    followers = []
    heartbeat = tmp_path / "alive"
    for i, log in enumerate(logs):
        with open(log, "w") as out:
            followers.append(subprocess.Popen(
                [sys.executable, "-m", "worker", "models", "follow", "churn",
                 "--mlflow", "models:/churn@champion", "--interval", str(INTERVAL),
                 *(["--heartbeat", str(heartbeat)] if i == 0 else [])],
                env={**os.environ, **env}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    try:
        wait_for(lambda: registry.aliases("churn").get("production"), 60,
                 "the followers to import and promote v1")  # fmt: skip
        rows = _records(mlflow_models.rows)
        ids: list[str] = []
        stop = threading.Event()

        def submit() -> None:
            while not stop.is_set():
                ids.append(client.submit("churn", rows))
                stop.wait(0.05)

        submitter = threading.Thread(target=submit)
        submitter.start()
        try:
            moved = time.monotonic()
            mlflow_models.champion(2)
            served: list[int] = []

            def serves_v2() -> bool:
                ids.append(client.submit("churn", rows))
                served.append(client.wait(ids[-1], timeout=30).version)
                return registry.get("churn", served[-1]).tags["mlflow.model_version"] == "2"

            wait_for(serves_v2, INTERVAL + 30, "a worker to serve MLflow v2")
            took = time.monotonic() - moved
        finally:
            stop.set()
            submitter.join(timeout=30)
        results = [client.wait(i, timeout=60) for i in ids]
    finally:
        for proc in followers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in followers]
    output = "\n".join(log.read_text() for log in logs)
    print(f"\nfollow: MLflow alias moved -> worker served v2 in {took:.1f}s "
          f"(interval {INTERVAL}s); {len(results)} jobs during the move")  # fmt: skip

    assert codes == [0, 0], output
    assert [res.status for res in results].count("succeeded") == len(results) > 0, output
    expected = mlflow_models.pyfunc(2)
    assert all(res.predictions == expected for res in results if res.version == served[-1])
    imported = [m.tags["mlflow.model_version"] for m in registry.versions("churn")]
    assert sorted(imported) == ["1", "2"], output  # each once, however many followers
    assert output.count("promoted churn v2 to 'production'") == 1, output
    assert output.count("stopped following MLflow models:/churn@champion") == 2, output
    assert "Traceback" not in output
    assert heartbeat.exists()  # what the compose health check reads


def test_follow_keeps_serving_when_the_new_version_is_incompatible_or_mlflow_is_down(
    mlflow_models, settings, caplog
) -> None:
    trusted = settings.model_copy(update={"skops_trusted": SKOPS_TRUSTED})
    registry = Registry(settings=trusted)
    follower = Follower("churn", "models:/churn@champion", interval=INTERVAL,
                        registry=lambda: registry)  # fmt: skip
    caplog.set_level(logging.INFO, logger="predictq.follow")
    mlflow_models.champion(1)
    assert follower.step().tags["mlflow.model_version"] == "1"

    mlflow_models.champion(3)  # no 'visits' column: callers that send it would be refused
    try:
        assert follower.step() is None
        assert follower.step() is None
    finally:
        mlflow_models.champion(1)
    assert registry.get("churn").tags["mlflow.model_version"] == "1"
    refusals = [r.getMessage() for r in caplog.records if "not promoting" in r.getMessage()]
    assert refusals == [
        "not promoting churn v2 (MLflow churn v3) to 'production': churn v2 takes different "
        "input from v1, which 'production' serves: columns removed: visits. Its callers would "
        "be refused or misread; change them first, then promote with --force (force=True); "
        f"retrying every {INTERVAL:g}s"
    ]  # logged once, however many retries

    with pytest.raises(InvalidInput, match="names no MLflow alias"):
        Follower("churn", "models:/churn/1")
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowUnavailable, match="Check that the tracking server is up"):
        Follower("churn", "models:/churn@champion", tracking_uri=down,
                 registry=lambda: registry).step()  # fmt: skip
    with pytest.raises(ModelNotFound, match="MLflow has no alias models:/churn@nope"):
        Follower("churn", "models:/churn@nope", registry=lambda: registry).step()

    stop = threading.Event()
    looping = Follower("churn", "models:/churn@champion", interval=0.05, tracking_uri=down,
                       registry=lambda: registry)  # fmt: skip
    runner = threading.Thread(target=looping.run, args=(stop,))
    runner.start()
    wait_for(lambda: sum("mlflow_unavailable" in r.getMessage() for r in caplog.records) >= 2,
             30, "the follower to log MLflow being down twice")  # fmt: skip
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert registry.get("churn").tags["mlflow.model_version"] == "1"


def test_a_tensor_signature_or_an_untyped_column_leaves_the_schema_to_the_fitted_model(
    registry, fitted, tmp_path
) -> None:
    import pickle

    from registry import SchemaWarning
    from registry.mlflow import declared_columns

    tensor = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 6]}}]'
    directory = tmp_path / "numpy-model"
    directory.mkdir()
    (directory / "model.pkl").write_bytes(pickle.dumps(fitted))
    (directory / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n"
        f"signature:\n  inputs: '{tensor}'\n"
    )
    with pytest.warns(SchemaWarning, match="tensor spec, which has no typed columns"):
        meta = registry.import_mlflow("numpy", str(directory))
    assert meta.signature.input_schema.source == "default" and meta.signature.n_features == 6

    columns, _ = declared_columns({"signature": {"inputs": json.dumps([
        {"type": "long", "name": "n"}, {"type": "float", "name": "x", "required": False},
        {"type": "boolean", "name": "b"}, {"type": "string", "name": "s"},
    ])}})  # fmt: skip
    assert [(c.type, c.nullable) for c in columns or []] == [
        ("integer", False), ("number", True), ("boolean", False), ("string", False)]  # fmt: skip
    dated = {"signature": {"inputs": '[{"type": "datetime", "name": "when"}]'}}
    assert declared_columns(dated) == (
        None, "column 'when' of the MLflow signature is datetime, not a plain type")  # fmt: skip


@pytest.mark.parametrize(
    "mlmodel",
    [
        "flavors: [sklearn]\n",
        "flavors:\n  1: x\n  onnx: y\n",
        'flavors:\n  sklearn:\n    pickled_model: "model\\0.pkl"\n',
        "flavors:\n  sklearn:\n    pickled_model: " + "a/" * 3000 + "model.pkl\n",
        "flavors:\n  sklearn:\n    pickled_model: ../outside.pkl\n",
    ],
    ids=["flavors-a-list", "mixed-keys", "nul-byte", "name-too-long", "escaping-path"],
)
def test_an_odd_mlmodel_file_is_refused_in_one_line_never_a_traceback(
    registry, fitted, tmp_path, mlmodel
) -> None:
    import pickle

    (tmp_path / "outside.pkl").write_bytes(pickle.dumps(fitted))
    directory = tmp_path / "odd-model"
    directory.mkdir()
    (directory / "model.pkl").write_bytes(pickle.dumps(fitted))
    (directory / "MLmodel").write_text(mlmodel)
    with pytest.raises(InvalidInput, match=r"MLmodel|scikit-learn") as refused:
        registry.import_mlflow("odd", str(directory))
    assert "\n" not in refused.value.message
    with pytest.raises(ModelNotFound):
        registry.versions("odd")
