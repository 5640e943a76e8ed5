"""The Celery application, configured from the one settings object with safe defaults."""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from registry import Settings, sentinel

celery_app = Celery("predictq")


def celery_config(broker_url: str, settings: Settings) -> dict[str, Any]:
    """Celery settings for predictq; every choice here is deliberate (see the README)."""
    config: dict[str, Any] = {
        "broker_url": broker_url,
        # JSON only: a pickle message is refused before its payload is ever deserialised.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "result_accept_content": ["json"],
        # Results live in predictq's own job records; the Celery results that stock clients read
        # are written by the ledger's scripts with the record (producer/celery_results.py), and
        # Celery must not write its own (a SUCCESS of None) over them.
        "task_ignore_result": True,
        "task_default_queue": settings.queue,
        # Acknowledge after the job ran, and requeue when the process running it dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 4,
        # Lets a promotion recycle pool processes so they share the new version (lifecycle).
        "worker_pool_restarts": True,
        "broker_connection_retry_on_startup": True,
        # An error reply (a full Redis refusing a write, UNBLOCKED after a failover) makes
        # Celery's consumer reconnect instead of stopping the whole node.
        "broker_channel_error_retry": True,
        # Redelivery of unacknowledged tasks, and the hard limit of the one-task-per-job path,
        # follow the same settings as the batch path (visibility timeout > time limit).
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "task_time_limit": settings.time_limit,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }
    if broker_url.startswith("rediss://") and "ssl_cert_reqs" not in broker_url:
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if sentinel.is_sentinel(broker_url):
        # kombu spells Sentinel its own way: one sentinel:// URL per sentinel, the master's
        # name and the sentinels' credentials in the transport options.
        url, options, use_ssl = sentinel.kombu_broker(broker_url)
        config["broker_url"] = url
        config["broker_transport_options"].update(options)
        if use_ssl is not None:
            config["broker_use_ssl"] = use_ssl
    return config


def configure(broker_url: str, settings: Settings) -> Celery:
    """Point the app at ``broker_url``; done at start-up so that importing starts no Redis."""
    celery_app.conf.update(celery_config(broker_url, settings))
    # Importing registers the task and the lifecycle signal handlers.
    from . import lifecycle, tasks  # noqa: F401

    return celery_app
