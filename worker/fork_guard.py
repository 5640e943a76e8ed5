"""Log writes in progress in a node's threads are finished before its main process forks.

A log stream's buffer is locked while a thread writes to it (io.BufferedWriter's own lock), and
a write to a full pipe (a log collector that is slow to read) holds it a while. A pool process
forked meanwhile inherits that lock held by a thread it does not have, and waits on its first
log line forever, a batch in hand perhaps ('loaded m v2'). Every logging handler writes under
its own lock: the fork takes them all first, so that no write is in progress (logging gives the
child fresh handler locks). A handler stuck longer than ``_PATIENCE`` is not waited for: a fork
then risks what it did before, rather than the node's main loop stopping with the log pipe.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["hold_log_writes"]

# Seconds a fork waits, in all, for log writes in progress.
_PATIENCE = 10.0


def _handlers() -> list[logging.Handler]:
    """Every handler of every logger (a copy taken at once: other threads may add loggers)."""
    loggers = [logging.getLogger(), *list(logging.Logger.manager.loggerDict.values())]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            found[id(handler)] = handler
    return list(found.values())


def hold_log_writes() -> None:
    """Make every fork of this process first wait for the log writes of its other threads.

    Call it before ModelCache.hold_forks: hooks registered earlier run later, and a model load
    the fork waits for logs (so the fork must not hold the handlers while it waits for a load).
    """
    held: list[Any] = []

    def before() -> None:
        deadline = time.monotonic() + _PATIENCE
        for handler in _handlers():
            lock = handler.lock
            if lock is not None and lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                held.append(lock)

    def after_in_parent() -> None:
        while held:
            held.pop().release()

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=held.clear)
