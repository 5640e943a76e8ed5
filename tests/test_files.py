"""Reading a CSV by a version's input schema (pure logic: no Redis, no worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.files import read_csv
from registry import InvalidInput
from registry.schema import Column, InputSchema, default_schema

pytestmark = pytest.mark.timeout(30)

SCHEMA = InputSchema(
    columns=[
        Column(name="zip", type="string"),
        Column(name="age", type="integer"),
        Column(name="income", type="number", nullable=True),
        Column(name="active", type="boolean"),
        Column(name="plan", type="category", nullable=True, categories=["free", "pro"]),
    ],
    named=True,
    frame=True,
)


def _csv(tmp_path: Path, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / "rows.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_cells_are_typed_by_their_column_and_empty_cells_are_missing(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age,zip,income,active,plan\n31,007,,true,\n40,10115,1.5,0,pro\n")
    assert read_csv(path, SCHEMA) == [
        {"age": 31, "zip": "007", "income": None, "active": True, "plan": None},
        {"age": 40, "zip": "10115", "income": 1.5, "active": False, "plan": "pro"},
    ]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = _csv(tmp_path, "zip,age,income,active,plan\n1,2,3,true,free\n", bom=True)
    assert read_csv(path, SCHEMA)[0]["zip"] == "1"


def test_a_row_with_more_values_than_the_header_is_refused_not_cut(tmp_path: Path) -> None:
    path = _csv(tmp_path, "zip,age,income,active,plan\n1,2,3,true,free,EXTRA\n")
    with pytest.raises(InvalidInput, match="line 2 has 6 values, the header has 5"):
        read_csv(path, SCHEMA)


def test_a_header_only_file_says_it_holds_no_rows(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="has a header line but no rows"):
        read_csv(_csv(tmp_path, "zip,age,income,active,plan\n"), SCHEMA)
    with pytest.raises(InvalidInput, match="is empty"):
        read_csv(_csv(tmp_path, ""), SCHEMA)


def test_a_bad_cell_names_line_column_and_value(tmp_path: Path) -> None:
    path = _csv(tmp_path, "zip,age,income,active,plan\n1,old,3,true,free\n")
    with pytest.raises(InvalidInput, match="line 2 column 'age': expected an integer, got 'old'"):
        read_csv(path, SCHEMA)


def test_columns_the_model_does_not_take_are_refused_by_name(tmp_path: Path) -> None:
    path = _csv(tmp_path, "zip,age,income,active,tier\n1,2,3,true,free\n")
    with pytest.raises(InvalidInput, match=r"columns the model does not take: \['tier'\]"):
        read_csv(path, SCHEMA)


def test_a_numeric_model_reads_files_with_or_without_a_header(tmp_path: Path) -> None:
    plain = default_schema(2, None)
    assert read_csv(_csv(tmp_path, "1.5,2\n3,4\n"), plain) == [[1.5, 2], [3, 4]]
    # A model fitted without names takes a header's columns in file order.
    assert read_csv(_csv(tmp_path, "a,b\n1,2\n"), plain) == [[1, 2]]
    with pytest.raises(InvalidInput, match="line 1 has 3 values, the model takes 2"):
        read_csv(_csv(tmp_path, "1,2,3\n"), plain)
