"""Celery results: stock Celery clients (Python and celery-node) read a job's end with their own
``AsyncResult.get()``, and ``Client.wait`` waits for a record that does not exist yet.

One worker serves the whole module (a worker start is most of a test's time here): the module
flushes the session's Redis once and registers its models, and each test uses IDs of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery
from celery.exceptions import TaskRevokedError
from sklearn.linear_model import LogisticRegression

from producer import Client, JobNotFound, JobResult, JobTimeout, celery_results
from producer.messages import batch_message, task_message
from registry import Registry, Settings, keys
from worker import envelope

from .conftest import REPO, RedisServer, Worker, module_env
from .poison import KillerClassifier

NODE_DIR = REPO / "tests" / "node"
X3 = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
Y2 = np.array([0, 1])


@dataclass
class Stack:
    """The module's Redis, its settings, one running worker and a stock Celery app."""

    url: str
    env: dict[str, str]
    settings: Settings
    r: redis.Redis
    worker: Worker
    app: Celery
    home: Path

    def client(self, **overrides: object) -> Client:
        return Client(settings=self.settings.model_copy(update=overrides))


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, fitted: LogisticRegression
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("celery-results")
    url = redis_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    env = {
        **module_env(redis_server, home),
        # A job that kills its process is contained at its first crash.
        "PREDICTQ_MAX_ATTEMPTS": "1",
    }
    settings = Settings(redis_url=url, home=home / "home", artifact_dir=home / "artifacts",
                        alias_cache_seconds=0)  # fmt: skip
    registry = Registry(settings=settings)
    registry.register("clf", fitted, promote=True)
    registry.register("churn", LogisticRegression().fit(X3, Y2), promote=True)
    registry.register("killer", KillerClassifier().fit(X3, Y2), promote=True)
    worker = Worker(env, home / "worker.log", 1, r)
    app = Celery(broker=url, backend=url)
    try:
        yield Stack(url, env, settings, r, worker, app, home)
    finally:
        worker.stop()
        app.close()
        r.close()


def _send(stack: Stack, kwargs: dict[str, object], queue: str = "predictq") -> str:
    return str(stack.app.send_task("predictq.predict", queue=queue, kwargs=kwargs).id)


@pytest.mark.timeout(60)
def test_a_stock_client_gets_the_record_from_async_result_get_and_a_failure_raises_its_code(
    stack: Stack,
) -> None:
    ok = _send(stack, {"model": "clf", "rows": [[0.5] * 6, [-0.5] * 6], "probabilities": True})
    missing = _send(stack, {"model": "no-such-model", "rows": [[0.5] * 6]})
    malformed = _send(stack, {"model": "clf", "rows": "not rows"})

    record = stack.app.AsyncResult(ok).get(timeout=30)
    with pytest.raises(RuntimeError, match=r"^model_not_found: "):
        stack.app.AsyncResult(missing).get(timeout=30)
    with pytest.raises(RuntimeError, match=r"^invalid_input: malformed job"):
        stack.app.AsyncResult(malformed).get(timeout=30)

    with stack.client() as client:
        assert JobResult.model_validate(record) == client.result(ok)
    assert record["status"] == "succeeded" and len(record["probabilities"]) == 2
    # Kept as long as the job's record, and in Celery's own meta format.
    assert 0 < stack.r.ttl(keys.celery_meta(ok)) <= stack.settings.result_ttl
    meta = json.loads(stack.r.get(keys.celery_meta(missing)) or "{}")
    assert meta["status"] == "FAILURE" and meta["task_id"] == missing
    assert meta["result"]["code"] == "model_not_found"


@pytest.mark.timeout(60)
def test_a_stock_job_that_crashes_its_worker_answers_get_with_worker_lost(stack: Stack) -> None:
    poison = _send(stack, {"model": "killer", "rows": [[666.0, 0.0, 0.0]]})

    with pytest.raises(RuntimeError, match=r"^worker_lost: "):
        stack.app.AsyncResult(poison).get(timeout=45)

    assert stack.r.hget(f"predictq:job:{poison}", "status") == "failed"
    assert stack.worker.proc.poll() is None


@pytest.mark.timeout(30)
def test_a_hostile_key_in_the_celery_result_s_place_does_not_stall_the_job(stack: Stack) -> None:
    job_id = "hostile-meta-1"
    stack.r.rpush(keys.celery_meta(job_id), "not a string value")
    stack.app.send_task("predictq.predict", queue="predictq", task_id=job_id,
                        kwargs={"model": "clf", "rows": [[0.1] * 6]})  # fmt: skip

    with stack.client() as client:
        assert client.wait(job_id, timeout=20).status == "succeeded"
    assert stack.app.AsyncResult(job_id).get(timeout=10)["status"] == "succeeded"


@pytest.mark.timeout(10)
def test_writing_a_celery_result_never_fails_the_script_that_ends_the_job(stack: Stack) -> None:
    call = celery_results.LUA + "celery_result(KEYS[1], ARGV[1], ARGV[2], '60') return 'ended'"
    stack.r.hset("predictq:job:odd", mapping={"status": "failed", "error": "not JSON"})

    assert stack.r.eval(call, 1, "predictq:job:odd", "odd", "1795737600.5") == "ended"
    with pytest.raises(RuntimeError, match=r"^failed: the job failed"):
        stack.app.AsyncResult("odd").get(timeout=5)
    # A value it cannot use at all (a time that is no time): no result, and the script goes on.
    assert stack.r.eval(call, 1, "predictq:job:odd", "odd2", "no time") == "ended"
    assert not stack.r.exists(keys.celery_meta("odd2"))


def test_a_producer_s_request_for_celery_results_survives_the_split_of_a_batch_message() -> None:
    # Recovery splits a batch message into messages of one job: each must still say so, or the
    # worker that runs it would not write the Celery result its flagged record asks for.
    batch = batch_message({"model": "clf"}, ["a", "b"], [b"[[1]]", b"[[2]]"], "q", celery=True)
    singles = envelope.singles(batch, "q")
    assert envelope.parse(batch).celery
    assert [job_id for job_id, _ in singles] == ["a", "b"]
    assert all(envelope.parse(raw).celery for _, raw in singles)
    assert not envelope.parse(task_message("c", {"model": "clf", "rows": []}, "q")).celery


@pytest.mark.timeout(60)
def test_the_setting_gives_native_jobs_a_celery_result_and_off_they_write_none(
    stack: Stack,
) -> None:
    with stack.client() as off, stack.client(celery_results=True) as on:
        plain = off.submit("clf", [[0.2] * 6])
        flagged = on.submit("clf", [[0.2] * 6])
        assert off.wait(plain, timeout=30).status == "succeeded"
        record = stack.app.AsyncResult(flagged).get(timeout=30)
        assert JobResult.model_validate(record) == off.wait(flagged, timeout=30)
        # Cancelled before any worker took it (its queue has none): REVOKED, raised by get().
        with stack.client(celery_results=True, queue="predictq-idle") as idle:
            cancelled = idle.submit("clf", [[0.2] * 6])
            assert idle.cancel(cancelled)
            expired = idle.submit("clf", [[0.2] * 6])
        with pytest.raises(TaskRevokedError, match="cancelled"):
            stack.app.AsyncResult(cancelled).get(timeout=10)
        # Its record expired while it was queued (what the TTL does): still an answer, though
        # the worker's own setting is off (its message says so).
        stack.r.delete(f"predictq:job:{expired}")
        while stack.r.lmove("predictq-idle", "predictq", "RIGHT", "LEFT"):
            pass
        with pytest.raises(RuntimeError, match=r"^expired: "):
            stack.app.AsyncResult(expired).get(timeout=30)

    assert not stack.r.exists(keys.celery_meta(plain))

    # The worker's setting alone flags every job it starts.
    worker = Worker({**stack.env, "PREDICTQ_CELERY_RESULTS": "true", "PREDICTQ_QUEUE": "on"},
                    stack.home / "worker-on.log", 1, stack.r)  # fmt: skip
    try:
        with stack.client(queue="on") as client:
            native = client.submit("clf", [[0.3] * 6])
            record = stack.app.AsyncResult(native).get(timeout=30)
            assert record["id"] == native and record["status"] == "succeeded"
    finally:
        worker.stop()


@pytest.mark.timeout(30)
def test_wait_waits_for_a_record_that_appears_later_and_result_stays_strict(
    stack: Stack,
) -> None:
    # Sent to a queue no worker reads: no record exists until the message is moved over.
    later = _send(stack, {"model": "clf", "rows": [[0.4] * 6]}, queue="later")
    got: list[JobResult] = []
    with stack.client() as client:
        waiter = threading.Thread(target=lambda: got.append(client.wait(later, timeout=20)))
        waiter.start()
        with pytest.raises(JobNotFound):
            client.result(later)
        stack.r.lmove("later", "predictq", "RIGHT", "LEFT")
        waiter.join(25)
        assert got and got[0].status == "succeeded"

        with pytest.raises(JobNotFound, match=r"no record of job 'never' after 1s: never submit"):
            client.wait("never", timeout=1)
        with pytest.raises(JobNotFound, match="'never'"):
            client.wait_many([later, "never"], timeout=1)
        with stack.client(queue="predictq-idle") as idle:
            queued = idle.submit("clf", [[0.4] * 6])
            with pytest.raises(JobTimeout):
                client.wait(queued, timeout=1)


def _readme_celery_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Enqueueing from any language through Celery", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's Celery section has no python example"
    return found.group(1)


@pytest.mark.timeout(60)
def test_the_readme_plain_celery_example_runs_as_written(stack: Stack) -> None:
    code = _readme_celery_snippet().replace("redis://:secret@redis:6379/0", stack.url)
    assert stack.url in code
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own example, as written

    record, result = scope["record"], scope["result"]
    assert isinstance(record, dict) and isinstance(result, JobResult)
    assert record["status"] == result.status == "succeeded"
    assert record["predictions"] == result.predictions
    scope["app"].close()  # type: ignore[attr-defined]


def _node() -> str:
    """The node binary, with celery-node installed; on CI their absence fails the test."""
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "celery-node").is_dir():
        why = "celery-node is not installed: npm ci --prefix tests/node"
    if why is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{why} (.ci/run installs it)")
    pytest.skip(why)


@pytest.mark.timeout(60)
def test_celery_node_gets_the_record_and_a_failed_job_rejects_with_its_code(stack: Stack) -> None:
    node = _node()
    out = subprocess.run(
        [node, str(NODE_DIR / "celery_results.js"), stack.url, "predictq", "clf",
         json.dumps([0.7] * 6)],
        capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])

    good = got["good"]["resolved"]
    assert good["id"] == got["good_id"] and good["status"] == "succeeded"
    assert len(good["predictions"]) == 1
    bad = got["bad"]["rejected"]
    assert bad["code"] == "model_not_found"
    assert bad["message"].startswith("model_not_found: ")
