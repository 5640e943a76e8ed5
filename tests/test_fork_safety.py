"""A node's main process forks pool processes while its own threads (the promotion listener,
the heartbeat, the sweeper) run: no fork may leave a pool process hung on what one of them held,
and no load in progress may hold up the node itself."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from sklearn.dummy import DummyClassifier

from producer import Client
from registry import Registry, keys

from .conftest import Worker, wait_for


def _constant(value: int, dataset) -> DummyClassifier:
    x, y = dataset
    return DummyClassifier(strategy="constant", constant=value).fit(x, y)


def _kill_the_pool_process_mid_import(
    registry: Registry, client: Client, dataset, start_worker, gate: Path
) -> tuple[Worker, psutil.Process]:
    """A node serving v1 starts loading a promoted v2 whose module's import waits for ``gate``
    (tests/gated_import.py); then its one pool process dies (a job killed it, say). Returns the
    node and its dead pool process."""
    from tests.gated_import import GatedClassifier  # the gate is open: imported at once here

    x, y = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    worker = start_worker(PREDICTQ_TEST_IMPORT_GATE=str(gate))
    assert client.wait(client.submit("m", x[:1]), timeout=30).version == 1
    registry.register("m", GatedClassifier(strategy="constant", constant=1).fit(x, y))
    registry.promote("m", 2)  # the node's listener starts loading v2: its import waits
    wait_for(Path(f"{gate}.importing").exists, 30, "the node to start importing v2's module")
    [pool] = psutil.Process(worker.proc.pid).children()
    pool.kill()  # Celery's main loop now wants to fork its replacement
    return worker, pool


@pytest.mark.timeout(90)
def test_a_pool_process_replaced_while_the_node_imports_a_new_version_serves_it(
    registry: Registry, client: Client, dataset, start_worker, r, tmp_path
) -> None:
    """A pool process forked while the node's main process was importing the promoted
    version's module inherited importlib's lock on it, held by a thread it does not have: it
    then waited on that lock forever when it loaded the version itself (seen in CI, with skops).
    """
    gate = tmp_path / "gate"
    worker, _ = _kill_the_pool_process_mid_import(registry, client, dataset, start_worker, gate)
    job = client.submit("m", dataset[0][:1])  # a v2 job waits for the replacement
    # Celery forks a replacement at once or at its next pool check (every 5 s): the import
    # stays in progress past that, or until a process took the job (none does: no process is
    # forked while a model loads).
    with contextlib.suppress(pytest.fail.Exception):
        wait_for(lambda: r.hget(keys.job(job), "status") != "queued", 7, "a process to take it")
    gate.touch()

    res = client.wait(job, timeout=30)
    assert (res.status, res.version, res.predictions) == ("succeeded", 2, [1])
    assert worker.proc.poll() is None


@pytest.mark.timeout(60)
def test_a_node_stops_on_sigterm_while_a_pool_process_awaits_a_load_in_progress(
    registry: Registry, client: Client, dataset, start_worker, r, tmp_path
) -> None:
    """A replacement pool process waits for the node's model load in progress; the node's
    main loop must not wait with it: a load can take minutes (a big model, a slow bucket),
    and meanwhile the node must still obey SIGTERM (a rollout, a scale-down)."""
    gate = tmp_path / "gate"
    worker, pool = _kill_the_pool_process_mid_import(registry, client, dataset, start_worker, gate)
    wait_for(lambda: not psutil.pid_exists(pool.pid), 10, "the pool process to be reaped")
    job = client.submit("m", dataset[0][:1])

    worker.proc.send_signal(signal.SIGTERM)
    try:
        worker.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the node ignored SIGTERM while a model load was in progress")
    finally:
        gate.touch()
    assert worker.proc.returncode == 0, worker.output()
    assert "forked once the model load in progress ends" in worker.output()
    assert r.hget(keys.job(job), "status") == "queued"  # left for another node, not lost


def _kill_the_pool_process_while(worker: Worker, cue: Path, doing: str) -> Callable[[], bool]:
    """Cue a thread of the node (its model module's) until it marks ``<cue>.held``, then kill
    the node's pool process; returns whether a replacement has been forked, to poll."""
    cue.touch()
    wait_for(Path(f"{cue}.held").exists, 10, f"a thread of the node {doing}")
    node = psutil.Process(worker.proc.pid)
    [pool] = node.children()
    pool.kill()
    return lambda: [p.pid for p in node.children()] not in ([], [pool.pid])


@pytest.mark.timeout(60)
def test_a_pool_process_forked_while_a_node_thread_is_inside_a_redis_command_serves(
    registry: Registry, client: Client, dataset, start_worker, tmp_path
) -> None:
    """redis-py's pool resets itself in a forked child under its own lock (redis-py 8): a
    lock a thread of the node held at the fork (the heartbeat's command, the sweeper's) was
    held in the child for good, and its batch consumer never claimed a job."""
    from tests.pool_lock_holder import LockHoldingClassifier

    x, y = dataset
    trigger = tmp_path / "hold"
    registry.register("m", LockHoldingClassifier(strategy="constant", constant=1).fit(x, y),
                      promote=True)  # fmt: skip
    worker = start_worker(PREDICTQ_TEST_HOLD_POOL_LOCK=str(trigger))
    assert client.wait(client.submit("m", x[:1]), timeout=30).predictions == [1]

    replaced = _kill_the_pool_process_while(worker, trigger, "to hold the pool lock")
    wait_for(replaced, 15, "the replacement pool process")  # forked now, the lock held
    Path(f"{trigger}.release").touch()

    res = client.wait(client.submit("m", x[:1]), timeout=30)
    assert (res.status, res.predictions) == ("succeeded", [1])


@pytest.mark.timeout(60)
def test_a_pool_process_forked_while_a_node_thread_is_writing_a_log_line_serves(
    registry: Registry, client: Client, dataset, start_worker, tmp_path
) -> None:
    """A log stream's buffer is locked while a thread writes to it: forked at that instant
    (a log pipe that is full makes the instant long), a pool process inherited it locked and
    waited forever on its own first log line (here: 'loaded m v2', its batch held)."""
    from tests.slow_log_pipe import SlowLogClassifier

    x, y = dataset
    gate = tmp_path / "slow-log"
    registry.register("m", SlowLogClassifier(strategy="constant", constant=1).fit(x, y),
                      promote=True)  # fmt: skip
    registry.register("m", _constant(0, dataset))
    worker = start_worker(PREDICTQ_TEST_SLOW_LOG_PIPE=str(gate))
    assert client.wait(client.submit("m", x[:1]), timeout=30).predictions == [1]

    replaced = _kill_the_pool_process_while(worker, gate, "to be writing a log line")
    # Forked at once (or once the write is through: then the wait runs out).
    with contextlib.suppress(pytest.fail.Exception):
        wait_for(replaced, 5, "the replacement pool process")
    Path(f"{gate}.release").touch()

    res = client.wait(client.submit("m", x[:1], version=2), timeout=30)  # loaded, and logged
    assert (res.status, res.predictions) == ("succeeded", [0])
