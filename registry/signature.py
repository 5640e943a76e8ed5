"""Reading a fitted estimator's signature and the environment it was saved in."""

from __future__ import annotations

import platform
from typing import Any

import joblib
import numpy as np
import sklearn

from .errors import InvalidInput
from .models import Environment, Signature


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a numpy scalar or array."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def signature_of(estimator: Any) -> Signature:
    """The signature of a fitted estimator; refuses objects that are not fitted predictors."""
    if not hasattr(estimator, "predict"):
        raise InvalidInput(
            f"{type(estimator).__name__} has no predict(): register a fitted scikit-learn estimator"
        )
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise InvalidInput(
            f"{type(estimator).__name__} has no n_features_in_: fit it before registering"
        )
    names = getattr(estimator, "feature_names_in_", None)
    classes = getattr(estimator, "classes_", None)
    cls = type(estimator)
    return Signature(
        n_features=int(n_features),
        feature_names=[str(n) for n in names] if names is not None else None,
        classes=_plain(classes) if classes is not None else None,
        has_predict_proba=hasattr(estimator, "predict_proba"),
        estimator=f"{cls.__module__}.{cls.__qualname__}",
    )


def current_environment() -> Environment:
    """The versions of Python and the libraries in this process."""
    return Environment(
        python=platform.python_version(),
        sklearn=sklearn.__version__,
        numpy=np.__version__,
        joblib=joblib.__version__,
    )
