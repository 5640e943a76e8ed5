"""Files of rows for ``predictq score``: CSV, Parquet and JSON Lines, read and written in blocks.

A reader yields :class:`Block` objects of a fixed number of rows, so that memory stays the same
whatever the file's length: pandas reads CSV in chunks, orjson reads JSON Lines line by line, and
pyarrow (the ``parquet`` extra) reads Parquet one record batch at a time. Writers append block
after block: CSV and JSON Lines as text, Parquet through one ``pyarrow.parquet.ParquetWriter``
(one row group per block).

A block holds each column as a list of Python values (None for a missing value), or as a numpy
array for a numeric column without gaps (the fast path: typed and checked at C speed). A CSV
reader parses the model's numeric columns as numbers; a column where some cell is not a number,
and every text column, stays text until :func:`typed_column` types it by the model's schema, so
that one bad cell fails its row, not the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from registry import InvalidInput
from registry.schema import Column, InputSchema

from .files import looks_like_header

__all__ = [
    "FORMATS",
    "Block",
    "Format",
    "Reader",
    "Writer",
    "format_of",
    "open_reader",
    "open_writer",
    "typed_column",
]

Format = Literal["csv", "parquet", "jsonl"]
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
# Text read as a missing value in a CSV cell, besides an empty cell (what pandas writes for NaN).
_MISSING = frozenset({"", "nan", "NaN", "NA", "null"})


def format_of(path: Path, given: str | None, what: str) -> Format:
    """The format ``given`` (csv, parquet, jsonl), else the one ``path``'s extension names."""
    if given is not None:
        name = given.lower().lstrip(".")
        for fmt in ("csv", "parquet", "jsonl"):
            if name == fmt:
                return fmt
        raise InvalidInput(f"unknown {what} format {given!r}: use csv, parquet or jsonl")
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise InvalidInput(
            f"cannot tell the format of {path} from its extension: name it .csv, .parquet or "
            f".jsonl, or give --{what}-format csv|parquet|jsonl"
        )
    return found


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise InvalidInput("Parquet files need pyarrow: pip install 'predictq[parquet]'") from e
    return pyarrow


@dataclass
class Block:
    """``rows`` consecutive rows of the file, from row ``start`` (0-based, data rows only)."""

    start: int
    rows: int
    columns: dict[str, list[Any]]
    # Rows that could not be read at all (a JSON Lines line that is not an object): row -> why.
    errors: dict[int, str] = field(default_factory=dict)
    # Columns whose cells are text still (CSV), to be typed by the schema.
    text: set[str] = field(default_factory=set)


class Reader:
    """Blocks of a file, in order; ``names`` are its columns in file order."""

    names: list[str]
    total_rows: int | None = None

    def blocks(self) -> Iterator[Block]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fraction(self, rows_read: int) -> float:
        """How far through the file the reader is, from 0 to 1 (for a progress estimate)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _CsvReader(Reader):
    def __init__(
        self,
        path: Path,
        block_rows: int,
        header: bool | None,
        names_wanted: set[str],
        schema: InputSchema,
    ) -> None:
        import pandas as pd

        self.size = max(1, path.stat().st_size)
        try:
            self.file: IO[str] = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from e
        try:
            # pandas, not the csv module, reads the first line as it reads the rest: csv
            # refuses a cell over 128 KiB (a long text feature) and cuts a quoted line break.
            head = pd.read_csv(self.file, header=None, dtype=str, nrows=1,
                               keep_default_na=False, skip_blank_lines=True)  # fmt: skip
            first: list[str] | None = [str(c) for c in head.iloc[0].tolist()]
        except pd.errors.EmptyDataError:
            first = None
        except UnicodeDecodeError as e:
            self.file.close()
            raise InvalidInput(f"{path} is not UTF-8 text ({e.reason}): save it as UTF-8") from e
        except Exception as e:  # pandas' parser errors have no common base
            self.file.close()
            raise InvalidInput(f"{path} is not a readable CSV file: {e}") from e
        self.file.seek(0)
        if not first:
            raise InvalidInput(f"{path} is empty: it holds no rows to score")
        if header is None:
            header = looks_like_header(first, schema, names_wanted)
        self.header = header
        self.names = [c.strip() for c in first] if header else [str(i) for i in range(len(first))]
        if len(set(self.names)) != len(self.names):
            raise InvalidInput(f"{path} has the same column name twice in its header")
        self.path = path
        # The model's numeric columns are parsed by pandas' C parser (an empty cell is NaN);
        # every other column is read as text, exactly as the file holds it.
        numeric = {c.name for c in schema.columns if c.type in ("number", "integer")}
        self.numeric = numeric if schema.named else set()
        if not schema.named and all(c.type in ("number", "integer") for c in schema.columns):
            self.numeric = {n for n in self.names if n not in names_wanted}
        try:
            self.chunks = pd.read_csv(
                self.file,
                header=0 if header else None,
                names=self.names,
                dtype={n: str for n in self.names if n not in self.numeric},
                keep_default_na=False,
                na_values=[""],
                chunksize=block_rows,
                skip_blank_lines=True,
            )
        except Exception as e:  # pandas' parser errors have no common base
            raise InvalidInput(f"{path} is not a readable CSV file: {e}") from e

    def blocks(self) -> Iterator[Block]:
        import pandas as pd

        start = 0
        while True:
            try:
                frame = next(self.chunks)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                raise InvalidInput(
                    f"{self.path} is not UTF-8 text ({e.reason}): save it as UTF-8"
                ) from e
            except Exception as e:  # a line with more cells than the header, say
                raise InvalidInput(
                    f"{self.path} is not a readable CSV file near data row {start + 1}: "
                    f"{' '.join(str(e).split())}: every line needs one cell per column"
                ) from e
            if not isinstance(frame.index, pd.RangeIndex):
                # pandas takes a line's extra first cell as the row's index when the lines
                # hold one cell more than the header (a trailing comma, say), shifting every
                # column one to the left: refused, not scored on the wrong features.
                raise InvalidInput(
                    f"{self.path}'s data lines hold more cells than its {len(self.names)} "
                    f"columns (near data row {start + 1}; a trailing comma?): every line "
                    "needs one cell per column"
                )
            n = len(frame)
            columns: dict[str, Any] = {}
            text: set[str] = set()
            for name in self.names:
                series = frame[name]
                if name in self.numeric and series.dtype.kind in "fiu":
                    columns[name] = series.to_numpy()
                else:
                    # Text; a missing cell (an empty one, or past the end of a short line) is "".
                    columns[name] = series.fillna("").astype(str).tolist()
                    text.add(name)
            yield Block(start, n, columns, text=text)
            start += n

    def fraction(self, rows_read: int) -> float:
        try:
            return min(1.0, self.file.tell() / self.size)
        except (OSError, ValueError):
            return 0.0

    def close(self) -> None:
        self.file.close()


class _ParquetReader(Reader):
    def __init__(self, path: Path, block_rows: int) -> None:
        _pyarrow()
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow's ArrowInvalid, OSError...
            raise InvalidInput(f"{path} is not a readable Parquet file: {e}") from e
        self.names = list(self.file.schema_arrow.names)
        self.arrow_schema = self.file.schema_arrow
        self.total_rows = int(self.file.metadata.num_rows)
        self.block_rows = block_rows

    def blocks(self) -> Iterator[Block]:
        start = 0
        pa = _pyarrow()
        for batch in self.file.iter_batches(batch_size=self.block_rows):
            columns: dict[str, Any] = {}
            for i, name in enumerate(self.names):
                array = batch.column(i)
                numeric = pa.types.is_floating(array.type) or pa.types.is_integer(array.type)
                if numeric and array.null_count == 0:
                    columns[name] = array.to_numpy()
                else:
                    columns[name] = array.to_pylist()
            yield Block(start, batch.num_rows, columns)
            start += batch.num_rows

    def fraction(self, rows_read: int) -> float:
        return rows_read / self.total_rows if self.total_rows else 1.0

    def close(self) -> None:
        self.file.close()


class _JsonLinesReader(Reader):
    """One JSON object per line; its columns are the keys of the file's first object, in their
    order. A later object's other keys are ignored: nothing could ask for them, and keeping them
    would let a file whose every line adds a key grow each block to lines times keys."""

    def __init__(self, path: Path, block_rows: int) -> None:
        self.path = path
        self.size = max(1, path.stat().st_size)
        self.block_rows = block_rows
        try:
            self.file: IO[bytes] = open(path, "rb")  # noqa: SIM115
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from e
        self.names = []
        for line in self.file:
            if line.strip():
                try:
                    first = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise InvalidInput(f"{path} line 1 is not JSON: {e}") from e
                if not isinstance(first, dict):
                    raise InvalidInput(
                        f"{path} line 1 is not a JSON object: each line holds "
                        'one row as {"column": value, ...}'
                    )
                self.names = list(first)
                break
        if not self.names:
            raise InvalidInput(f"{path} is empty: it holds no rows to score")
        self.file.seek(0)
        self.read = 0

    def blocks(self) -> Iterator[Block]:
        start = 0
        records: list[Any] = []
        for line in self.file:
            self.read += len(line)
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as e:
                records.append(f"not JSON ({e})")
            if len(records) == self.block_rows:
                yield self._block(start, records)
                start += len(records)
                records = []
        if records:
            yield self._block(start, records)

    def _block(self, start: int, records: list[Any]) -> Block:
        errors: dict[int, str] = {}
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                errors[i] = record if isinstance(record, str) else "not a JSON object"
                records[i] = {}
        columns = {name: [r.get(name) for r in records] for name in self.names}
        return Block(start, len(records), columns, errors)

    def fraction(self, rows_read: int) -> float:
        return min(1.0, self.read / self.size)

    def close(self) -> None:
        self.file.close()


def open_reader(
    path: Path,
    fmt: Format,
    block_rows: int,
    *,
    header: bool | None,
    names_wanted: set[str],
    schema: InputSchema,
) -> Reader:
    """A reader of ``path``; ``names_wanted`` (ID and kept columns) help tell a CSV header."""
    if not path.is_file():
        raise InvalidInput(f"no file {path}: give the path of a file to score")
    if fmt == "csv":
        return _CsvReader(path, block_rows, header, names_wanted, schema)
    if fmt == "parquet":
        return _ParquetReader(path, block_rows)
    return _JsonLinesReader(path, block_rows)


# -- typing CSV text by the schema -----------------------------------------------------------


def _numbers(cells: Sequence[str]) -> tuple[list[Any], list[bool]]:
    """Numbers (ints where the text is one) and which cells are not numbers at all."""
    import numpy as np
    import pandas as pd

    series = pd.Series(cells, dtype=object).str.strip()
    parsed = pd.to_numeric(series, errors="coerce")
    missing = series.isin(_MISSING).to_numpy()
    bad = (parsed.isna().to_numpy() & ~missing).tolist()
    if pd.api.types.is_integer_dtype(parsed.dtype):
        values: list[Any] = parsed.tolist()
    else:
        array = parsed.to_numpy(dtype=np.float64)
        values = array.tolist()
        if np.isnan(array).any():
            values = [None if v != v else v for v in values]
    return values, bad


def typed_column(cells: list[str], column: Column) -> tuple[list[Any], list[bool], str]:
    """CSV cells of ``column`` as values, which cells do not read as its type, and what that
    type is called (for the error of a bad cell). An empty cell is a missing value."""
    kind = column.type
    known = column.categories or []
    numeric_categories = bool(known) and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in known
    )
    if kind == "number" or (kind == "category" and numeric_categories):
        values, bad = _numbers(cells)
        return values, bad, "a number"
    if kind == "integer":
        values, bad = _numbers(cells)
        for i, v in enumerate(values):
            if isinstance(v, float):
                if v.is_integer():
                    values[i] = int(v)
                else:
                    bad[i] = True
        return values, bad, "an integer"
    if kind == "boolean":
        out: list[Any] = []
        bad = []
        for cell in cells:
            lowered = cell.strip().lower()
            out.append(True if lowered in _TRUE else False if lowered in _FALSE else None)
            bad.append(out[-1] is None and cell.strip() not in _MISSING)
        return out, bad, "true or false"
    return [None if c == "" else c for c in cells], [False] * len(cells), "a string"


# -- writers -----------------------------------------------------------------------------------


class Writer:
    """Appends blocks of output columns to ``path`` (a temporary file the caller renames)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, columns: dict[str, list[Any]]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _CsvWriter(Writer):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.csv = csv.writer(self.file)
        self.started = False

    def write(self, columns: dict[str, list[Any]]) -> None:
        if not self.started:
            self.csv.writerow(list(columns))
            self.started = True
        self.csv.writerows(zip(*columns.values(), strict=True))

    def close(self) -> None:
        self.file.close()


class _JsonLinesWriter(Writer):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.file = open(path, "wb")  # noqa: SIM115

    def write(self, columns: dict[str, list[Any]]) -> None:
        names = list(columns)
        dumps = orjson.dumps
        self.file.write(
            b"".join(
                dumps(dict(zip(names, row, strict=True))) + b"\n"
                for row in zip(*columns.values(), strict=True)
            )
        )

    def close(self) -> None:
        self.file.close()


class _ParquetWriter(Writer):
    """One row group per block; the column types are fixed by the caller's ``types`` (and, for
    columns it leaves out, by the first block)."""

    def __init__(self, path: Path, types: dict[str, Any]) -> None:
        super().__init__(path)
        self.pa = _pyarrow()
        self.types = types
        self.writer: Any = None
        self.schema: Any = None

    def write(self, columns: dict[str, list[Any]]) -> None:
        pa = self.pa
        arrays = []
        for name, values in columns.items():
            wanted = (
                self.schema.field(name).type if self.schema is not None else (self.types.get(name))
            )
            try:
                arrays.append(pa.array(values, type=wanted))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise InvalidInput(
                    f"column {name!r} changes type part-way through the file ({e}): write "
                    "CSV or JSON Lines instead, or give the column one type"
                ) from e
        table = pa.Table.from_arrays(arrays, names=list(columns))
        if self.writer is None:
            import pyarrow.parquet as pq

            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_writer(path: Path, fmt: Format, types: dict[str, Any] | None = None) -> Writer:
    """A writer of ``fmt`` to ``path``; ``types`` (pyarrow types by column) for Parquet."""
    if fmt == "csv":
        return _CsvWriter(path)
    if fmt == "parquet":
        return _ParquetWriter(path, types or {})
    return _JsonLinesWriter(path)
