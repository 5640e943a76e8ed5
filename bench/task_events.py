"""Scenario (f): what task events cost. The bulk single-row scenario, events off and on.

Events are a worker start-up setting, so each leg starts a fresh ``predictq worker`` (with
``PREDICTQ_TASK_EVENTS`` off or on), warms it up, runs the bulk scenario and stops it; legs
alternate off, on, off, on... so that a machine that slows down over the run does not favour one
side. A listener subscribed to the events exchange (as Flower is) counts the events of each leg,
so the figures also show that every job's events arrived.
"""

from __future__ import annotations

import statistics
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery

from . import scenarios
from .systems import Predictq, wait_for

OFF, ON = "predictq", "pq+events"


class Listener(threading.Thread):
    """Celery's EventReceiver in a thread, counting task events by type (Flower's view);
    workers' own heartbeats are not counted."""

    def __init__(self, url: str) -> None:
        super().__init__(name="bench-event-listener", daemon=True)
        self.app = Celery(broker=url)
        self.counts: Counter[str] = Counter()
        self.ready = threading.Event()
        self.receiver: Any = None

    def _count(self, event: dict[str, Any]) -> None:
        if event["type"].startswith("task-"):
            self.counts[event["type"]] += 1

    def run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self._count})
            for _ in self.receiver.consume(limit=None, timeout=None, wakeup=False):
                self.ready.set()

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(10)


def measure(
    pq: Predictq,
    model: str,
    rows: list[list[float]],
    expected: list[Any],
    rounds: int,
    tmp: Path,
    timeout: float,
    log: Callable[[str], None],
    concurrency: int = 2,
) -> list[scenarios.Figures]:
    """Rows of figures: one per leg (system ``predictq`` off, ``pq+events`` on)."""
    listener = Listener(pq.url)
    listener.start()
    out: list[scenarios.Figures] = []
    try:
        # consume() yields once it is subscribed: events sent before would be missed.
        wait_for(listener.ready.is_set, 30, "the event listener")
        for i in range(rounds):
            for events in (False, True):
                system = ON if events else OFF
                worker = pq.start_worker(concurrency, tmp / f"worker-events-{i}-{int(events)}.log",
                                         task_events=events)  # fmt: skip
                try:
                    warm = rows[: 4 * concurrency]
                    before = sum(listener.counts.values())
                    pq.client.wait_many(pq.client.submit_many(model, [[r] for r in warm]),
                                        timeout=60)  # fmt: skip
                    if events:
                        wanted = before + 3 * len(warm)
                        wait_for(lambda w=wanted: sum(listener.counts.values()) >= w, 30,
                                 "the warm-up's task events")  # fmt: skip
                    pq.clear_jobs()
                    before = sum(listener.counts.values())
                    figures = scenarios.bulk_predictq(pq, model, rows, expected, timeout)
                    if events:
                        # Events may trail the last result by one publish: wait for them.
                        wanted = before + 3 * len(rows)
                        wait_for(lambda w=wanted: sum(listener.counts.values()) >= w, 30,
                                 "the last task events")  # fmt: skip
                    received = sum(listener.counts.values()) - before
                    figures.update(scenario="events", system=system, round=i,
                                   events_received=received)  # fmt: skip
                    out.append(figures)
                    log(f"  round {i} events {'on ' if events else 'off'}: "
                        f"{figures['jobs_per_s']:,.0f} jobs/s, "
                        f"{figures['events_received']:,} events")  # fmt: skip
                finally:
                    pq.reaper.stop(worker.proc)
                    pq.clear_jobs()
    finally:
        listener.stop()
    return out


def summary(rows: list[scenarios.Figures]) -> dict[str, Any] | None:
    """Median jobs/s with events off and on, and their ratio."""
    off = [r["jobs_per_s"] for r in rows if r.get("scenario") == "events" and r["system"] == OFF]
    on = [r["jobs_per_s"] for r in rows if r.get("scenario") == "events" and r["system"] == ON]
    if not off or not on:
        return None
    off_median, on_median = statistics.median(off), statistics.median(on)
    return {
        "rounds": min(len(off), len(on)),
        "off_jobs_per_s": off_median,
        "on_jobs_per_s": on_median,
        "ratio_on_off": on_median / off_median,
    }
