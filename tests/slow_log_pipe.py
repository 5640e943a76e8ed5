"""A model class whose module, once a node's main process imports it (loading the version),
lets the test stall one log write of that process mid-way: a thread blocked writing to a full
log pipe (a slow log collector) at the instant Celery forks.

When the file named by PREDICTQ_TEST_SLOW_LOG_PIPE appears, a thread adds a log handler to the
root logger, whose stream's writes wait until ``<file>.release`` exists (30 s at most), and logs
a line through it: ``<file>.held`` marks that the write has begun.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

from sklearn.dummy import DummyClassifier

_gate = os.environ.get("PREDICTQ_TEST_SLOW_LOG_PIPE")


class _SlowPipe(io.RawIOBase):
    """The raw end of a pipe that takes every write only once the test says so."""

    def __init__(self, gate: Path) -> None:
        self.gate = gate

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        Path(f"{self.gate}.held").touch()
        deadline = time.monotonic() + 30
        while not Path(f"{self.gate}.release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the pipe is full: nothing to synchronise with in this process
        return len(data)


def _log_slowly(gate: Path) -> None:
    while not gate.exists():
        time.sleep(0.05)  # the test's cue
    stream = io.TextIOWrapper(io.BufferedWriter(_SlowPipe(gate)), line_buffering=True)
    logging.getLogger().addHandler(logging.StreamHandler(stream))
    logging.getLogger("tests.slow_log_pipe").warning("a line the log pipe is slow to take")


if _gate:  # set for the worker only: its main process imports this when it loads the model
    threading.Thread(target=_log_slowly, args=(Path(_gate),), daemon=True).start()


class SlowLogClassifier(DummyClassifier):
    """A DummyClassifier whose module can stall a log write of the node on the test's cue."""
