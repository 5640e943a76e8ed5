"""Review of issue 10: the custom-code module check (registry/modules.py)."""

from __future__ import annotations

import io
import pickle
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from producer import Client
from registry import MissingModule, Registry
from registry.modules import needed_modules

from ..poison import Canary

pytestmark = pytest.mark.timeout(120)


class NotebookModel(ClassifierMixin, BaseEstimator):
    """A class defined where the model was trained: a notebook, a script (``__main__``)."""

    def fit(self, x, y):  # type: ignore[no-untyped-def]
        self.n_features_in_ = x.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x):  # type: ignore[no-untyped-def]
        return (x[:, 0] > 0).astype(int)


@pytest.mark.parametrize("compress", [0, 3])
def test_scanning_a_hostile_artifact_runs_none_of_it(tmp_path: Path, compress: int) -> None:
    canary = tmp_path / "ran"
    buffer = io.BytesIO()
    joblib.dump({"model": Canary(canary), "w": np.arange(10.0)}, buffer, compress=compress)
    assert needed_modules(buffer.getvalue(), "joblib") is not None
    assert needed_modules(pickle.dumps(Canary(canary), protocol=2), "joblib") is not None
    assert not canary.exists()


def test_a_class_defined_in_main_is_refused_at_registration_or_named_by_the_worker(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    """Registration passes '__main__' as importable (every process has one), so a notebook's
    model registers, then no worker can load it: the jobs fail 'internal', not
    'missing_module'."""
    x, y = dataset
    main = sys.modules["__main__"]
    original = NotebookModel.__module__
    NotebookModel.__module__ = "__main__"
    main.NotebookModel = NotebookModel  # type: ignore[attr-defined]
    try:
        try:
            meta = registry.register("nb", NotebookModel().fit(x, y), promote=True)
        except MissingModule:
            return  # refused at registration: fine
    finally:
        NotebookModel.__module__ = original
        del main.NotebookModel  # type: ignore[attr-defined]
    assert meta.modules is not None and "__main__" in meta.modules
    start_worker()
    res = client.wait(client.submit("nb", x[:1]), timeout=30)
    assert res.status == "failed" and res.error is not None
    assert res.error.code == "missing_module", (res.error.code, res.error.message)
