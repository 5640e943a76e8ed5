"""predictq's producer side: the job contract, the client and the submit commands."""

from registry import (
    InvalidInput,
    JobNotFound,
    JobTimeout,
    ModelNotFound,
    Overloaded,
    PredictqError,
)
from registry.validation import validate_rows

from .client import Client
from .contract import (
    BATCH_TASK_NAME,
    FINAL_STATUSES,
    TASK_NAME,
    JobError,
    JobRequest,
    JobResult,
    JobStatus,
)
from .score import ScoreProgress, ScoreSummary

__all__ = [
    "BATCH_TASK_NAME",
    "FINAL_STATUSES",
    "TASK_NAME",
    "Client",
    "InvalidInput",
    "JobError",
    "JobNotFound",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "JobTimeout",
    "ModelNotFound",
    "Overloaded",
    "PredictqError",
    "ScoreProgress",
    "ScoreSummary",
    "validate_rows",
]
