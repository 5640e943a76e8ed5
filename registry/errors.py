"""predictq's one error hierarchy.

Each class carries a stable ``code`` (the result record's ``error.code``), the HTTP status the
gateway answers with and the exit status of the ``predictq`` command line, so one name means the
same thing in Python, in Redis, over HTTP and in a script.
"""

from __future__ import annotations

from typing import Any

import redis


class SchemaWarning(UserWarning):
    """Warned at registration when a model's input columns could not be fully typed."""


class PredictqError(Exception):
    """Raised when predictq cannot do what was asked; the root of every predictq error."""

    code: str = "internal"
    http_status: int = 500
    # The command line exits with this (README, "Exit codes and scripting"): 1 failure,
    # 2 bad input, 3 not found. Scripts branch on it, so a class keeps its number.
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        version: int | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.version = version
        self.job_id = job_id

    def to_dict(self) -> dict[str, str]:
        """The ``{code, message}`` shape a result record stores."""
        return {"code": self.code, "message": self.message}


class InvalidInput(PredictqError):
    """Raised when job input does not match the model's signature or the input limits."""

    code = "invalid_input"
    http_status = 422
    exit_code = 2


class InvalidName(InvalidInput):
    """Raised when a model or alias name has characters predictq does not allow."""


class ModelNotFound(PredictqError):
    """Raised when a model, version or alias does not exist in the registry."""

    code = "model_not_found"
    http_status = 404
    exit_code = 3


class NothingToRollBack(PredictqError):
    """Raised when an alias has no earlier version to roll back to."""

    code = "nothing_to_roll_back"
    http_status = 409


class VersionConflict(PredictqError):
    """Raised when a version's state forbids a change: archiving or deleting a version an alias
    serves, or promoting an archived one."""

    code = "version_conflict"
    http_status = 409


class IncompatibleSchema(VersionConflict):
    """Raised when a promotion would serve an input schema its alias's callers do not send."""

    code = "incompatible_schema"


class MissingModule(PredictqError):
    """Raised when an artifact needs a Python module that cannot be imported here."""

    code = "missing_module"
    http_status = 500

    def __init__(
        self, message: str, *, module: str, model: str | None = None, version: int | None = None
    ) -> None:
        super().__init__(message, model=model, version=version)
        self.module = module


class IntegrityError(PredictqError):
    """Raised when an artifact's SHA-256 does not match the one the registry recorded."""

    code = "integrity_error"
    http_status = 500


class MlflowUnavailable(PredictqError):
    """Raised when MLflow cannot be reached or refuses a request while importing or following
    a model: a tracking server that is down, a wrong MLFLOW_TRACKING_URI, no permission."""

    code = "mlflow_unavailable"
    http_status = 503


class ArtifactUnavailable(PredictqError):
    """Raised when the artifact store cannot be used: a missing bucket, no credentials, a
    network failure, or an fsspec backend that is not installed."""

    code = "artifact_unavailable"
    http_status = 503


class JobNotFound(PredictqError):
    """Raised when a job ID was never submitted or its record has expired."""

    code = "job_not_found"
    http_status = 404
    exit_code = 3


class JobTimeout(PredictqError):
    """Raised when a job ran past its time limit, or a wait ran out before the job finished."""

    code = "timeout"
    http_status = 504


class WorkerLost(PredictqError):
    """Raised when a job kept killing the worker process that ran it."""

    code = "worker_lost"
    http_status = 500


class RedisUnavailable(PredictqError, redis.ConnectionError):
    """Raised when Redis cannot be reached or used: down, wrong URL or password, too old.

    It is also a ``redis.ConnectionError``, so code that retries on redis-py's connection
    errors keeps doing so. ``transient`` is False when waiting will not help (auth, URL, TLS,
    server version).
    """

    code = "redis_unavailable"
    http_status = 503

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    # redis-py's repr drops the message ("network:ConnectionError"); keep Python's.
    __repr__ = Exception.__repr__


class Overloaded(PredictqError):
    """Raised when a submission is refused whole because the queue or Redis memory is full."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 1, model: str | None = None) -> None:
        super().__init__(message, model=model)
        self.retry_after = retry_after  # seconds worth waiting before a retry


class NotReplicated(PredictqError):
    """Raised when a submission was enqueued on the primary but fewer replicas than
    PREDICTQ_MIN_REPLICAS confirmed it in time: a failover now could lose it.

    ``job_ids`` are the submission's IDs, so that it can be resubmitted with them: a job ID
    that exists is never enqueued twice. A submission stops at its first unconfirmed chunk.
    """

    code = "not_replicated"
    http_status = 503

    def __init__(
        self, message: str, *, job_ids: list[str] | None = None, enqueued: int = 0
    ) -> None:
        super().__init__(message, job_id=job_ids[0] if job_ids else None)
        self.job_ids = job_ids or []
        self.enqueued = enqueued  # how many of job_ids went in (the first ones, for new IDs)
        self.retry_after = 1


class InvalidSettings(PredictqError):
    """Raised when settings are missing, malformed or unsafe (for example, no API keys)."""

    code = "invalid_settings"
    http_status = 500


class JobNotCancellable(PredictqError):
    """Raised when a job to cancel has already started or ended."""

    code = "not_cancellable"
    http_status = 409


class JobIdTaken(PredictqError):
    """Raised when a caller-chosen job ID already belongs to another caller."""

    code = "job_id_taken"
    http_status = 409


class Unauthorized(PredictqError):
    """Raised when an HTTP request carries no API key, or one predictq does not know."""

    code = "unauthorized"
    http_status = 401


class Forbidden(PredictqError):
    """Raised when an API key lacks the scope an HTTP operation needs."""

    code = "forbidden"
    http_status = 403


class MalformedRequest(PredictqError):
    """Raised when an HTTP request body is not strict JSON (syntax, NaN/Infinity, nesting)."""

    code = "malformed_request"
    http_status = 400


class PayloadTooLarge(PredictqError):
    """Raised when an HTTP request body is larger than the configured limit."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(PredictqError):
    """Raised when an HTTP request body is not sent as application/json."""

    code = "unsupported_media_type"
    http_status = 415


ERROR_CODES: dict[str, type[PredictqError]] = {
    cls.code: cls
    for cls in (
        PredictqError,
        InvalidInput,
        ModelNotFound,
        NothingToRollBack,
        VersionConflict,
        MissingModule,
        IntegrityError,
        ArtifactUnavailable,
        MlflowUnavailable,
        JobNotFound,
        JobTimeout,
        WorkerLost,
        RedisUnavailable,
        Overloaded,
        NotReplicated,
        InvalidSettings,
        JobNotCancellable,
        JobIdTaken,
        Unauthorized,
        Forbidden,
        MalformedRequest,
        PayloadTooLarge,
        UnsupportedMediaType,
    )
}


def error_for(code: str, message: str, **context: Any) -> PredictqError:
    """The error a job's ``{code, message}`` stands for, as the class that has that code."""
    found: type[PredictqError] = PredictqError
    todo: list[type[PredictqError]] = [PredictqError]
    while todo:
        cls = todo.pop()
        if cls.__dict__.get("code") == code:
            found = cls
            break
        todo += cls.__subclasses__()
    return found(message, **context)
