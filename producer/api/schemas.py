"""Request and response bodies of the HTTP API (the result record is ``JobResult`` itself)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from registry import ModelVersion, PromotionEvent

from ..contract import MAX_TTL, JobResult

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
# A cell: a number, a boolean, a string, or null for a missing value.
_CELL = (int, float, bool, str, type(None))


def _shape_of_rows(rows: list[Any]) -> list[Any]:
    """Each row a list of cells or a record of cells; the model's schema is checked later.

    Checked here so that a body the OpenAPI schema refuses is refused (422) before any lookup.
    """
    for i, row in enumerate(rows):
        if isinstance(row, list):
            values = row
        elif isinstance(row, dict):
            values = list(row.values())
        else:
            raise ValueError(f"row {i} must be a list of values or a record of values")
        # A fast type check first; the slow one names the value.
        if not set(map(type, values)) <= set(_CELL):
            bad = next(v for v in values if type(v) not in _CELL)
            raise ValueError(
                f"row {i} holds {str(bad)[:40]!r}: each value must be a number, a boolean, a "
                "string or null"
            )
    return rows


_CELL_SCHEMA = {"type": ["number", "boolean", "string", "null"]}
_ROWS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "description": "Rows as lists of values in the model's column order, or as records keyed "
    "by column name (models fitted on named columns). Each value must match the column's type "
    "in the version's input schema (GET /v1/models/{name}/versions/{version}); null is a "
    "missing value, accepted where the column is nullable.",
    "items": {
        "anyOf": [
            {"type": "array", "items": _CELL_SCHEMA},
            {"type": "object", "additionalProperties": _CELL_SCHEMA},
        ]
    },
}
Rows = Annotated[
    list[Any], Field(min_length=1), AfterValidator(_shape_of_rows), WithJsonSchema(_ROWS_SCHEMA)
]
JobId = Annotated[
    str,
    Field(
        pattern=JOB_ID_PATTERN,
        description="Caller-chosen ID: submitting it again returns the same job and enqueues "
        "nothing.",
    ),
]
Ttl = Annotated[int, Field(gt=0, le=MAX_TTL, description="Seconds the result record lives.")]


class _Target(BaseModel):
    # Strict: JSON 0 is not false and "2" is not 2, as the document says.
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(None, ge=1, description="Pin this version (else the alias).")
    alias: str | None = Field(
        None, pattern=NAME_PATTERN, description="Alias to target (default 'production')."
    )
    probabilities: bool = Field(False, description="Also return predict_proba's output.")
    ttl: Ttl | None = None

    @model_validator(mode="after")
    def _one_target(self) -> _Target:
        if self.version is not None and self.alias is not None:
            raise ValueError("give a version or an alias, not both")
        return self


class JobSubmission(_Target):
    """One job: its rows, and what to run them on."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [
            {"rows": [[0.1, 3.0, 7.2, 0.5, 1.0, 2.0]], "probabilities": True},
            {"rows": [[0.1, 3.0, 7.2, 0.5, 1.0, 2.0]], "version": 2, "job_id": "order-42"},
        ]}
    )  # fmt: skip

    rows: Rows
    job_id: JobId | None = None


class BatchItem(BaseModel):
    """One job of a batch."""

    # Strict: JSON 0 is not false and "2" is not 2, as the document says.
    model_config = ConfigDict(extra="forbid", strict=True)

    rows: Rows
    job_id: JobId | None = None


class BatchSubmission(_Target):
    """Many jobs for one model in one request; every job is validated before any is enqueued."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [
            {"jobs": [{"rows": [[0.1, 3.0, 7.2, 0.5, 1.0, 2.0]]},
                      {"rows": [[0.4, 1.0, 2.2, 0.0, 0.3, 9.1]]}]},
        ]}
    )  # fmt: skip

    jobs: list[BatchItem] = Field(min_length=1)


class JobAccepted(BaseModel):
    """A job that was enqueued (or already existed under its caller-chosen ID)."""

    id: str
    status_url: str = Field(description="Where to GET the job's record.")


class BatchAccepted(BaseModel):
    """The jobs of a batch, in the order they were given."""

    jobs: list[JobAccepted]


class JobsWait(BaseModel):
    """Job IDs to read together, and how long to wait for them to end."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"ids": ["order-42", "order-43"], "wait": 10}]},
    )  # fmt: skip

    ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1,
        description="Up to PREDICTQ_API_MAX_BATCH_JOBS job IDs; a repeated ID is answered once.",
    )
    wait: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds to wait for every job to end (capped by PREDICTQ_API_MAX_WAIT); "
        "it answers as soon as all are final. 0: answer at once.",
    )


class JobsWaited(BaseModel):
    """The jobs of a bulk wait: the final ones' records, and which are not final or not found."""

    jobs: list[JobResult] = Field(
        description="The record of each job that is final, in the order the IDs were given."
    )
    pending: list[str] = Field(description="Jobs not final when the wait ended.")
    not_found: list[str] = Field(
        description="IDs with no record (never submitted, or expired after their TTL), or "
        "submitted with another API key."
    )


class FieldError(BaseModel):
    """One field that failed validation."""

    loc: list[str | int] = Field(description="Path to the field, e.g. ['body', 'rows', 0].")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: a stable code, a message that says how to fix it, field errors."""

    code: str = Field(description="Stable error code, e.g. invalid_input, job_not_found.")
    message: str
    errors: list[FieldError] | None = Field(
        None, description="Field-level validation errors (422 only)."
    )


class ModelSummary(BaseModel):
    """A model and where its aliases point."""

    name: str
    aliases: dict[str, int]


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(BaseModel):
    """A model's versions, aliases and promotion history."""

    name: str
    aliases: dict[str, int]
    versions: list[ModelVersion]
    history: list[PromotionEvent]


class AliasMoved(BaseModel):
    """Where an alias points after a promotion or a rollback."""

    model: str
    alias: str
    version: int


class Health(BaseModel):
    status: str = Field(description="'ok': the process serves requests.")


class Readiness(BaseModel):
    """Whether this gateway can do useful work."""

    ready: bool
    redis: bool = Field(description="Redis answered PING.")
    workers: bool = Field(description="At least one worker's heartbeat is alive.")
    consumers: bool = Field(
        description="The pool processes are not all failing to take jobs (always true with "
        "batching off, where Celery's own consumer takes them)."
    )
