"""Reading rows from a CSV file by a version's input schema.

Cells are typed by their column: strings stay strings, an empty cell is a missing value, and
``true``/``false`` are booleans. A file either starts with a header (the column names, in any
order, for a model fitted on named columns) or holds data rows in the model's column order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry import InvalidInput
from registry.schema import Column, InputSchema

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})

Parse = Callable[[str], Any]


def _number(cell: str) -> Any:
    value = float(cell)
    return int(cell) if cell.lstrip("+-").isdigit() else value


def _integer(cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        value = float(cell)
        if not value.is_integer():
            raise
        return int(value)


def _boolean(cell: str) -> bool:
    lowered = cell.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(cell)


def _parser(column: Column) -> tuple[Parse, str]:
    """How to read a cell of ``column``, and what to call the value it expects."""
    if column.type == "number":
        return _number, "a number"
    if column.type == "integer":
        return _integer, "an integer"
    if column.type == "boolean":
        return _boolean, "true or false"
    known = column.categories or []
    if (
        column.type == "category"
        and known
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in known)
    ):
        return _number, "a number"
    return str, "a string"


def _cell(raw: str, column: Column, parse: Parse, expected: str, where: str) -> Any:
    if raw == "" or (column.type != "string" and raw.strip() == ""):
        return None  # missing: the schema says whether the column may be
    try:
        value = parse(raw if column.type in ("string", "category") else raw.strip())
    except ValueError:
        raise InvalidInput(f"{where}: expected {expected}, got {raw[:40]!r}") from None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_csv(path: Path, schema: InputSchema) -> list[Any]:
    """The rows of a CSV file, typed by ``schema``: records when it has a header, else lists.

    Refuses a row with more (or fewer) values than the header or the model's columns, never
    cutting one short, and a file without rows. A UTF-8 byte-order mark is accepted.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [line for line in csv.reader(f) if line]
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{path} is not UTF-8 text ({e.reason}): save it as UTF-8") from e
    except csv.Error as e:
        raise InvalidInput(f"{path} is not a readable CSV file: {e}") from e
    if not lines:
        raise InvalidInput(f"{path} is empty: it holds no rows to score")
    columns = schema.columns
    by_name = {c.name: c for c in columns}
    first = [c.strip() for c in lines[0]]
    header: list[str] | None = None
    if schema.named and set(first) & set(by_name):
        header = first
    elif not _parses(lines[0], columns) and any(_is_word(c) for c in first):
        header = first  # not data: a header, whose names validation then checks
    body = lines[1:] if header is not None else lines
    start = 2 if header is not None else 1
    if not body:
        raise InvalidInput(f"{path} has a header line but no rows: add rows to score")
    if header is None:
        return [_row(line, columns, path, start + i) for i, line in enumerate(body)]
    unknown = [h for h in header if h not in by_name]
    if unknown or not schema.named:
        # Named columns the model does not have are refused by name; a model fitted without
        # names takes the file's columns in order, whatever the header calls them.
        if schema.named:
            raise InvalidInput(
                f"{path} has columns the model does not take: {unknown[:5]}; its columns are "
                f"{schema.names[:10]}"
            )
        return [_row(line, columns, path, start + i) for i, line in enumerate(body)]
    named = [by_name[h] for h in header]
    parsers = [_parser(c) for c in named]
    records = []
    for i, line in enumerate(body):
        number = start + i
        if len(line) != len(header):
            raise InvalidInput(
                f"{path} line {number} has {len(line)} values, the header has {len(header)}: "
                "every row needs exactly one value per column (leave a cell empty for a "
                "missing value)"
            )
        records.append({
            c.name: _cell(raw, c, parse, expected, f"{path} line {number} column {c.name!r}")
            for raw, c, (parse, expected) in zip(line, named, parsers, strict=True)
        })  # fmt: skip
    return records


def looks_like_header(first: list[str], schema: InputSchema, names: set[str]) -> bool:
    """Whether a CSV file's first line is a header: it names one of ``names`` (an ID or kept
    column) or of the model's columns, or it is not a data row and holds a word.

    Cells at the positions of ``names`` given as numbers (columns of a headerless file) are
    left out before the line is tried as a data row.
    """
    cells = [c.strip() for c in first]
    if set(cells) & (names | set(schema.names)):
        return True
    if any(not n.isdigit() for n in names):
        return True  # columns named by name: only a header can name them
    skip = {int(n) for n in names}
    data = [c for i, c in enumerate(first) if i not in skip]
    return not _parses(data, schema.columns) and any(_is_word(c) for c in data)


def _is_word(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell != ""
    return False


def _parses(line: list[str], columns: list[Column]) -> bool:
    """Whether ``line`` reads as a data row of ``columns``."""
    if len(line) != len(columns):
        return False
    try:
        for raw, column in zip(line, columns, strict=True):
            parse, expected = _parser(column)
            _cell(raw, column, parse, expected, "")
    except InvalidInput:
        return False
    # A row of strings reads as strings: it is data only if some column is not a string.
    return any(c.type not in ("string", "category") for c in columns) or not any(
        raw.strip() in {c.name for c in columns} for raw in line
    )


def _row(line: list[str], columns: list[Column], path: Path, number: int) -> list[Any]:
    if len(line) != len(columns):
        raise InvalidInput(
            f"{path} line {number} has {len(line)} values, the model takes {len(columns)} "
            "columns: every row needs exactly one value per column"
        )
    out = []
    for raw, column in zip(line, columns, strict=True):
        parse, expected = _parser(column)
        out.append(_cell(raw, column, parse, expected, f"{path} line {number} column "
                                                       f"{column.name!r}"))  # fmt: skip
    return out
