"""predictq's model registry: versions, aliases, promotion history and the artifact store."""

from .errors import (
    Forbidden,
    IntegrityError,
    InvalidInput,
    InvalidName,
    InvalidSettings,
    JobIdTaken,
    JobNotCancellable,
    JobNotFound,
    JobTimeout,
    MalformedRequest,
    ModelNotFound,
    NothingToRollBack,
    Overloaded,
    PayloadTooLarge,
    PredictqError,
    RedisUnavailable,
    SchemaWarning,
    Unauthorized,
    UnsupportedMediaType,
    WorkerLost,
)
from .models import Environment, ModelVersion, PromotionEvent, Signature
from .registry import DEFAULT_ALIAS, Registry
from .schema import Column, InputSchema, incompatibilities
from .settings import Settings, get_settings
from .store import ArtifactStore
from .validation import check_probabilities, validate_rows

__all__ = [
    "DEFAULT_ALIAS",
    "ArtifactStore",
    "Column",
    "Environment",
    "Forbidden",
    "InputSchema",
    "IntegrityError",
    "InvalidInput",
    "InvalidName",
    "InvalidSettings",
    "JobIdTaken",
    "JobNotCancellable",
    "JobNotFound",
    "JobTimeout",
    "MalformedRequest",
    "ModelNotFound",
    "ModelVersion",
    "NothingToRollBack",
    "Overloaded",
    "PayloadTooLarge",
    "PredictqError",
    "PromotionEvent",
    "RedisUnavailable",
    "Registry",
    "SchemaWarning",
    "Settings",
    "Signature",
    "Unauthorized",
    "UnsupportedMediaType",
    "WorkerLost",
    "check_probabilities",
    "get_settings",
    "incompatibilities",
    "validate_rows",
]
