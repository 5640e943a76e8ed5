"""A model class whose module, once a node's main process imports it (loading the version),
lets the test make a thread of that process hold its Redis client's pool lock: the instant,
widened, at which the heartbeat or the sweeper is inside a command when Celery forks.

When the file named by PREDICTQ_TEST_HOLD_POOL_LOCK appears, a thread takes the pool lock of
the node's Redis client, marks ``<file>.held``, and keeps it until ``<file>.release`` exists
(30 s at most).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sklearn.dummy import DummyClassifier

_trigger = os.environ.get("PREDICTQ_TEST_HOLD_POOL_LOCK")


def _hold(trigger: Path) -> None:
    while not trigger.exists():
        time.sleep(0.05)  # the test's cue: nothing to synchronise with in this process
    from worker.lifecycle import runtime

    with runtime().redis.connection_pool._lock:
        Path(f"{trigger}.held").touch()
        deadline = time.monotonic() + 30
        while not Path(f"{trigger}.release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


if _trigger:  # set for the worker only: its main process imports this when it loads the model
    threading.Thread(target=_hold, args=(Path(_trigger),), daemon=True).start()


class LockHoldingClassifier(DummyClassifier):
    """A DummyClassifier whose module holds the node's pool lock on the test's cue."""
