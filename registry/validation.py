"""Checking job input against a version's input schema, at submission and in the worker.

Valid rows come out as lists in the schema's column order, holding JSON values: numbers,
booleans, strings, and None for a missing value. That is what a message carries and what
``schema.model_input`` turns into the model's input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InvalidInput
from .models import ModelVersion, Signature
from .schema import Column, InputSchema, is_missing


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Exact types that need no further check beyond finiteness: JSON numbers and Python floats.
_PLAIN = frozenset({int, float})

# (row index, column name): formatted only when a value is refused.
Where = tuple[int, str]
Check = Callable[[Any, Where], Any]


def _check_number(value: Any, where: str) -> float:
    # bool is an int subclass, and numeric strings would convert silently: refuse both.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{where} is {_describe(value)}: every value must be a number")
    number = _float(value)
    if not math.isfinite(number):
        raise InvalidInput(
            f"{where} is {_describe(value)}: values must be finite (no NaN or Infinity)"
        )
    return number


def _float(value: Any) -> float:
    """``float(value)``, infinity for an integer too large for a float (refused as such)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


# What a message can carry: JSON integers are 64-bit.
_INT64 = (-(2**63), 2**63 - 1)


def _at(where: Where) -> str:
    return f"row {where[0]} column {where[1]!r}"


def _refuse(where: Where, expected: str, value: Any) -> InvalidInput:
    return InvalidInput(f"{_at(where)}: expected {expected}, got {_describe(value)}")


def _missing(column: Column, where: Where) -> None:
    if not column.nullable:
        raise InvalidInput(
            f"{_at(where)}: a value is missing (null or NaN), and this column takes no missing "
            f"values: send {_EXPECTED[column.type]}"
        )


_EXPECTED = {
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "category": "one of its categories",
}


def _checker(column: Column) -> Check:
    """A function that returns a column's value as JSON, or raises InvalidInput."""
    kind = column.type

    def number(value: Any, where: Where) -> Any:
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            if is_missing(value):
                return _missing(column, where)
            raise _refuse(where, "a number", value)
        out = _float(value)
        if math.isnan(out):
            return _missing(column, where)
        if math.isinf(out):
            raise _refuse(where, "a finite number", value)
        # A JSON message carries 64-bit integers; a larger one travels as the float it is.
        return value if isinstance(value, int) and _INT64[0] <= value <= _INT64[1] else out

    def integer(value: Any, where: Where) -> Any:
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            if is_missing(value):
                return _missing(column, where)
            raise _refuse(where, "an integer", value)
        if isinstance(value, numbers.Integral):
            if not _INT64[0] <= int(value) <= _INT64[1]:
                raise _refuse(where, "an integer that fits in 64 bits", value)
            return int(value)
        out = _float(value)
        if math.isnan(out):
            return _missing(column, where)
        if not out.is_integer() or not _INT64[0] <= out <= _INT64[1]:
            raise _refuse(where, "an integer", value)
        return int(out)

    def boolean(value: Any, where: Where) -> Any:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if is_missing(value):
            return _missing(column, where)
        raise _refuse(where, "true or false", value)

    def string(value: Any, where: Where) -> Any:
        if isinstance(value, str):
            if value.isascii():
                return value
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate: not text a message can carry
                raise _refuse(where, "a string of valid Unicode", value) from None
            return value
        if is_missing(value):
            return _missing(column, where)
        raise _refuse(where, "a string", value)

    known = column.categories or []
    numeric = bool(known) and all(
        isinstance(c, numbers.Real) and not isinstance(c, bool) for c in known
    )
    textual = bool(known) and all(isinstance(c, str) for c in known)

    def category(value: Any, where: Where) -> Any:
        # A value outside the known categories goes to the model, which decides: an encoder
        # may ignore it, or refuse it (then the job fails alone), a tree may treat it as missing.
        if is_missing(value):
            return _missing(column, where)
        if textual:
            return string(value, where)
        if numeric:
            return number(value, where)
        if isinstance(value, str):
            return string(value, where)
        if isinstance(value, bool | np.bool_ | numbers.Real):
            return number(value, where) if not isinstance(value, bool | np.bool_) else bool(value)
        raise _refuse(where, "a string or a number", value)

    return {"number": number, "integer": integer, "boolean": boolean, "string": string,
            "category": category}[kind]  # fmt: skip


_CHECKS: dict[int, tuple[InputSchema, list[Check]]] = {}


def _checks(schema: InputSchema) -> list[Check]:
    """The column checkers of ``schema``, built once per schema object (versions are
    immutable, and the client and workers keep their metadata)."""
    found = _CHECKS.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_CHECKS) > 1024:
            _CHECKS.clear()
        found = _CHECKS[id(schema)] = (schema, [_checker(c) for c in schema.columns])
    return found[1]


def _keyed(record: Mapping[Any, Any], index: int, names: list[str]) -> list[Any]:
    """A record's values in column order, or InvalidInput naming missing and unknown keys."""
    try:
        if len(record) == len(names):
            return [record[n] for n in names]
    except KeyError:
        pass
    given = set(record)
    missing = [n for n in names if n not in given]
    extra = sorted(str(k) for k in given.difference(names))
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}")
    if extra:
        parts.append(f"unknown {extra[:5]}")
    raise InvalidInput(
        f"row {index} has the wrong feature names ({'; '.join(parts)}): "
        f"records must have exactly the keys {names[:10]}{'...' if len(names) > 10 else ''}"
    )


def _finite(row: Sequence[Any]) -> bool:
    try:
        return all(map(math.isfinite, row))
    except OverflowError:  # an int too large for a float: the slow path refuses it
        return False


def validate_rows(rows: Any, schema: InputSchema | Signature, *, max_rows: int) -> list[list[Any]]:
    """Rows as lists in column order, or InvalidInput naming the first problem."""
    if isinstance(schema, Signature):
        schema = schema.input_schema
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise InvalidInput(
            f"rows must be a list of rows, got {type(rows).__name__}: "
            "send [[x1, x2, ...], ...] or [{name: value, ...}, ...]"
        )
    if not rows:
        raise InvalidInput("rows is empty: a job needs at least one row")
    if len(rows) > max_rows:
        raise InvalidInput(
            f"{len(rows)} rows is more than the limit of {max_rows} per job: "
            "split the input into several jobs (submit_many), or raise PREDICTQ_MAX_ROWS"
        )
    names = schema.names
    n = len(names)
    plain = schema.plain
    checks = None if plain else _checks(schema)
    out: list[list[Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            if not schema.named:
                raise InvalidInput(
                    f"row {i} is a record, but the model was fitted without feature names: "
                    f"send each row as a list of {n} values"
                )
            row = _keyed(row, i, names)
        elif not isinstance(row, Sequence) or isinstance(row, str | bytes):
            raise InvalidInput(
                f"row {i} is {_describe(row)}: each row must be a list of {n} values"
                + (" or a record keyed by feature name" if schema.named else "")
            )
        elif len(row) != n:
            raise InvalidInput(
                f"row {i} has {len(row)} values, the model expects {n} features"
                + (f" ({names[:10]})" if schema.named else "")
            )
        if checks is None:
            # Fast path: plain ints and floats, all finite, checked at C speed. Anything else
            # takes the slow path, which names the first bad value.
            if set(map(type, row)) <= _PLAIN and _finite(row):
                out.append(row if isinstance(row, list) else list(row))
            else:
                label = "feature" if schema.named else "column"
                out.append([
                    _check_number(v, f"row {i} {label} {names[j]!r}" if schema.named
                                  else f"row {i} column {j}")
                    for j, v in enumerate(row)
                ])  # fmt: skip
            continue
        out.append([check(v, (i, name)) for check, v, name in zip(checks, row, names, strict=True)])
    return out


def check_probabilities(meta: ModelVersion) -> None:
    """InvalidInput unless ``meta``'s model answers probabilities for its rows."""
    sig = meta.signature
    if not sig.has_predict_proba:
        raise InvalidInput(
            f"{meta.name} v{meta.version} ({sig.estimator}) has no predict_proba: "
            "submit without probabilities",
            model=meta.name,
            version=meta.version,
        )
    if sig.outputs > 1:
        raise InvalidInput(
            f"{meta.name} v{meta.version} predicts {sig.outputs} outputs per row; "
            "probabilities are served for single-output models only: submit without them",
            model=meta.name,
            version=meta.version,
        )
