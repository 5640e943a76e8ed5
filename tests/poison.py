"""Estimators that misbehave on purpose; workers can import them from the repo."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Canary:
    """Unpickling this creates a file: proof that a pickle's payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


class PoisonClassifier(ClassifierMixin, BaseEstimator):
    """Predicts the sign of the first feature. A first feature of 666 is refused the way
    scikit-learn refuses input (ValueError); 667 breaks the model itself (RuntimeError)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> PoisonClassifier:
        self.n_features_in_ = x.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if np.any(x[:, 0] == 666):
            raise ValueError("poisoned row")
        if np.any(x[:, 0] == 667):
            raise RuntimeError("the model broke")
        return (x[:, 0] > 0).astype(int)


class KillerClassifier(PoisonClassifier):
    """Kills the process that runs it when any first feature is 666: a segfault stand-in."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        if np.any(x[:, 0] == 666):
            os.kill(os.getpid(), signal.SIGKILL)
        return (x[:, 0] > 0).astype(int)


class SlowClassifier(PoisonClassifier):
    """Sleeps ``delay`` seconds per call, and 60 s when any first feature is 777."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(60 if np.any(x[:, 0] == 777) else self.delay)
        return (x[:, 0] > 0).astype(int)


class DecimalOut(PoisonClassifier):
    """Predicts Python Decimals: output JSON cannot carry (the model's fault, not the input's)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        from decimal import Decimal

        return np.array([Decimal("1.5")] * len(x), dtype=object)
