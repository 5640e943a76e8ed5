"""The job contract: the result record every caller sees, in Python and over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

MAX_TTL = 10 * 365 * 86_400
"""Longest result TTL a job may ask for (Redis refuses far larger expiry times)."""

TASK_NAME = "predictq.predict"
"""The Celery task name; its keyword arguments are those of :class:`JobRequest`."""

BATCH_TASK_NAME = "predictq.predict_batch"
"""The task of one message that carries many jobs: the keyword arguments of :class:`JobRequest`
without ``rows``, plus ``jobs``, a list of ``{"id": ..., "rows": [...]}``. ``submit_many`` sends
these: one message, one queue element and one parse in the worker serve many jobs."""


class JobRequest(BaseModel):
    """The keyword arguments of a ``predictq.predict`` Celery task (what a message carries)."""

    model: str
    rows: list[Any]
    version: int | None = None
    alias: str = "production"
    probabilities: bool = False
    ttl: int | None = Field(None, gt=0, le=MAX_TTL)


class JobError(BaseModel):
    """Why a job failed: a stable code and a message that says how to fix it."""

    code: str
    message: str


class JobResult(BaseModel):
    """A job's record: its status, and its result once it has one."""

    id: str
    status: JobStatus
    model: str
    alias: str | None = None
    version: int | None = Field(None, description="The model version that ran (or is pinned).")
    predictions: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = Field(
        None, description="The classes each row's probabilities are for, in the same order."
    )
    error: JobError | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    worker: str | None = None

    @property
    def done(self) -> bool:
        """Whether the job reached a final status."""
        return self.status in FINAL_STATUSES


def timestamp(value: str | None) -> datetime | None:
    """A datetime from the epoch seconds a job record stores."""
    return datetime.fromtimestamp(float(value), UTC) if value else None
