"""The naive Celery baseline: one task per job, one ``predict()`` per task, Redis result backend.

The worker is ``celery -A bench.naive_app worker -c 2 --without-mingle --without-gossip``; each
pool process loads every model once, from the joblib paths in ``BENCH_NAIVE_MODELS``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import joblib
import numpy as np
import pandas as pd
from celery import Celery, signals

URL_ENV = "BENCH_NAIVE_URL"
MODELS_ENV = "BENCH_NAIVE_MODELS"
"""JSON object: model name -> joblib path."""

app = Celery("bench_naive")
_models: dict[str, Any] = {}


def use(url: str) -> Celery:
    """Point the app (broker and result backend) at ``url``."""
    app.conf.update(
        broker_url=url,
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


use(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"))


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _load_models(**_: Any) -> None:
    """Each pool process loads its own copy of every model, once."""
    for name, path in json.loads(os.environ.get(MODELS_ENV, "{}")).items():
        _models[name] = joblib.load(path)


@app.task(name="bench.predict")  # type: ignore[untyped-decorator]
def predict(model: str, rows: list[list[float]]) -> list[Any]:
    """Predictions of ``rows`` by ``model``."""
    # Records (the mixed-type model) become a DataFrame, as a hand-written task would do it.
    x = pd.DataFrame(rows) if rows and isinstance(rows[0], dict) else np.asarray(rows, dtype=float)
    result: list[Any] = _models[model].predict(x).tolist()
    return result


@app.task(name="bench.ping")  # type: ignore[untyped-decorator]
def ping() -> int:
    """The pid of the pool process that ran it: how the bench knows the worker is up."""
    return os.getpid()
