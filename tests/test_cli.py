"""The command line as users script it, and the demo on the embedded Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import joblib

from registry.embedded import stop_embedded

from .conftest import REPO, free_port


def predictq(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], env={**os.environ, **env}, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_models_commands_register_promote_show_and_roll_back(env, fitted, tmp_path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(fitted, path)

    reg = predictq(env, "models", "register", "clf", str(path), "--promote", "--metric", "auc=0.9")
    assert reg.returncode == 0, reg.stderr
    assert "registered clf v1" in reg.stdout
    assert predictq(env, "models", "register", "clf", str(path)).returncode == 0
    assert predictq(env, "models", "promote", "clf", "2").returncode == 0

    show = predictq(env, "models", "show", "clf", "2")
    assert json.loads(show.stdout)["version"] == 2
    listing = predictq(env, "models", "list")
    assert "production=v2" in listing.stdout
    back = predictq(env, "models", "rollback", "clf")
    assert "rolled back to v1" in back.stdout
    missing = predictq(env, "models", "show", "nope")
    assert missing.returncode == 3  # not found
    assert "no model named 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_submit_and_result_commands_print_json_records(
    env, promoted, fitted, dataset, worker, tmp_path
) -> None:
    x, _ = dataset
    out = predictq(env, "submit", promoted, "--rows", json.dumps(x[:2].tolist()), "--wait")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["predictions"] == fitted.predict(x[:2]).tolist()

    csv = tmp_path / "in.csv"
    csv.write_text("\n".join(",".join(str(v) for v in row) for row in x[:5]) + "\n")
    ids = predictq(env, "submit", promoted, "--file", str(csv), "--rows-per-job", "2")
    assert ids.returncode == 0, ids.stderr
    job_ids = ids.stdout.split()
    assert len(job_ids) == 3
    got = [json.loads(predictq(env, "result", j, "--wait", "30").stdout) for j in job_ids]
    assert [p for g in got for p in g["predictions"]] == fitted.predict(x[:5]).tolist()

    bad = predictq(env, "submit", promoted, "--rows", "[[1, 2]]")
    assert bad.returncode == 2
    assert "row 0 has 2 values, the model expects 6 features" in bad.stderr
    gone = predictq(env, "result", "missing-id")
    assert gone.returncode == 3 and "never submitted" in gone.stderr  # not found


def test_status_shows_workers_promoted_versions_and_throughput(env, client, promoted, worker):
    client.wait(client.submit(promoted, [[0.0] * 6]), timeout=30)
    out = predictq(env, "status")
    assert out.returncode == 0, out.stderr
    assert worker.name[:10] in out.stdout
    assert "production=v1" in out.stdout
    assert "succeeded 1" in out.stdout


def test_status_counts_queued_jobs_not_messages(env, client, promoted):
    client.submit_many(promoted, [[[0.0] * 6]] * 300)  # no worker: they stay queued
    out = predictq(env, "status")
    assert out.returncode == 0, out.stderr
    assert "300 job(s) queued, in 3 message(s)" in out.stdout


def test_the_demo_runs_to_the_end_on_its_own_embedded_redis(tmp_path) -> None:
    port = free_port()
    env = {"PREDICTQ_HOME": str(tmp_path / "home"), "PREDICTQ_EMBEDDED_PORT": str(port)}
    # The server binary stays: CI runs the demo on each supported server too.
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("PREDICTQ_") or k == "PREDICTQ_REDIS_SERVER"}  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-m", "worker", "demo"], env={**clean, **env}, cwd=REPO,
            capture_output=True, text=True, timeout=110,
        )  # fmt: skip
    finally:
        stop_embedded(port)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every job after the promotion ran on v2" in out.stdout
    assert f"The embedded Redis keeps running at redis://127.0.0.1:{port}/0" in out.stdout
    assert "`predictq redis stop` stops it." in out.stdout
    assert (tmp_path / "home" / "redis" / "appendonly.aof").exists() or any(
        (tmp_path / "home" / "redis").glob("appendonly*")
    )
