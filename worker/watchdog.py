"""The watchdog: a thread in each pool process that enforces the time limit and keeps the lease.

It times each ``predict()`` call on the monotonic clock, so that neither a wait for Redis nor a
clock step counts against a job, and stops its own process when one runs past
``PREDICTQ_TIME_LIMIT``: the check and the kill happen under the lock that ends the call, so the
kill can never land on a later batch. It first marks the claim list ``timeout``, which tells the
sweeper why the process died.

While the process holds a batch it renews the lease on its claim list every few seconds, on a
connection of its own with short timeouts, so that a healthy batch is never taken for lost. It
stops renewing once the batch has been held for ``PREDICTQ_VISIBILITY_TIMEOUT``: a process stuck
that long has its batch taken over, and is itself replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import redis

from registry import Settings, keys
from registry.connection import connect

from . import ledger

log = logging.getLogger(__name__)

_TICK = 0.25


class Watchdog(threading.Thread):
    """The time limit and the lease of one pool process (see the module docstring)."""

    def __init__(self, url: str, settings: Settings, worker: str) -> None:
        super().__init__(name="predictq-watchdog", daemon=True)
        self.settings = settings
        self.worker = worker
        self.redis = connect(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._renew = self.redis.register_script(ledger.RENEW)
        self._set = self.redis.register_script(ledger.SET_EX)
        self._lock = threading.Lock()
        self._predicting_since: float | None = None
        self._token = ""
        self._held_since = 0.0
        self._renewed = 0.0
        self._overheld = False
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Time the ``predict()`` calls inside against the time limit."""
        with self._lock:
            self._predicting_since = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._predicting_since = None

    def hold(self, token: str) -> None:
        """The process now holds the batch ``token`` (a new one resets the clock)."""
        with self._lock:
            if token != self._token:
                self._token = token
                self._held_since = self._renewed = time.monotonic()
                self._overheld = False

    def release(self) -> None:
        """The process finished its batch."""
        with self._lock:
            self._token = ""

    def run(self) -> None:
        while not self._stopping.wait(_TICK):
            try:
                self._check()
            except Exception:  # the watchdog must outlive anything it meets
                log.exception("watchdog check failed")

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            since = self._predicting_since
            if since is not None and now - since > self.settings.time_limit:
                self._stop_for_time(now - since)
            token = self._token
            due = token and now - self._renewed >= ledger.RENEW_EVERY
            if due and now - self._held_since > self.settings.visibility_timeout:
                if not self._overheld:
                    log.error(
                        "this process has held its batch for over %ss "
                        "(PREDICTQ_VISIBILITY_TIMEOUT): its jobs will be recovered elsewhere",
                        self.settings.visibility_timeout,
                    )
                    self._overheld = True
                due = False
        if due:
            try:
                self._renew(
                    keys=[keys.busy(self.worker), keys.LEASES],
                    args=[token, ledger.LEASE_SECONDS, self.worker],
                )
                with self._lock:
                    if self._token == token:
                        self._renewed = now
            except redis.RedisError as e:
                log.debug("lease renewal failed: %s", e)

    def _stop_for_time(self, elapsed: float) -> None:
        """Mark the claim list as stopped for time, then SIGKILL this very process."""
        log.error("predict() has run %.1fs, past PREDICTQ_TIME_LIMIT (%gs): stopping this "
                  "pool process", elapsed, self.settings.time_limit)  # fmt: skip
        with contextlib.suppress(redis.RedisError):
            self._set(keys=[keys.busy(self.worker)], args=["timeout", ledger.BUSY_TTL])
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
