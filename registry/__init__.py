"""predictq's model registry: versions, aliases, promotion history and the artifact store."""

from .errors import (
    IntegrityError,
    InvalidInput,
    InvalidName,
    JobNotFound,
    JobTimeout,
    ModelNotFound,
    NothingToRollBack,
    PredictqError,
    RedisUnavailable,
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
    "IntegrityError",
    "InvalidInput",
    "InvalidName",
    "JobNotFound",
    "JobTimeout",
    "ModelNotFound",
    "ModelVersion",
    "NothingToRollBack",
    "PredictqError",
    "PromotionEvent",
    "RedisUnavailable",
    "Registry",
    "Settings",
    "Signature",
    "WorkerLost",
    "get_settings",
]
