"""predictq's worker side: the Celery app and task, the model cache and hot swap."""

from .app import celery_app, configure
from .model_cache import LoadedModel, ModelCache
from .runtime import Runtime

__all__ = ["LoadedModel", "ModelCache", "Runtime", "celery_app", "configure"]
