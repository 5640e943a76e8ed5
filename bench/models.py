"""The models and rows every system is measured on, fitted with fixed random states."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

N_FEATURES = 20
LR = "lr"
RF = "rf"
PROMO = "lrpromo"  # v1 is the LogisticRegression, v2 its mirror image (every prediction flips)
BIG = "bigrf"


@dataclass
class Models:
    """Fitted estimators by name, their joblib files, and the rows jobs are made of."""

    x: np.ndarray
    estimators: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    promo_v2: Any = None
    fit_seconds: dict[str, float] = field(default_factory=dict)

    def rows(self, n: int) -> list[list[float]]:
        """``n`` rows as plain lists (cycling through the data when ``n`` is larger)."""
        reps = -(-n // len(self.x))
        rows: list[list[float]] = np.tile(self.x, (reps, 1))[:n].tolist()
        return rows


def build(data_rows: int, rf_trees: int, rf_fit_rows: int, out_dir: Path) -> Models:
    """The LogisticRegression, the random forest and the promotion pair, saved under ``out_dir``."""
    x, y = make_classification(
        n_samples=data_rows, n_features=N_FEATURES, n_informative=10, random_state=0
    )
    fit_seconds: dict[str, float] = {}
    t = time.perf_counter()
    lr = LogisticRegression(max_iter=1000).fit(x, y)
    fit_seconds[LR] = time.perf_counter() - t
    t = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=rf_trees, n_jobs=2, random_state=0)
    rf.fit(x[:rf_fit_rows], y[:rf_fit_rows])
    rf.n_jobs = None  # predict() single-threaded, as in a worker process
    fit_seconds[RF] = time.perf_counter() - t
    mirror = LogisticRegression(max_iter=1000).fit(x, 1 - y)
    models = Models(x=x, estimators={LR: lr, RF: rf}, promo_v2=mirror, fit_seconds=fit_seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, est in models.estimators.items():
        models.paths[name] = out_dir / f"{name}.joblib"
        joblib.dump(est, models.paths[name])
    return models


def build_big(rows: int, trees: int) -> Any:
    """A large forest (fully grown, random splits on noisy labels) for the memory scenario."""
    x, y = make_classification(
        n_samples=rows, n_features=N_FEATURES, n_informative=10, flip_y=0.3, random_state=1
    )
    forest = RandomForestClassifier(
        n_estimators=trees, max_features=1, bootstrap=False, n_jobs=os.cpu_count(), random_state=1
    ).fit(x, y)
    forest.n_jobs = None
    return forest
