"""Real tabular models, as teams fit them: mixed-type DataFrames, missing values, categories,
string labels, regression and multi-output. Each builder returns (model, training frame)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def customers(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Strings, numbers with missing values and a boolean, like a churn table."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 12_000, n).round(2),
        "plan": rng.choice(["free", "pro", "team"], n),
        "country": rng.choice(["fr", "de", "us", "uk"], n),
        "active": rng.choice([True, False], n),
    })  # fmt: skip
    frame["income"] = frame["income"].where(np.arange(n) % 7 != 3)  # NaN every 7th row
    return frame


def _churn(frame: pd.DataFrame) -> np.ndarray:
    score = (frame["plan"] == "pro") ^ (frame["age"] > 45) ^ frame["active"]
    return np.where(score, "churn", "stay")


def column_transformer() -> tuple[Any, pd.DataFrame]:
    """OneHotEncoder on strings, SimpleImputer + StandardScaler on numbers, a boolean passed
    through, then a classifier with string labels: the most common production model."""
    frame = customers()
    columns = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
        ("strings", OneHotEncoder(handle_unknown="error"), ["plan", "country"]),
        ("flags", "passthrough", ["active"]),
    ])  # fmt: skip
    model = make_pipeline(columns, LogisticRegression(max_iter=1000))
    return model.fit(frame, _churn(frame)), frame


def native_categories() -> tuple[Any, pd.DataFrame]:
    """HistGradientBoosting with NaN and a pandas ``category`` column, taken natively."""
    frame = customers().drop(columns=["country"])
    frame["plan"] = frame["plan"].astype("category")
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    return model.fit(frame, _churn(frame)), frame


def regressor() -> tuple[Any, pd.DataFrame]:
    frame = customers().drop(columns=["plan", "country", "active"])
    target = frame["age"] * 3.0 + frame["income"].fillna(0) / 1000
    model = make_pipeline(SimpleImputer(), Ridge())
    return model.fit(frame, target), frame


def multi_output() -> tuple[Any, pd.DataFrame]:
    frame = customers().drop(columns=["plan", "country", "active"]).fillna(0.0)
    targets = np.column_stack([frame["age"] * 2.0, frame["income"] / 100.0])
    model = RandomForestRegressor(n_estimators=10, random_state=0)
    return model.fit(frame, targets), frame


MODELS = {
    "pipeline": column_transformer,
    "hgb": native_categories,
    "regressor": regressor,
    "multi": multi_output,
}
