"""Flower shows predictq's jobs: `predictq flower` runs, and batch consumers send task events."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import yaml
from celery import Celery

from producer import TASK_NAME, Client
from registry import PredictqError, Registry

from .conftest import REPO, Service, free_port, wait_for
from .poison import SlowClassifier

# The login the Flower of these tests is started with, as docker-compose's FLOWER_BASIC_AUTH.
LOGIN = ("ops", "s3cret")


class FlowerServer(Service):
    """A real ``predictq flower`` process, run with docker-compose's command on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][
            "flower"
        ]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [str(self.port) if a == "5555" else str(a) for a in self.service["command"]]
        assert argv[:2] == ["flower", "--port"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", *argv],
                env={**os.environ, **env, "FLOWER_BASIC_AUTH": ":".join(LOGIN)},
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:
            wait_for(lambda: self._answers() or self.proc.poll() is not None, 60, "Flower")
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is not None:
            pytest.fail(f"predictq flower exited with {self.proc.returncode}:\n{self.output()}")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def tasks(self, auth: tuple[str, str] | None = LOGIN) -> dict[str, Any]:
        reply = httpx.get(f"{self.url}/api/tasks", timeout=10, auth=auth)
        reply.raise_for_status()
        tasks: dict[str, Any] = reply.json()
        return tasks


@pytest.fixture
def flower(env: dict[str, str], tmp_path: Path, r: redis.Redis) -> Iterator[FlowerServer]:
    before = r.pubsub_numpat()
    server = FlowerServer(env, tmp_path / "flower.log")
    # Events travel by pub/sub, which keeps no history: wait until Flower listens.
    wait_for(lambda: r.pubsub_numpat() > before, 30, "Flower to subscribe to task events")
    yield server
    server.stop()


def test_the_compose_flower_service_needs_a_login_and_passes_its_health_check(
    flower: FlowerServer,
) -> None:
    env = flower.service["environment"]
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    check = [a.replace("5555", str(flower.port)) for a in flower.service["healthcheck"]["test"]]
    assert check[:2] == ["CMD", "python"]
    assert subprocess.run([sys.executable, *check[2:]], timeout=60).returncode == 0
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        flower.tasks(auth=None)
    assert flower.tasks() == {}


@pytest.mark.timeout(120)
def test_flower_lists_batch_consumer_jobs_with_their_state_and_runtime(
    flower: FlowerServer,
    start_worker: Callable[..., Any],
    client: Client,
    registry: Registry,
    promoted: str,
    redis_url: str,
) -> None:
    registry.register("slow", SlowClassifier().fit(np.zeros((2, 3)), np.array([0, 1])),
                      promote=True)  # fmt: skip
    worker = start_worker(PREDICTQ_TASK_EVENTS="true", PREDICTQ_TIME_LIMIT="2")
    good = client.submit_many(promoted, [[[0.1 * i] * 6] for i in range(5)])
    stock = Celery(broker=redis_url)
    # A row of the wrong width (fails at validation), and a message without rows (never runs).
    bad = [
        stock.send_task(TASK_NAME, kwargs=kwargs, queue="predictq").id
        for kwargs in ({"model": promoted, "rows": [[1, 2]]}, {"model": promoted})
    ]
    # Stopped at the time limit: the sweeper, not the batch consumer, fails it.
    stuck = client.submit("slow", [[777.0, 0.0, 0.0]])
    assert all(res.status == "succeeded" for res in client.wait_many(good, timeout=30))
    assert all(client.wait(job_id, timeout=60).status == "failed" for job_id in [*bad, stuck])

    def listed() -> dict[str, Any] | None:
        tasks = flower.tasks()
        final = {"SUCCESS", "FAILURE"}
        ready = all(tasks.get(i, {}).get("state") in final for i in [*good, *bad, stuck])
        return tasks if ready else None

    wait_for(listed, 30, "Flower to list every job in a final state")
    tasks = listed()
    assert tasks is not None
    for job_id in good:
        task = tasks[job_id]
        assert task["state"] == "SUCCESS"
        assert task["name"] == TASK_NAME
        assert task["worker"] == worker.name
        assert isinstance(task["runtime"], float) and task["runtime"] >= 0
        assert task["started"] is not None
    wrong_width, no_rows = (tasks[i] for i in bad)
    assert wrong_width["state"] == no_rows["state"] == "FAILURE"
    assert wrong_width["exception"].startswith("invalid_input: row 0 has 2 values")
    assert no_rows["exception"].startswith("invalid_input: malformed job: rows")
    # A job whose message could not be read never started.
    assert no_rows["started"] is None
    assert tasks[stuck]["state"] == "FAILURE"
    assert tasks[stuck]["exception"].startswith("timeout: the job ran past the time limit of 2s")


@pytest.mark.timeout(120)
def test_with_batching_off_each_job_gets_celerys_own_events_once(
    start_worker: Callable[..., Any], client: Client, promoted: str, redis_url: str
) -> None:
    counts: Counter[str] = Counter()
    app = Celery(broker=redis_url)
    ready = threading.Event()
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"*": lambda e: counts.update([(e["type"], e.get("uuid"))])}
        )

        def listen() -> None:
            for _ in receiver.consume(limit=None, timeout=None, wakeup=False):
                ready.set()

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        wait_for(ready.is_set, 30, "the event listener")
        worker = start_worker(PREDICTQ_TASK_EVENTS="true", PREDICTQ_BATCHING="false")
        ids = [client.submit(promoted, [[0.1] * 6]) for _ in range(3)]
        assert all(res.status == "succeeded" for res in client.wait_many(ids, timeout=30))
        wait_for(lambda: all(counts["task-succeeded", i] for i in ids), 30, "the events")
        # A stopped worker has sent all it ever will (a pool process drains its events first).
        worker.stop()
        receiver.should_stop = True
        thread.join(10)
    for job_id in ids:
        assert [counts[kind, job_id] for kind in ("task-received", "task-started",
                                                  "task-succeeded")] == [1, 1, 1]  # fmt: skip


def test_error_messages_print_literally_not_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import print_error

    print_error(PredictqError("pip install 'predictq[flower]' and write name:key:scope"))

    assert capsys.readouterr().err == (
        "error (internal): pip install 'predictq[flower]' and write name:key:scope\n"
    )


def test_help_shows_install_hints_with_their_extra() -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    out = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "pip install 'predictq[api]'" in out.output


def test_sending_task_events_never_blocks_a_consumer_when_the_broker_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from worker.batching import Job
    from worker.events import TaskEvents

    events = TaskEvents(Celery(broker=f"redis://127.0.0.1:{free_port()}/0"), "node@host")
    job = Job("job-1", None, started_at=f"{time.time():.6f}")
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.events"):
        # More batches than the sender may hold back: the surplus is dropped, not waited on.
        for _ in range(400):
            events.started([job])
            events.finished([job], time.time())
            events.flush()
        assert time.monotonic() - began < 5
        wait_for(lambda: "dropped" in caplog.text, 30, "the drop to be logged")


def test_the_task_events_backlog_holds_a_bounded_number_of_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sender stuck on the broker must not keep whole batches (their rows and predictions)
    in memory without bound: past the job bound, a batch's events are dropped at once."""
    from worker import events as ev
    from worker.batching import Job

    events = ev.TaskEvents(Celery(broker=f"redis://127.0.0.1:{free_port()}/0"), "node@host")
    batch = [Job(f"job-{i}", None, started_at=f"{time.time():.6f}") for i in range(1024)]
    with caplog.at_level(logging.WARNING, logger="worker.events"):
        for _ in range(3 * ev._BACKLOG_JOBS // len(batch)):
            events.started(batch)
            events.flush()
            # Never more than the bound waits, whatever the sender is doing.
            assert events._queued_jobs <= ev._BACKLOG_JOBS
        wait_for(lambda: "dropped" in caplog.text, 30, "the drop to be logged")
