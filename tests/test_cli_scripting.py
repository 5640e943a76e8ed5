"""The command line in scripts: exit codes, --json, piped output that is never cut, literal text.

One worker and one set of models serve the whole module (real subprocesses, like test_cli.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery
from sklearn.linear_model import LogisticRegression

from producer import Client
from registry import Registry, Settings, keys
from worker.recovery import Sweeper

from .conftest import RedisServer, Worker, module_env
from .poison import PoisonClassifier
from .test_cli import predictq

pytestmark = pytest.mark.timeout(90)

# Long enough that an 80-column table would cut it.
LONG_NAME = "a-model-name-long-enough-that-an-80-column-table-would-cut-it-in-the-middle-v2026"
POISON = [[666.0, 0.0, 0.0]]  # tests/poison.py refuses it: the job ends failed


@dataclass
class Setup:
    env: dict[str, str]
    worker: Worker
    failed_id: str  # a job that ended failed
    dead_id: str  # a dead-lettered job (failed, worker_lost)


def _dead_letter(client: Client, settings: Settings, r: redis.Redis, job_id: str) -> None:
    """A job contained after killing every process that took it, as the sweeper does it."""
    stock = Celery(broker=client.url)
    stock.send_task("predictq.predict", task_id=job_id, queue="predictq",
                    kwargs={"model": "clf", "rows": [[0.0] * 6]})  # fmt: skip
    sweeper = Sweeper(r, settings, "node-cli@host")
    for crash in range(settings.max_attempts):
        dead = f"node-cli@host:{999970 + crash}"
        r.hset(keys.CONSUMERS, dead, "{}")
        source = "predictq" if crash == 0 else keys.isolate("predictq")
        r.lmove(source, keys.claiming(dead), "RIGHT", "LEFT")
        sweeper.sweep()
    assert client.result(job_id).status == "failed"


@pytest.fixture(scope="module")
def cli(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    fitted: LogisticRegression,
) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("cli")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    r.flushdb()
    env = module_env(redis_server, home)
    settings = Settings(redis_url=redis_server.url, home=home / "home",
                        artifact_dir=home / "artifacts", alias_cache_seconds=0)  # fmt: skip
    registry = Registry(settings=settings)
    registry.register("clf", fitted, promote=True, metrics={"auc": 0.9})
    registry.register(LONG_NAME, fitted, promote=True)
    registry.register("poison", PoisonClassifier().fit(np.zeros((2, 3)), np.array([0, 1])),
                      promote=True)  # fmt: skip
    client = Client(settings=settings)
    dead_id = str(uuid.uuid4())
    _dead_letter(client, settings, r, dead_id)  # before the worker, which would run it
    worker = Worker(env, home / "worker.log", 1, r)
    try:
        failed_id = client.submit("poison", POISON)
        assert client.wait(failed_id, timeout=30).status == "failed"
        yield Setup(env, worker, failed_id, dead_id)
    finally:
        worker.stop()
        client.close()
        r.flushdb()
        r.close()


def test_exit_codes_say_failure_bad_input_and_not_found(cli: Setup, tmp_path: Path) -> None:
    """(tests/test_cli.py checks 0, bad --rows -> 2 and an unknown model or job -> 3.)"""
    env = cli.env
    # 1: a job that ended failed, whether read back or waited for; every record still printed.
    failed = predictq(env, "result", cli.failed_id, "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "invalid_input"
    assert f"{cli.failed_id} failed (invalid_input: " in failed.stderr
    csv = tmp_path / "mixed.csv"
    csv.write_text("1,0,0\n666,0,0\n")
    mixed = predictq(env, "submit", "poison", "--file", str(csv), "--rows-per-job", "1", "--wait")
    assert mixed.returncode == 1, mixed.stderr
    statuses = [json.loads(line)["status"] for line in mixed.stdout.splitlines()]
    assert statuses == ["succeeded", "failed"]
    assert "1 of 2 job(s) did not succeed" in mixed.stderr

    # 2: bad input.
    no_ids = predictq(env, "dead", "retry")
    assert no_ids.returncode == 2
    assert "error (invalid_input): name the job IDs to retry, or pass --all" in no_ids.stderr

    # 3: not found, and the name (user data) printed as it is: [bold] is text, not a style.
    named = predictq(env, "models", "show", "x[bold]y")
    assert named.returncode == 3
    assert "error (model_not_found): no model named 'x[bold]y'" in named.stderr


def test_models_and_status_print_one_json_document(cli: Setup) -> None:
    env = cli.env

    def js(*args: str) -> object:
        out = predictq(env, *args, "--json")
        assert out.returncode == 0, (args, out.stderr)
        return json.loads(out.stdout)

    listed = js("models", "list")
    assert isinstance(listed, list)
    clf = next(m for m in listed if m["name"] == "clf")
    assert (clf["versions"], clf["aliases"], clf["latest"]) == ([1], {"production": 1}, 1)

    shown = js("models", "show", "clf")
    assert isinstance(shown, dict)
    assert shown["aliases"] == {"production": 1}
    assert shown["versions"][0]["metrics"] == {"auc": 0.9}
    assert [e["action"] for e in shown["history"]] == ["promote"]
    version = js("models", "show", LONG_NAME, "1")  # a long name: piped, never wrapped
    assert isinstance(version, dict) and version["name"] == LONG_NAME
    assert version["signature"]["n_features"] == 6

    status = js("status")
    assert isinstance(status, dict) and status["dead_letters"] == 1


def test_dead_letters_list_whole_ids_and_retry_says_which_were_not_found(cli: Setup) -> None:
    env = {**cli.env, "COLUMNS": "80"}  # a pipe: the table is never cut to 80 columns
    table = predictq(env, "dead", "list")
    assert table.returncode == 0, table.stderr
    assert cli.dead_id in table.stdout
    listed = predictq(env, "dead", "list", "--json")
    assert [(d["id"], d["error"]["code"]) for d in json.loads(listed.stdout)] == [
        (cli.dead_id, "worker_lost")
    ]

    # The ones found are retried even when another is not found (exit 3). An ID cut short, as
    # an 80-column table used to show it, is not found.
    short = cli.dead_id[:14]
    retried = predictq(env, "dead", "retry", cli.dead_id, short, "--json")
    assert retried.returncode == 3
    assert json.loads(retried.stdout) == [
        {"id": cli.dead_id, "outcome": "retried"},
        {"id": short, "outcome": "not_found"},
    ]
    assert f"error (job_not_found): no dead letter for {short}:" in retried.stderr


def test_piped_tables_are_never_wrapped_or_cut(cli: Setup) -> None:
    """COLUMNS=80 and stdout a pipe: every name and ID still appears whole, on one line."""
    env = {**cli.env, "COLUMNS": "80"}
    listing = predictq(env, "models", "list")
    assert listing.returncode == 0, listing.stderr
    assert any(LONG_NAME in line and "production=v1" in line
               for line in listing.stdout.splitlines())  # fmt: skip
    status = predictq(env, "status")
    assert status.returncode == 0, status.stderr
    assert any(LONG_NAME in line and "production=v1" in line
               for line in status.stdout.splitlines())  # fmt: skip
    assert cli.worker.name in status.stdout


def test_error_messages_print_literally(cli: Setup) -> None:
    # :key: stays text, not an emoji.
    refused = predictq({**cli.env, "PREDICTQ_API_KEYS": "ops:only-two-parts"}, "api")
    assert refused.returncode == 1
    assert "write name:key:scope+scope" in refused.stderr
    assert "\N{KEY}" not in refused.stderr
