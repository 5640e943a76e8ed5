"""The ``predictq.predict`` Celery task: the path for jobs that arrive through Celery's consumer.

With batching on (the default) pool processes claim jobs straight from the queue and this task
is not used for them; with ``PREDICTQ_BATCHING=false`` every job comes through here, as a batch
of one, through the same code.
"""

from __future__ import annotations

from typing import Any

import orjson

from producer import TASK_NAME

from . import envelope
from .app import celery_app
from .lifecycle import runtime


@celery_app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
def predict(self: Any, *args: Any, **kwargs: Any) -> None:
    """Run one prediction job; its outcome goes to the job record, never to a Celery result."""
    kwargs = envelope.with_positional(args, kwargs)
    rt = runtime()
    raw = orjson.dumps({"task": TASK_NAME, "id": self.request.id, "kwargs": kwargs}).decode()
    job = rt.job(str(self.request.id), kwargs, raw)
    # A key nobody writes: finishing must not clear the batch consumer's claim list.
    rt.run(rt.start([job]), landing=f"{rt.landing}:task")
