"""The input schema as pure logic: validation of typed cells, and what makes two versions'
schemas incompatible (no Redis, no worker)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry import InvalidInput
from registry.schema import Column, InputSchema, default_schema, incompatibilities, model_input
from registry.validation import validate_rows

pytestmark = pytest.mark.timeout(30)


def _schema(*columns: Column, named: bool = True, frame: bool = True) -> InputSchema:
    return InputSchema(columns=list(columns), named=named, frame=frame)


MIXED = _schema(
    Column(name="n", type="number", nullable=True),
    Column(name="i", type="integer"),
    Column(name="b", type="boolean"),
    Column(name="s", type="string"),
    Column(name="c", type="category", categories=[1, 2, 3]),
)


def test_typed_rows_come_out_in_column_order_with_none_for_missing() -> None:
    rows = [
        {"s": "x", "i": 3.0, "b": np.bool_(True), "n": float("nan"), "c": 2},
        [np.float32(1.5), np.int64(4), False, "y", 7],  # an unknown category goes to the model
    ]
    assert validate_rows(rows, MIXED, max_rows=10) == [
        [None, 3, True, "x", 2],
        [1.5, 4, False, "y", 7],
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1, 2**70, True, "x", 1], "column 'i': expected an integer that fits in 64 bits"),
        ([10**400, 1, True, "x", 1], "column 'n': expected a finite number"),
        ([1, 1, 1, "x", 1], "column 'b': expected true or false, got 1"),
        ([1, 1, True, "x", "one"], "column 'c': expected a number, got 'one'"),
        ([1, None, True, "x", 1], "column 'i': a value is missing"),
        ([1, 1, True, ["x"], 1], "column 's': expected a string, got ['x']"),
    ],
)
def test_each_refusal_names_row_column_expected_and_given(row: list, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_rows([row], MIXED, max_rows=10)
    assert caught.value.message.startswith("row 0 ")
    assert message in caught.value.message


def test_numeric_models_keep_the_fast_path_and_refuse_huge_integers() -> None:
    plain = default_schema(2, None)
    assert plain.plain
    assert validate_rows([[1, 2.5]], plain, max_rows=1) == [[1, 2.5]]
    with pytest.raises(InvalidInput, match="values must be finite"):
        validate_rows([[10**400, 1]], plain, max_rows=1)
    x = model_input([[1, 2.5], [3, None]], plain)
    assert x.dtype == np.float64 and math.isnan(x[1, 1])


def test_a_frame_model_gets_the_schemas_dtypes() -> None:
    frame = model_input([[None, 3, True, "x", 2], [1.5, 4, False, None, 7]], MIXED)
    assert list(frame.columns) == ["n", "i", "b", "s", "c"]
    assert [str(t) for t in frame.dtypes[:3]] == ["float64", "int64", "bool"]
    # Strings stay strings (pandas 3 reads them as its "str" dtype, pandas 2 as object).
    assert str(frame.dtypes["s"]) in ("object", "str") and frame["s"][0] == "x"
    assert frame["s"].isna().tolist() == [False, True]


def test_incompatibilities_list_what_callers_of_the_old_version_would_meet() -> None:
    old = _schema(Column(name="a"), Column(name="b", type="integer"), Column(name="c"))
    assert incompatibilities(old, old) == []
    widened = _schema(Column(name="a", nullable=True), Column(name="b"), Column(name="c"))
    assert incompatibilities(old, widened) == []
    changed = _schema(Column(name="a", type="string"), Column(name="b"), Column(name="d"))
    assert incompatibilities(old, changed) == [
        "columns removed: c",
        "columns added: d",
        "a: number -> string",
    ]
    reordered = _schema(Column(name="b", type="integer"), Column(name="a"), Column(name="c"))
    assert incompatibilities(old, reordered) == ["columns reordered: a, b, c -> b, a, c"]
