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
MIXED = "mixed"  # a ColumnTransformer pipeline over strings, numbers with gaps and a boolean


@dataclass
class Models:
    """Fitted estimators by name, their joblib files, and the rows jobs are made of."""

    x: np.ndarray
    estimators: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    promo_v2: Any = None
    # The mixed-type table: the DataFrame the pipeline was fitted on, and its rows as records
    # (None for a missing value), as a JSON client sends them.
    mixed_frame: Any = None
    fit_seconds: dict[str, float] = field(default_factory=dict)

    def records(self, n: int) -> list[dict[str, Any]]:
        """``n`` mixed-type rows as records, cycling through the table."""
        table: list[dict[str, Any]] = self.mixed_frame.to_dict("records")
        for record in table:
            if record["income"] != record["income"]:  # NaN: missing
                record["income"] = None
        return [table[i % len(table)] for i in range(n)]

    def rows(self, n: int) -> list[list[float]]:
        """``n`` rows as plain lists (cycling through the data when ``n`` is larger)."""
        reps = -(-n // len(self.x))
        rows: list[list[float]] = np.tile(self.x, (reps, 1))[:n].tolist()
        return rows


def _data(data_rows: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=data_rows, n_features=N_FEATURES, n_informative=10, random_state=0
    )
    return x, y


def _save(models: Models, out_dir: Path) -> Models:
    """Dump every estimator to ``out_dir`` (the naive worker loads them from there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, est in models.estimators.items():
        models.paths[name] = out_dir / f"{name}.joblib"
        joblib.dump(est, models.paths[name])
    return models


def build_lr(data_rows: int, out_dir: Path) -> Models:
    """The LogisticRegression alone (as :func:`build` fits it), saved under ``out_dir``."""
    x, y = _data(data_rows)
    t = time.perf_counter()
    lr = LogisticRegression(max_iter=1000).fit(x, y)
    models = Models(x=x, estimators={LR: lr}, fit_seconds={LR: time.perf_counter() - t})
    return _save(models, out_dir)


def build(data_rows: int, rf_trees: int, rf_fit_rows: int, out_dir: Path) -> Models:
    """The LogisticRegression, the random forest and the promotion pair, saved under ``out_dir``."""
    x, y = _data(data_rows)
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
    t = time.perf_counter()
    frame, mixed = _mixed(data_rows)
    fit_seconds[MIXED] = time.perf_counter() - t
    models = Models(x=x, estimators={LR: lr, RF: rf, MIXED: mixed}, promo_v2=mirror,
                    fit_seconds=fit_seconds, mixed_frame=frame)  # fmt: skip
    return _save(models, out_dir)


def _mixed(n: int) -> tuple[Any, Any]:
    """A churn-like table and the pipeline most teams serve: OneHotEncoder on strings,
    SimpleImputer and StandardScaler on numbers, a boolean passed through, string labels."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 12_000, n).round(2),
        "plan": rng.choice(["free", "pro", "team"], n),
        "country": rng.choice(["fr", "de", "us", "uk", "es", "it"], n),
        "active": rng.choice([True, False], n),
    })  # fmt: skip
    frame["income"] = frame["income"].where(np.arange(n) % 7 != 3)
    labels = np.where((frame["plan"] == "pro") ^ (frame["age"] > 45), "churn", "stay")
    columns = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
        ("strings", OneHotEncoder(handle_unknown="ignore"), ["plan", "country"]),
        ("flags", "passthrough", ["active"]),
    ])  # fmt: skip
    model = make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(frame, labels)
    return frame, model


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
