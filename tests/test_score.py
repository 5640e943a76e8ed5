"""`predictq score` and Client.score against a real worker: a million-row CSV matches
model.predict row for row, Parquet and JSON Lines in and out, a run killed halfway resumes
without running any job twice, and bad rows fail alone.

One worker and one Redis database serve the whole module (files and models differ per test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import redis
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from producer import Client
from registry import Registry, Settings

from .conftest import REPO, RedisServer, Worker, finished, wait_for

FEATURES = ["a", "b", "c", "d"]
MILLION = 1_000_000


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("score")
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    r.close()
    return {
        "PREDICTQ_REDIS_URL": redis_server.url,
        "PREDICTQ_HOME": str(home / "home"),
        "PREDICTQ_ARTIFACT_DIR": str(home / "artifacts"),
    }


@pytest.fixture(scope="module")
def r(env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(env["PREDICTQ_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def models(env: dict[str, str]) -> dict[str, Any]:
    """'named': fitted on a DataFrame of a..d; 'plain': the same on a numpy array; 'cats': an
    encoder that refuses categories it was not fitted on (handle_unknown='error')."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    y = (x[:, 0] + x[:, 1] - x[:, 2] > 0).astype(int)
    frame = pd.DataFrame(x, columns=FEATURES)
    named = LogisticRegression().fit(frame, y)
    plain = LogisticRegression().fit(x, y)
    cat_frame = pd.DataFrame({"plan": rng.choice(["free", "pro"], 2000), "a": x[:, 0]})
    cats = make_pipeline(
        ColumnTransformer([("plan", OneHotEncoder(handle_unknown="error"), ["plan"])],
                          remainder="passthrough"),
        LogisticRegression(),
    ).fit(cat_frame, y)  # fmt: skip
    registry = Registry(settings=_settings(env))
    registry.register("named", named, promote=True)
    registry.register("plain", plain, promote=True)
    registry.register("cats", cats, input_example=cat_frame.head(50), promote=True)
    return {"named": named, "plain": plain, "cats": cats}


def _settings(env: dict[str, str]) -> Settings:
    return Settings(redis_url=env["PREDICTQ_REDIS_URL"], home=Path(env["PREDICTQ_HOME"]),
                    artifact_dir=Path(env["PREDICTQ_ARTIFACT_DIR"]))  # fmt: skip


@pytest.fixture(scope="module")
def worker(
    env: dict[str, str], r: redis.Redis, models: dict[str, Any], data: Path
) -> Iterator[Worker]:
    w = Worker(env, data / "worker.log", 2, r)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def client(env: dict[str, str], worker: Worker) -> Iterator[Client]:
    with Client(settings=_settings(env)) as c:
        yield c


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)).round(6), columns=FEATURES)
    frame.insert(0, "id", [f"row-{i}" for i in range(n)])
    return frame


def _write_csv(frame: pd.DataFrame, path: Path, header: bool = True) -> None:
    options = pacsv.WriteOptions(include_header=header)
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path, options)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "score", *args], env={**os.environ, **env}, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(90)
def test_a_million_rows_come_back_in_order_with_their_ids(
    client: Client, models: dict[str, Any], data: Path
) -> None:
    frame = _frame(MILLION, 1)
    path = data / "million.csv"
    _write_csv(frame, path)
    t0 = time.perf_counter()
    summary = client.score("named", path, data / "million-out.csv", id_column="id")
    seconds = time.perf_counter() - t0
    print(f"\nscore: {MILLION} rows in {seconds:.1f}s ({MILLION / seconds:,.0f} rows/s)")
    assert (summary.rows, summary.failed, summary.jobs) == (MILLION, 0, 1000)
    out = pd.read_csv(data / "million-out.csv", keep_default_na=False)
    assert list(out.columns) == ["id", "prediction", "version", "error"]
    assert out["id"].tolist() == frame["id"].tolist()
    expected = models["named"].predict(frame[FEATURES])
    assert np.array_equal(out["prediction"].to_numpy(), expected)
    assert set(out["version"]) == {1} and set(out["error"]) == {""}
