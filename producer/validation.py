"""Checking job input against a model version's signature, at submission and in the worker."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from registry import InvalidInput, Signature


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Exact types that need no further check beyond finiteness: JSON numbers and Python floats.
_PLAIN = frozenset({int, float})


def _check_number(value: Any, where: str) -> float:
    # bool is an int subclass, and numeric strings would convert silently: refuse both.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{where} is {_describe(value)}: every value must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{where} is {value}: values must be finite (no NaN or Infinity)")
    return number


def _record_to_row(record: Mapping[Any, Any], index: int, names: list[str]) -> list[float]:
    given = set(record)
    missing = [n for n in names if n not in given]
    extra = sorted(str(k) for k in given.difference(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if extra:
            parts.append(f"unknown {extra[:5]}")
        raise InvalidInput(
            f"row {index} has the wrong feature names ({'; '.join(parts)}): "
            f"records must have exactly the keys {names[:10]}{'...' if len(names) > 10 else ''}"
        )
    return [_check_number(record[n], f"row {index} feature {n!r}") for n in names]


def validate_rows(rows: Any, signature: Signature, *, max_rows: int) -> list[list[float]]:
    """Rows as lists of numbers in feature order, or InvalidInput naming the first problem."""
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
    n = signature.n_features
    names = signature.feature_names
    out: list[list[float]] = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            if names is None:
                raise InvalidInput(
                    f"row {i} is a record, but the model was fitted without feature names: "
                    f"send each row as a list of {n} numbers"
                )
            out.append(_record_to_row(row, i, names))
            continue
        if not isinstance(row, Sequence) or isinstance(row, str | bytes):
            raise InvalidInput(
                f"row {i} is {_describe(row)}: each row must be a list of {n} numbers"
                + (" or a record keyed by feature name" if names else "")
            )
        if len(row) != n:
            raise InvalidInput(
                f"row {i} has {len(row)} values, the model expects {n} features"
                + (f" ({names[:10]})" if names else "")
            )
        # Fast path: plain ints and floats, all finite, checked at C speed. Anything else takes
        # the slow path, which names the first bad value.
        if set(map(type, row)) <= _PLAIN and all(map(math.isfinite, row)):
            out.append(row if isinstance(row, list) else list(row))
        else:
            out.append([_check_number(v, f"row {i} column {j}") for j, v in enumerate(row)])
    return out
