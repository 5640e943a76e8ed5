"""The ``predictq.predict`` Celery task: a thin shim from a message to the runtime."""

from __future__ import annotations

from typing import Any

from producer import TASK_NAME

from .app import celery_app
from .lifecycle import runtime


@celery_app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
def predict(self: Any, *args: Any, **kwargs: Any) -> None:
    """Run one prediction job; its outcome goes to the job record, never to a Celery result."""
    job_id = str(self.request.id)
    if args:
        # Positional (model, rows) from hand-written clients are accepted as well.
        kwargs = {**dict(zip(("model", "rows"), args, strict=False)), **kwargs}
    runtime(self.request.hostname).run(job_id, kwargs)
