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
from registry import InvalidInput, Registry, Settings

from .conftest import REPO, RedisServer, Worker, finished, module_env, wait_for
from .poison import SlowClassifier

FEATURES = ["a", "b", "c", "d"]
MILLION = 1_000_000


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("score")
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    r.close()
    return module_env(redis_server, home)


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


@pytest.mark.timeout(60)
def test_parquet_and_json_lines_in_and_out_with_kept_columns_and_probabilities(
    client: Client, models: dict[str, Any], data: Path
) -> None:
    frame = _frame(20_000, 2)
    frame["id"] = np.arange(20_000, dtype=np.int64) * 7
    frame["segment"] = np.where(frame["a"] > 0, "up", "down")
    expected = models["named"].predict(frame[FEATURES])
    proba = models["named"].predict_proba(frame[FEATURES])
    # Parquet in (features after the kept column: matched by name), JSON Lines out.
    pq.write_table(pa.Table.from_pandas(frame[["id", "segment", *FEATURES[::-1]]],
                                        preserve_index=False), data / "in.parquet")  # fmt: skip
    summary = client.score("named", data / "in.parquet", data / "out.jsonl", id_column="id",
                           keep=["segment"], probabilities=True, rows_per_job=500)  # fmt: skip
    assert (summary.rows, summary.failed, summary.jobs) == (20_000, 0, 40)
    lines = [json.loads(line) for line in (data / "out.jsonl").read_text().splitlines()]
    assert list(lines[0]) == ["id", "segment", "prediction", "proba_0", "proba_1", "version",
                              "error"]  # fmt: skip
    assert [x["id"] for x in lines] == frame["id"].tolist()
    assert [x["segment"] for x in lines] == frame["segment"].tolist()
    assert [x["prediction"] for x in lines] == expected.tolist()
    assert np.allclose([[x["proba_0"], x["proba_1"]] for x in lines], proba)
    # JSON Lines in, Parquet out: the ID keeps its type.
    frame.to_json(data / "in.ndjson", orient="records", lines=True)
    summary = client.score("named", data / "in.ndjson", data / "again.parquet", id_column="id",
                           keep=["segment"], rows_per_job=500)  # fmt: skip
    assert summary.failed == 0
    table = pq.read_table(data / "again.parquet")
    assert table.schema.field("id").type == pa.int64()
    assert table.column("id").to_pylist() == frame["id"].tolist()
    assert table.column("prediction").to_pylist() == expected.tolist()
    assert set(table.column("error").to_pylist()) == {""}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("header", [True, False])
def test_a_numpy_model_takes_the_other_columns_in_file_order_with_or_without_a_header(
    client: Client, models: dict[str, Any], data: Path, header: bool
) -> None:
    frame = _frame(5_000, 3)
    path = data / f"plain-{header}.csv"
    _write_csv(frame, path, header=header)
    id_column = "id" if header else "0"
    summary = client.score("plain", path, data / f"plain-{header}-out.csv", id_column=id_column,
                           rows_per_job=250)  # fmt: skip
    assert (summary.rows, summary.failed) == (5_000, 0)
    out = pd.read_csv(data / f"plain-{header}-out.csv", keep_default_na=False)
    assert out[id_column].tolist() == frame["id"].tolist()
    expected = models["plain"].predict(frame[FEATURES].to_numpy())
    assert np.array_equal(out["prediction"].to_numpy(), expected)


def _jobs(r: redis.Redis) -> list[str]:
    return list(r.scan_iter(match="predictq:job:score-*", count=10_000))


@pytest.mark.timeout(90)
def test_a_run_killed_halfway_resumes_without_running_any_job_twice(
    env: dict[str, str], client: Client, models: dict[str, Any], r: redis.Redis, data: Path
) -> None:
    frame = _frame(300_000, 4)
    path = data / "resume.csv"
    _write_csv(frame, path)
    out = data / "resume-out.csv"
    args = ["named", str(path), "-o", str(out), "--id-column", "id", "--json"]
    before, results_before = set(_jobs(r)), finished(r)
    log = data / "first-run.log"
    with open(log, "wb") as f:
        first = subprocess.Popen(
            [sys.executable, "-m", "worker", "score", *args],
            env={**os.environ, **env}, cwd=REPO, stdout=f, stderr=f,
        )  # fmt: skip
    try:
        # SIGKILL once the first blocks are written to the partial output file.
        wait_for(lambda: any(p.stat().st_size > 0 for p in data.glob(".resume-out.csv.*.partial"))
                 or first.poll() is not None, 60, "the first blocks of output")  # fmt: skip
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, log.read_text()
    assert not out.exists()
    submitted_first = len(set(_jobs(r)) - before)
    assert 0 < submitted_first < 300

    second = _run(env, *args)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["jobs"] == 300
    # Only the jobs the first run never submitted were submitted; none was run twice.
    assert summary["jobs_submitted"] == 300 - submitted_first
    assert summary["jobs_already_done"] + summary["jobs_resumed"] == submitted_first
    ours = sorted(set(_jobs(r)) - before)
    assert len(ours) == 300
    assert finished(r) - results_before == 300
    attempts = r.pipeline()
    for key in ours:
        attempts.hget(key, "attempts")
    assert set(attempts.execute()) == {"1"}
    result = pd.read_csv(out, keep_default_na=False)
    assert result["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(result["prediction"].to_numpy(),
                          models["named"].predict(frame[FEATURES]))  # fmt: skip
    assert not list(data.glob(".resume-out.csv.*.partial"))


@pytest.mark.timeout(60)
def test_bad_rows_carry_their_error_and_the_others_their_prediction(
    env: dict[str, str], client: Client, models: dict[str, Any], data: Path
) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"id": range(1000), "plan": rng.choice(["free", "pro"], 1000),
                          "a": rng.normal(size=1000).round(4).astype(str)})  # fmt: skip
    frame.loc[5, "a"] = "abc"  # not a number: refused before submission
    frame.loc[17, "plan"] = "enterprise"  # an unknown category: the model refuses it
    frame.loc[400, "a"] = ""  # missing, and the column may not be
    path = data / "bad.csv"
    frame.to_csv(path, index=False)
    done = _run(env, "cats", str(path), "-o", str(data / "bad-out.csv"), "--id-column", "id",
                "--rows-per-job", "100", "--json")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""  # piped: no progress bar
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["failed"], summary["failed_rows"]) == (1000, 3, [6, 18, 401])
    # The refused job (rows 1-100, less row 6 refused before) is run again one row per job.
    assert summary["row_jobs"] == 99
    out = pd.read_csv(data / "bad-out.csv", keep_default_na=False, dtype={"error": str})
    failed = out.index[out["error"] != ""].tolist()
    assert failed == [5, 17, 400]
    assert "expected a number, got 'abc'" in out.loc[5, "error"]
    assert "refused" in out.loc[17, "error"] and out.loc[17, "prediction"] == ""
    assert "missing" in out.loc[400, "error"] or "None" in out.loc[400, "error"]
    good = frame.drop(index=failed)
    expected = models["cats"].predict(good[["plan", "a"]].astype({"a": float}))
    assert out.loc[good.index, "prediction"].astype(int).tolist() == expected.tolist()


@pytest.mark.timeout(60)
def test_bad_input_is_one_line_and_exit_code_2(
    env: dict[str, str], client: Client, data: Path
) -> None:
    path = data / "small.csv"
    _write_csv(_frame(10, 6), path)
    unknown = _run(env, "named", str(path), "-o", str(data / "out.txt"))
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "cannot tell the format" in unknown.stderr
    with pytest.raises(InvalidInput, match="has no column 'key'"):
        client.score("named", path, data / "o.csv", id_column="key")
    with pytest.raises(InvalidInput, match="unknown input format 'xlsx'"):
        client.score("named", path, data / "o.csv", input_format="xlsx")
    with pytest.raises(InvalidInput, match="no file"):
        client.score("named", data / "missing.csv", data / "o.csv")
    (data / "o.dir.csv").mkdir()  # found before scoring, not by the rename at the end
    with pytest.raises(InvalidInput, match="is a directory"):
        client.score("named", path, data / "o.dir.csv")
    assert not (data / "o.csv").exists()


def test_a_csv_header_is_told_from_data() -> None:
    from producer.files import looks_like_header
    from registry.schema import Column, InputSchema

    plain = InputSchema(columns=[Column(name=f"x{i}") for i in range(2)], named=False)
    assert looks_like_header(["id", "x", "y"], plain, {"id"})
    assert looks_like_header(["u", "v"], plain, set())  # words, not numbers
    assert not looks_like_header(["1.5", "2"], plain, set())
    assert not looks_like_header(["row-1", "1.5", "2"], plain, {"0"})  # an ID by position


def test_csv_cells_are_typed_by_their_column() -> None:
    from producer.tables import typed_column
    from registry.schema import Column

    values, bad, _ = typed_column(["1", " 2.5 ", "", "abc", "nan"], Column(name="x"))
    assert (values, bad) == ([1.0, 2.5, None, None, None], [False, False, False, True, False])
    values, bad, _ = typed_column(["3", "3.5"], Column(name="n", type="integer"))
    assert (values, bad) == ([3, 3.5], [False, True])
    values, bad, _ = typed_column(["yes", "0", "maybe"], Column(name="b", type="boolean"))
    assert (values, bad) == ([True, False, None], [False, False, True])
    assert typed_column(["007", ""], Column(name="s", type="string"))[0] == ["007", None]


@pytest.mark.timeout(120)
def test_two_runs_of_the_same_command_at_once_never_leave_a_corrupt_output(
    env: dict[str, str], client: Client, models: dict[str, Any], data: Path
) -> None:
    frame = _frame(200_000, 8)
    path = data / "twice.csv"
    _write_csv(frame, path)
    out = data / "twice-out.csv"
    args = ["named", str(path), "-o", str(out), "--id-column", "id", "--json"]
    command = [sys.executable, "-m", "worker", "score", *args]
    runs = [
        subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    done = [run.communicate(timeout=100) for run in runs]
    codes = sorted(run.returncode for run in runs)
    # One run writes the file; the other either did too, or said in one line that it could not.
    assert codes in ([0, 0], [0, 1]), done
    for run, (_, stderr) in zip(runs, done, strict=True):
        assert "Traceback" not in stderr, stderr
        if run.returncode == 1:
            assert stderr.count("\n") == 1 and "already scoring" in stderr, stderr
    result = pd.read_csv(out, keep_default_na=False)
    assert result["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(result["prediction"].to_numpy(),
                          models["named"].predict(frame[FEATURES]))  # fmt: skip
    assert not list(data.glob(".twice-out.csv.*.partial"))


@pytest.mark.timeout(60)
def test_data_lines_with_more_cells_than_the_header_are_refused_not_shifted(
    env: dict[str, str], client: Client, data: Path
) -> None:
    # Every data line ends with a comma (a common export): pandas would take the first cell as
    # the index and shift every column one to the left, scoring the wrong features.
    path = data / "trailing.csv"
    frame = _frame(50, 9)
    lines = ["id,a,b,c,d"] + [",".join(map(str, row)) + "," for row in frame.itertuples(False)]
    path.write_text("\n".join(lines) + "\n")
    done = _run(env, "named", str(path), "-o", str(data / "trailing-out.csv"), "--id-column", "id")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "more cells than" in done.stderr, done.stderr
    assert not (data / "trailing-out.csv").exists()


@pytest.mark.timeout(60)
def test_a_first_line_with_a_huge_cell_is_read_not_a_traceback(
    env: dict[str, str], client: Client, data: Path
) -> None:
    # Python's csv module refuses a field over 128 KiB; pandas reads the rest of the file.
    path = data / "huge.csv"
    frame = _frame(20, 10)
    frame["id"] = frame["id"] + "x" * 200_000
    _write_csv(frame, path, header=False)
    done = _run(env, "plain", str(path), "-o", str(data / "huge-out.csv"), "--id-column", "0",
                "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 20
    out = pd.read_csv(data / "huge-out.csv", keep_default_na=False)
    assert out["0"].tolist() == frame["id"].tolist()


@pytest.mark.timeout(90)
def test_a_run_again_after_the_alias_moved_to_another_schema_keeps_rows_and_predictions_aligned(
    env: dict[str, str], client: Client, models: dict[str, Any], data: Path
) -> None:
    from sklearn.impute import SimpleImputer

    # v1 refuses a missing 'a' (the row is left out of its job); v2 imputes it. A second run
    # after the promotion must not read v1's records as if they held v2's rows.
    rng = np.random.default_rng(11)
    x = pd.DataFrame(rng.normal(size=(500, 4)), columns=FEATURES)
    y = (x["a"] + x["b"] > 0).astype(int)
    registry = Registry(settings=_settings(env))
    registry.register("drift", LogisticRegression().fit(x, y), promote=True)
    frame = _frame(300, 12)
    frame["a"] = frame["a"].astype(object)
    frame.loc[5, "a"] = None
    path = data / "drift.csv"
    frame.to_csv(path, index=False)
    args = ["drift", str(path), "-o", str(data / "drift-out.csv"), "--id-column", "id",
            "--rows-per-job", "100", "--json"]  # fmt: skip
    first = _run(env, *args)
    assert first.returncode == 1 and json.loads(first.stdout)["failed_rows"] == [6], first.stderr
    imputing = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, y)
    v2 = registry.register("drift", imputing, input_example=x.head(20).assign(a=np.nan))
    assert v2.signature.input_schema.columns[0].nullable
    registry.promote("drift", v2.version)

    second = _run(env, *args)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    out = pd.read_csv(data / "drift-out.csv", keep_default_na=False)
    assert out["id"].tolist() == frame["id"].tolist()
    assert set(out["version"]) == {v2.version}
    expected = imputing.predict(frame[FEATURES].astype(float))
    assert out["prediction"].tolist() == expected.tolist()


@pytest.mark.timeout(30)
def test_json_lines_columns_are_the_first_objects_keys_whatever_later_lines_add(
    data: Path,
) -> None:
    from producer.tables import open_reader
    from registry.schema import Column, InputSchema

    # Each line adds a key: kept, they would make every block lines x keys cells.
    path = data / "keys.jsonl"
    path.write_bytes(b"".join(json.dumps({"a": i, f"k{i}": i}).encode() + b"\n"
                              for i in range(5000)))  # fmt: skip
    schema = InputSchema(columns=[Column(name="a")], named=True)
    reader = open_reader(path, "jsonl", 5000, header=None, names_wanted=set(), schema=schema)
    blocks = list(reader.blocks())
    reader.close()
    assert reader.names == ["a", "k0"]
    assert [(b.rows, list(b.columns)) for b in blocks] == [(5000, ["a", "k0"])]
    assert blocks[0].columns["a"] == list(range(5000))


@pytest.mark.timeout(90)
def test_a_run_again_after_a_failure_not_about_the_rows_runs_those_jobs_again(
    env: dict[str, str], client: Client, models: dict[str, Any], r: redis.Redis, data: Path
) -> None:
    # A tampered artifact fails every job with integrity_error, whatever the rows. Once the
    # operator promotes a good version, the same command must score the file, not read the
    # failures back until the records expire.
    frame = _frame(5_000, 7)
    labels = frame["a"] > frame["b"]
    # Fits of their own, so artifacts of their own: workers cache artifacts by checksum.
    tampered = LogisticRegression(C=0.5).fit(frame[FEATURES], labels)
    good = LogisticRegression(C=0.25).fit(frame[FEATURES], labels)
    registry = Registry(settings=_settings(env))
    # Tampered before it is promoted: workers preload a version as it is promoted, and one that
    # read the blob first would serve it.
    meta = registry.register("fragile", tampered)
    blob = registry.store.blob_path(meta.sha256)
    blob.write_bytes(blob.read_bytes()[:-8] + b"tampered")
    registry.promote("fragile", meta.version)
    path = data / "fragile.csv"
    _write_csv(frame, path)
    out = data / "fragile-out.csv"
    args = ["fragile", str(path), "-o", str(out), "--id-column", "id", "--json"]

    first = _run(env, *args)
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout)
    assert summary["failed"] == 5_000 and summary["jobs"] == 5
    assert set(pd.read_csv(out, keep_default_na=False)["error"].str.split(":").str[0]) == {
        "integrity_error"
    }

    registry.register("fragile", good, promote=True)  # same input schema: same job IDs
    second = _run(env, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads(second.stdout)
    assert summary["failed"] == 0 and summary["versions"] == [2]
    assert summary["jobs_submitted"] == 5 and summary["jobs_already_done"] == 0
    result = pd.read_csv(out, keep_default_na=False)
    assert result["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(result["prediction"].to_numpy(), good.predict(frame[FEATURES]))
    # A third run reads the second run's records: nothing is submitted again.
    third = json.loads(_run(env, *args).stdout)
    assert third["jobs_submitted"] == 0 and third["jobs_already_done"] == 5


@pytest.mark.timeout(90)
def test_a_full_queue_slows_a_run_down_instead_of_ending_it(
    env: dict[str, str], client: Client, data: Path
) -> None:
    # PREDICTQ_MAX_QUEUED far below the jobs a run keeps in flight: each refusal is waited out
    # (nothing of a refused submission was enqueued) and the file is scored whole. The model
    # takes 0.5 s per 10-job submission, and a run submits a block's slices back to back: the
    # worker's two processes hold two, the third waits in the queue, and the fourth is refused.
    # (With a fast model, whether the queue ever filled was a race the workers could win.)
    slow = SlowClassifier(delay=0.05).fit(np.zeros((2, 4)), np.array([0, 1]))
    Registry(settings=_settings(env)).register("slow-score", slow, promote=True)
    frame = _frame(60_000, 8)
    path = data / "busy.csv"
    _write_csv(frame, path)
    out = data / "busy-out.csv"
    run = _run({**env, "PREDICTQ_MAX_QUEUED": "10"},
               "slow-score", str(path), "-o", str(out), "--id-column", "id", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["failed"] == 0 and summary["jobs_submitted"] == 60
    assert summary["waited_overloaded"] > 0
    result = pd.read_csv(out, keep_default_na=False)
    assert result["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(result["prediction"].to_numpy(),
                          slow.predict(frame[FEATURES].to_numpy()))  # fmt: skip
