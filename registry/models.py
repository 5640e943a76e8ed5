"""The registry's data model: a version's metadata and a promotion event."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from .schema import InputSchema, default_schema


class Signature(BaseModel):
    """What a fitted estimator expects and answers, read off it at registration."""

    n_features: int = Field(description="n_features_in_: columns every input row must have.")
    feature_names: list[str] | None = Field(
        None, description="feature_names_in_, when the model was fitted on named columns."
    )
    classes: list[Any] | None = Field(None, description="classes_, for classifiers.")
    has_predict_proba: bool = Field(description="Whether the estimator has predict_proba.")
    estimator: str = Field(description="The estimator's class, as module.Class.")
    input_schema: InputSchema = Field(
        None,  # type: ignore[assignment]  # filled in by _default_schema
        description="The typed input columns. Versions registered before schemas existed take "
        "numbers only, the schema they are given when read.",
    )
    outputs: int = Field(1, description="Predictions per row: more than 1 for multi-output.")

    @model_validator(mode="after")
    def _default_schema(self) -> Signature:
        if self.input_schema is None:
            self.input_schema = default_schema(self.n_features, self.feature_names)
        return self


class Environment(BaseModel):
    """Library versions the artifact was saved with."""

    python: str
    sklearn: str
    numpy: str
    joblib: str


class ModelVersion(BaseModel):
    """One registered version of a model, as stored in Redis and in the artifact store."""

    name: str
    version: int
    sha256: str = Field(description="SHA-256 of the artifact's bytes; checked before loading.")
    size: int = Field(description="Artifact size in bytes.")
    format: Literal["joblib", "skops"] = Field(
        "joblib", description="joblib (pickle) or skops (allow-listed types only)."
    )
    signature: Signature
    environment: Environment
    created_at: datetime
    created_by: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    modules: list[str] | None = Field(
        None,
        description="Top-level modules that loading the artifact imports, read from its bytes "
        "at registration (None when they could not be read). Every worker needs them.",
    )
    archived_at: datetime | None = Field(
        None, description="When the version was archived: kept for audit, never served."
    )
    archived_by: str | None = Field(None, description="Who archived it.")

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class PromotionEvent(BaseModel):
    """One entry of a model's promotion history: who moved an alias (or archived, unarchived or
    deleted ``to_version``), when, from and to."""

    action: str = Field(description="'promote', 'rollback', 'archive', 'unarchive' or 'delete'.")
    alias: str | None = Field(
        None,
        description="The alias moved; None when a version was archived, unarchived or deleted.",
    )
    from_version: int | None
    to_version: int
    who: str
    at: datetime
