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
    Unauthorized,
    UnsupportedMediaType,
    WorkerLost,
)
from .models import Environment, ModelVersion, PromotionEvent, Signature
from .registry import DEFAULT_ALIAS, Registry
from .settings import Settings, get_settings
from .store import ArtifactStore

__all__ = [
    "DEFAULT_ALIAS",
    "ArtifactStore",
    "Environment",
    "Forbidden",
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
    "Settings",
    "Signature",
    "Unauthorized",
    "UnsupportedMediaType",
    "WorkerLost",
    "get_settings",
]
