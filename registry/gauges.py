"""The cluster-wide metric gauges, read from Redis at scrape time.

Worker nodes and ``predictq api`` both export them, so a backlog is visible with no worker
running (what scaling to zero needs), and an idle or dead worker never reports a stale value.
Every exporter reports the same values: aggregate them with ``max``, not ``sum``.
prometheus_client is imported only when a scrape happens, so that importing this module does not
fix prometheus_client's mode before a worker node sets ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import redis

from .errors import PredictqError
from .settings import Settings
from .status import snapshot

__all__ = ["GAUGES", "ClusterCollector", "render"]

log = logging.getLogger(__name__)

#: name -> help, of every gauge the collector reports.
GAUGES: dict[str, str] = {
    "predictq_queue_jobs": "Jobs waiting, per queue (the isolation queue included).",
    "predictq_running_jobs": "Jobs running on live worker nodes.",
    "predictq_dead_letters": "Entries in the dead-letter list.",
    "predictq_workers": "Live worker nodes (heartbeats).",
    "predictq_served_version": "Version each alias of each model points at.",
}


class ClusterCollector:
    """A prometheus_client collector of ``GAUGES``; ``client`` gives the Redis client to read."""

    def __init__(self, client: Callable[[], redis.Redis], settings: Settings) -> None:
        self._client = client
        self.settings = settings

    def describe(self) -> list[Any]:
        return []  # collected only at scrape time, never at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            snap = snapshot(self._client(), self.settings, full=False)
        except (redis.RedisError, PredictqError) as e:
            # The per-process counters still go out; these series are missing this once.
            log.warning("cluster gauges not read: %s", e)
            return
        queue = GaugeMetricFamily("predictq_queue_jobs", GAUGES["predictq_queue_jobs"],
                                  labels=["queue"])  # fmt: skip
        for name, depth in snap.queues.items():
            queue.add_metric([name], depth.jobs)
        yield queue
        yield GaugeMetricFamily("predictq_running_jobs", GAUGES["predictq_running_jobs"],
                                value=snap.running)  # fmt: skip
        yield GaugeMetricFamily("predictq_dead_letters", GAUGES["predictq_dead_letters"],
                                value=snap.dead_letters)  # fmt: skip
        yield GaugeMetricFamily("predictq_workers", GAUGES["predictq_workers"],
                                value=len(snap.workers))  # fmt: skip
        served = GaugeMetricFamily("predictq_served_version", GAUGES["predictq_served_version"],
                                   labels=["model", "alias"])  # fmt: skip
        for model, aliases in snap.served.items():
            for alias, version in aliases.items():
                served.add_metric([model, alias], version)
        yield served


def render(client: redis.Redis, settings: Settings) -> bytes:
    """The gauges in Prometheus's text format (what ``predictq api`` serves on /metrics)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(lambda: client, settings))
    return bytes(generate_latest(registry))
