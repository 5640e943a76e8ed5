"""A version's typed input schema: its columns, what each holds, and whether it may be missing.

The schema is inferred at registration, the way MLflow's ``infer_signature`` does it: from an
input example (a pandas DataFrame or a list of records) when one is given, else from what the
fitted estimator tells (feature names, the categories of fitted encoders, native categorical
and missing-value support). Failing both, every column is a number, which is what a model
fitted on a numpy array takes.

Jobs are checked against it at submission and again in the worker (registry/validation.py),
and the worker builds the model's input from it (:func:`model_input`): a DataFrame with the
schema's dtypes for a model fitted on one, a float array for an all-numeric model.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from .errors import InvalidInput

ColumnType = Literal["number", "integer", "boolean", "string", "category"]
NUMERIC: frozenset[str] = frozenset({"number", "integer"})


class Column(BaseModel):
    """One input column."""

    name: str
    type: ColumnType = Field(
        "number",
        description="number, integer, boolean, string, or category (a string or number from a "
        "known set of values, which the model decides how to treat when it sees a new one).",
    )
    nullable: bool = Field(False, description="Whether null (or NaN) is accepted.")
    categories: list[Any] | None = Field(
        None, description="A category column's known values, as the model was fitted on them."
    )

    def describe(self) -> str:
        """``plan: category(free, pro, team), nullable``."""
        kind: str = self.type
        if self.categories is not None:
            shown = ", ".join(str(c) for c in self.categories[:8])
            kind += f"({shown}{', ...' if len(self.categories) > 8 else ''})"
        return f"{self.name}: {kind}{', nullable' if self.nullable else ''}"


class InputSchema(BaseModel):
    """The columns every input row has, in the order the model takes them."""

    columns: list[Column]
    named: bool = Field(
        description="Whether the model was fitted with feature names: rows may then be "
        "records keyed by column name."
    )
    frame: bool = Field(
        False,
        description="Whether the worker hands the model a pandas DataFrame (a model fitted on "
        "one that selects columns by name or takes non-numeric ones) rather than a float array.",
    )
    source: Literal["example", "estimator", "default", "signature"] = Field(
        "default",
        description="What the schema was inferred from (signature: an MLflow model's, typed "
        "further from the estimator).",
    )

    # Cached: both are read for every job submitted, and a schema is not changed once built.
    @functools.cached_property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @functools.cached_property
    def plain(self) -> bool:
        """Whether every column is a number that may not be missing: the fast path (the
        schema of every model fitted on a numpy array)."""
        return all(c.type == "number" and not c.nullable for c in self.columns)

    def describe(self) -> list[str]:
        return [c.describe() for c in self.columns]


def default_schema(n_features: int, feature_names: list[str] | None) -> InputSchema:
    """All numbers, none missing: what predictq assumed before schemas existed."""
    names = feature_names or [f"x{i}" for i in range(n_features)]
    return InputSchema(
        columns=[Column(name=n) for n in names], named=feature_names is not None, source="default"
    )


# -- inference from an example ---------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """None, a float NaN, or pandas' NA/NaT."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, np.floating):
        return bool(np.isnan(value))
    return type(value).__name__ in ("NAType", "NaTType")


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    raise InvalidInput(
        f"the input example holds {type(value).__name__} {str(value)[:40]!r}: columns may "
        "hold numbers, booleans and strings"
    )


def _column_of_values(name: str, values: Sequence[Any]) -> Column:
    present = [v for v in values if not is_missing(v)]
    nullable = len(present) < len(values)
    kinds = {_kind(v) for v in present}
    if not kinds:
        raise InvalidInput(
            f"column {name!r} of the input example holds only missing values: give at least "
            "one row where it has a value, so that its type is known"
        )
    if kinds <= {"integer", "number"}:
        kind = "integer" if kinds == {"integer"} else "number"
    elif len(kinds) == 1:
        kind = kinds.pop()
    else:
        raise InvalidInput(
            f"column {name!r} of the input example mixes {sorted(kinds)}: every value of a "
            "column must have one type"
        )
    return Column(name=name, type=kind, nullable=nullable)


def _frame_columns(frame: Any) -> list[Column]:
    """Columns of a pandas DataFrame, by dtype (object columns by their values)."""
    import pandas as pd

    out = []
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        nullable = bool(series.isna().any())
        if isinstance(dtype, pd.CategoricalDtype):
            categories = [json_value(c) for c in dtype.categories]
            out.append(Column(name=str(name), type="category", nullable=nullable,
                              categories=categories))  # fmt: skip
        elif pd.api.types.is_bool_dtype(dtype):
            out.append(Column(name=str(name), type="boolean", nullable=nullable))
        elif pd.api.types.is_integer_dtype(dtype):
            out.append(Column(name=str(name), type="integer", nullable=nullable))
        elif pd.api.types.is_float_dtype(dtype):
            out.append(Column(name=str(name), type="number", nullable=nullable))
        else:
            out.append(_column_of_values(str(name), series.tolist()))
    return out


def _records_columns(records: Sequence[Mapping[str, Any]]) -> list[Column]:
    names: list[str] = []
    for record in records:
        if not isinstance(record, Mapping):
            raise InvalidInput(
                "input_example must be a pandas DataFrame or a list of records "
                "({column: value, ...})"
            )
        names += [str(k) for k in record if str(k) not in names]
    return [_column_of_values(n, [r.get(n) for r in records]) for n in names]


def example_columns(example: Any) -> list[Column]:
    """The columns of an input example: a DataFrame, or a non-empty list of records."""
    if hasattr(example, "columns") and hasattr(example, "dtypes"):
        if len(example) == 0:
            raise InvalidInput("the input example has no rows: give at least one")
        return _frame_columns(example)
    if isinstance(example, Sequence) and not isinstance(example, str | bytes) and example:
        return _records_columns(example)
    raise InvalidInput(
        "input_example must be a pandas DataFrame or a non-empty list of records "
        "({column: value, ...})"
    )


# -- inference from the fitted estimator -------------------------------------------------------


def json_value(value: Any) -> Any:
    """A JSON-friendly copy of a numpy scalar or array."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _first_steps(estimator: Any) -> Iterator[Any]:
    """The estimator, then the first step of each Pipeline it starts with."""
    while True:
        yield estimator
        steps = getattr(estimator, "steps", None)
        if not steps:
            return
        estimator = steps[0][1]


def _column_transformer(estimator: Any) -> Any | None:
    for step in _first_steps(estimator):
        if hasattr(step, "transformers_") and hasattr(step, "_columns"):
            return step
    return None


def _encoder_categories(transformer: Any) -> tuple[list[list[Any]] | None, bool]:
    """The categories_ of the first encoder in ``transformer`` (a Pipeline or one step), and
    whether a step before or at it takes missing values."""
    nullable = False
    steps = [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]
    for step in steps:
        # SimpleImputer, KNNImputer, IterativeImputer and their subclasses fill missing values.
        if any(cls.__name__.endswith("Imputer") for cls in type(step).__mro__):
            nullable = True
        categories = getattr(step, "categories_", None)
        if categories is not None:
            return [list(c) for c in categories], nullable
    return None, nullable


def _typed_from_categories(column: Column, categories: list[Any], nullable: bool) -> None:
    known = [json_value(c) for c in categories if not is_missing(c)]
    column.nullable = column.nullable or nullable or len(known) < len(categories)
    if known and all(isinstance(c, bool | np.bool_) for c in known):
        column.type = "boolean"
    else:
        column.type = "category"
        column.categories = known


def _selected(columns: Any, names: list[str]) -> list[int]:
    """Indices of the columns a fitted ColumnTransformer entry took: a slice, a name, an
    index, a boolean mask, or a list of names or indices."""
    if isinstance(columns, slice):
        return list(range(len(names)))[columns]
    chosen = np.atleast_1d(np.asarray(columns))
    if chosen.dtype == bool:
        return [i for i, keep in enumerate(chosen.tolist()) if keep]
    return [names.index(c) if isinstance(c, str) else int(c) for c in chosen.tolist()]


def _allow_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # older scikit-learn, or an estimator without tags
        return False


def estimator_columns(estimator: Any, columns: list[Column]) -> list[str]:
    """Type ``columns`` from what the fitted estimator tells; returns what it could not.

    - a ColumnTransformer's encoders give their columns' categories, and an imputer in front
      of a column makes it nullable;
    - a HistGradientBoosting model's native categorical columns are categories, and a model
      that takes NaN itself makes every column nullable.
    """
    names = [c.name for c in columns]
    untyped: list[str] = []
    final = estimator
    while getattr(final, "steps", None):
        final = final.steps[-1][1]
    ct = _column_transformer(estimator)
    if ct is not None:
        for _name, transformer, selection in ct.transformers_:
            if transformer in ("drop", "passthrough"):
                continue
            try:
                chosen = _selected(selection, names)
            except (ValueError, TypeError, IndexError):
                continue
            categories, nullable = _encoder_categories(transformer)
            for position, index in enumerate(chosen):
                column = columns[index]
                column.nullable = column.nullable or nullable
                if categories is not None and position < len(categories):
                    _typed_from_categories(column, categories[position], nullable)
    else:
        for step in _first_steps(estimator):
            categories, nullable = _encoder_categories(step)
            if categories is not None and len(categories) == len(columns):
                for column, known in zip(columns, categories, strict=True):
                    _typed_from_categories(column, known, nullable)
            if nullable:
                for column in columns:
                    column.nullable = True
            if categories is not None:
                break
    preprocessor = getattr(final, "_preprocessor", None)
    native = getattr(final, "is_categorical_", None)
    if native is not None and preprocessor is not None and final is estimator:
        encoders = [t for _n, t, _c in preprocessor.transformers_ if hasattr(t, "categories_")]
        if encoders:
            known_lists = iter(encoders[0].categories_)
            for column, is_cat in zip(columns, np.asarray(native).tolist(), strict=False):
                if is_cat:
                    _typed_from_categories(column, list(next(known_lists, [])), False)
    if _allow_nan(estimator):
        for column in columns:
            column.nullable = True
    # An encoder with string categories that no column could be matched to: the model needs
    # strings somewhere, and only an example can say where.
    if not any(c.type in ("category", "string") for c in columns) and _object_encoder(estimator):
        untyped = [c.name for c in columns]
    return untyped


def _fitted_parts(estimator: Any) -> Iterator[Any]:
    """The estimator and every fitted part of it: Pipeline steps, ColumnTransformer
    transformers (their fitted copies), and meta-estimators' fitted inner estimators."""
    todo = [estimator]
    seen: set[int] = set()
    while todo:
        part = todo.pop()
        if id(part) in seen or isinstance(part, str):
            continue
        seen.add(id(part))
        yield part
        todo += [s for _n, s in getattr(part, "steps", None) or []]
        todo += [t for _n, t, _c in getattr(part, "transformers_", None) or []]
        for attribute in ("estimator_", "base_estimator_", "final_estimator_"):
            inner = getattr(part, attribute, None)
            if inner is not None:
                todo.append(inner)


def _object_encoder(estimator: Any) -> bool:
    """Whether some fitted part encodes string categories."""
    for part in _fitted_parts(estimator):
        for categories in getattr(part, "categories_", None) or []:
            if getattr(categories, "dtype", None) == np.dtype(object):
                return True
    return False


def needs_frame(estimator: Any, columns: list[Column], named: bool) -> bool:
    """Whether the model must get a DataFrame: it was fitted on one, and it selects columns by
    name or takes non-numeric ones. Other models keep the float array fast path."""
    if not named:
        return False
    if any(c.type not in NUMERIC for c in columns):
        return True
    return _column_transformer(estimator) is not None


def _matched(
    columns: list[Column], feature_names: list[str] | None, n_features: int, what: str
) -> list[Column]:
    """``columns`` in the model's feature order; InvalidInput when they are not its features."""
    given = [c.name for c in columns]
    if feature_names is not None:
        if sorted(given) != sorted(feature_names):
            missing = [n for n in feature_names if n not in given]
            extra = [n for n in given if n not in feature_names]
            raise InvalidInput(
                f"{what}'s columns do not match the model's feature names "
                f"(missing {missing[:5]}, unknown {extra[:5]})"
            )
        by_name = {c.name: c for c in columns}
        return [by_name[n] for n in feature_names]
    if len(columns) != n_features:
        raise InvalidInput(f"{what} has {len(columns)} columns, the model takes {n_features}")
    return columns


def infer_schema(
    estimator: Any,
    n_features: int,
    feature_names: list[str] | None,
    example: Any = None,
    *,
    declared: Sequence[Column] | None = None,
) -> tuple[InputSchema, list[str]]:
    """The input schema of a fitted estimator, and warnings for the one who registers it.

    ``declared`` columns (an MLflow signature's) take the place of an example; when they are
    not the model's features, the schema is read off the estimator instead, with a warning.
    """
    warnings: list[str] = []
    named = feature_names is not None
    columns: list[Column] | None = None
    source: Literal["example", "estimator", "default", "signature"] = "example"
    if example is not None:
        try:
            columns = _matched(example_columns(example), feature_names, n_features,
                               "the input example")  # fmt: skip
        except InvalidInput as e:
            raise InvalidInput(f"{e}: give an example of the rows the model was fitted on") from e
    elif declared is not None:
        source = "signature"
        try:
            columns = _matched([c.model_copy() for c in declared], feature_names, n_features,
                               "the signature")  # fmt: skip
        except InvalidInput as e:
            warnings.append(f"{e}, so the schema is read off the fitted model instead")
    if columns is not None:
        # The estimator can still say more: that an imputer takes missing values, say.
        learned = [Column(name=c.name, type=c.type) for c in columns]
        estimator_columns(estimator, learned)
        for column, seen in zip(columns, learned, strict=True):
            column.nullable = column.nullable or seen.nullable
            if column.type == "category" and column.categories is None:
                column.categories = seen.categories
    else:
        columns = default_schema(n_features, feature_names).columns
        untyped = estimator_columns(estimator, columns)
        source = "estimator" if any(
            c.type != "number" or c.nullable for c in columns
        ) else "default"  # fmt: skip
        if untyped:
            warnings.append(
                "the model encodes string categories, but which columns hold strings could "
                "not be read off it, so every column is taken as a number: register it with "
                "an input example (input_example=df.head(), or --input-example sample.csv)"
            )
    schema = InputSchema(
        columns=columns, named=named, frame=needs_frame(estimator, columns, named), source=source
    )
    return schema, warnings


# -- building the model's input ----------------------------------------------------------------


def model_input(rows: list[list[Any]], schema: InputSchema) -> Any:
    """What ``predict()`` gets for validated rows (lists in column order, None for missing).

    A float array for numeric columns (None becomes NaN); a DataFrame with the schema's dtypes
    when the model was fitted on one (see ``InputSchema.frame``); else an object array.
    """
    if not schema.frame:
        if all(c.type in NUMERIC for c in schema.columns):
            return np.asarray(rows, dtype=np.float64)
        return np.asarray([[np.nan if v is None else v for v in row] for row in rows], dtype=object)
    import pandas as pd

    data: dict[str, Any] = {}
    for column, values in zip(schema.columns, zip(*rows, strict=True), strict=True):
        data[column.name] = _array(column, values)
    return pd.DataFrame(data, copy=False)


@contextlib.contextmanager
def quiet_names(schema: InputSchema) -> Iterator[None]:
    """Around predict(): a model fitted on named columns that gets a float array (the fast
    path) would warn on every call that the array has no column names, and the rows were
    checked by name already. Only such models need the filter, which costs more than a small
    batch's predict()."""
    if not schema.named or schema.frame:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        yield


def _array(column: Column, values: tuple[Any, ...]) -> Any:
    kind = column.type
    if kind == "number":
        return np.asarray(values, dtype=np.float64)
    if kind == "integer":
        if column.nullable and None in values:
            return np.asarray(values, dtype=np.float64)
        return np.asarray(values, dtype=np.int64)
    if kind == "boolean" and not (column.nullable and None in values):
        return np.asarray(values, dtype=bool)
    # Strings, categories and booleans with gaps: as given, missing as NaN (what pandas
    # reads from an empty CSV cell, and what scikit-learn's imputers look for).
    out = np.empty(len(values), dtype=object)
    out[:] = [np.nan if v is None else v for v in values]
    return out


# -- compatibility ---------------------------------------------------------------------------


def incompatibilities(old: InputSchema, new: InputSchema) -> list[str]:
    """What callers of ``old`` would have refused, or misread, by ``new``; empty when none.

    Missing or new required columns, reordered columns (list rows would be read into the wrong
    columns), and narrower types. Newly nullable columns and changed category values are fine.
    """
    found: list[str] = []
    old_by, new_by = {c.name: c for c in old.columns}, {c.name: c for c in new.columns}
    gone = [n for n in old_by if n not in new_by]
    added = [n for n in new_by if n not in old_by]
    if gone:
        found.append(f"columns removed: {', '.join(gone)}")
    if added:
        found.append(f"columns added: {', '.join(added)}")
    if not gone and not added and old.names != new.names:
        found.append(f"columns reordered: {', '.join(old.names)} -> {', '.join(new.names)}")
    for name, was in old_by.items():
        now = new_by.get(name)
        if now is None:
            continue
        widened = was.type == "integer" and now.type == "number"
        strings = {was.type, now.type} <= {"string", "category"}
        if was.type != now.type and not widened and not strings:
            found.append(f"{name}: {was.type} -> {now.type}")
        if was.nullable and not now.nullable:
            found.append(f"{name}: no longer takes missing values")
    return found
