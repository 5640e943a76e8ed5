"""Estimators that misbehave on purpose; workers can import them from the repo."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class PoisonClassifier(ClassifierMixin, BaseEstimator):
    """Predicts the sign of the first feature, and raises when any first feature is 666."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> PoisonClassifier:
        self.n_features_in_ = x.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if np.any(x[:, 0] == 666):
            raise ValueError("poisoned row")
        return (x[:, 0] > 0).astype(int)
