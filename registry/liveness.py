"""What the batch consumers of worker pool processes report about themselves.

Each consumer writes its state to the ``predictq:consumers`` hash (field: the process, value:
JSON ``{state, at, error}``) at least every few seconds while it loops. A consumer in the middle
of a long batch reports nothing until the batch ends, so a report counts as current for the
time limit plus a margin. ``predictq status`` and the HTTP ``/readyz`` read it through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Beyond the time limit, how old a report may be and still count as current.
_MARGIN = 30.0


@dataclass(frozen=True)
class ConsumerState:
    """One pool process's consumer, as it last reported."""

    worker: str
    state: str
    at: float
    error: str | None

    @property
    def node(self) -> str:
        return self.worker.rpartition(":")[0]


def consumer_states(reports: dict[Any, Any], now: float, time_limit: float) -> list[ConsumerState]:
    """The current reports of ``HGETALL predictq:consumers``; stale ones are left out."""
    states = []
    for worker, raw in reports.items():
        try:
            entry = orjson.loads(raw)
            state = ConsumerState(str(worker), str(entry["state"]), float(entry["at"]),
                                  entry.get("error"))  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a process that registered itself and has not reported yet
        if now - state.at <= time_limit + _MARGIN:
            states.append(state)
    return sorted(states, key=lambda s: s.worker)


def consuming(states: list[ConsumerState]) -> bool:
    """Whether the consumers may be taking jobs: one says it is, or none reported yet (a node
    starting, or a pool process just forked again after a promotion). Only consumers that all
    report failures count as not taking any."""
    return not states or any(s.state == "consuming" for s in states)
