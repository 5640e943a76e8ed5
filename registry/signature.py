"""Reading a fitted estimator's signature and the environment it was saved in."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import joblib
import numpy as np

from .errors import InvalidInput
from .models import Environment, Signature
from .schema import Column, InputSchema, infer_schema, json_value, model_input, quiet_names
from .validation import validate_rows


def signature_of(
    estimator: Any, input_example: Any = None, *, declared: Sequence[Column] | None = None
) -> tuple[Signature, list[str]]:
    """The signature of a fitted estimator, and warnings for the one who registers it.

    ``declared`` input columns (an MLflow signature's) type the schema when no example does.

    Refuses objects that are not fitted predictors, and an ``input_example`` the model cannot
    predict on: what registers is what serves.
    """
    if not hasattr(estimator, "predict"):
        raise InvalidInput(
            f"{type(estimator).__name__} has no predict(): register a fitted scikit-learn estimator"
        )
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise InvalidInput(
            f"{type(estimator).__name__} has no n_features_in_: fit it before registering"
        )
    raw_names = getattr(estimator, "feature_names_in_", None)
    names = [str(n) for n in raw_names] if raw_names is not None else None
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, list):  # one array per output of a multi-output classifier
        classes = [json_value(c) for c in classes]
    schema, warnings = infer_schema(
        estimator, int(n_features), names, input_example, declared=declared
    )
    outputs = int(getattr(estimator, "n_outputs_", 1) or 1)
    if input_example is not None:
        outputs = _try_example(estimator, schema, input_example)
    cls = type(estimator)
    signature = Signature(
        n_features=int(n_features),
        feature_names=names,
        classes=json_value(classes) if classes is not None else None,
        has_predict_proba=hasattr(estimator, "predict_proba"),
        estimator=f"{cls.__module__}.{cls.__qualname__}",
        input_schema=schema,
        outputs=outputs,
    )
    return signature, warnings


def _try_example(estimator: Any, schema: InputSchema, example: Any) -> int:
    """Predict on the first rows of the example, as a worker would; returns outputs per row."""
    records = example.head(5).to_dict("records") if hasattr(example, "head") else example[:5]
    rows = validate_rows(records, schema, max_rows=5)
    try:
        with quiet_names(schema):
            predictions = np.asarray(estimator.predict(model_input(rows, schema)))
    except Exception as e:
        raise InvalidInput(
            f"the model could not predict on its input example ({type(e).__name__}: "
            f"{first_line(e)}): give an example of the rows it was fitted on"
        ) from e
    return int(predictions.shape[1]) if predictions.ndim == 2 else 1


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def current_environment() -> Environment:
    """The versions of Python and the libraries in this process."""
    # Imported here, not at module level: importing scikit-learn takes seconds, and commands
    # that never touch a model (`predictq result`, `status`, `dead list`) should not pay them.
    import sklearn

    return Environment(
        python=platform.python_version(),
        sklearn=sklearn.__version__,
        numpy=np.__version__,
        joblib=joblib.__version__,
    )
