"""Scoring a file through the queue: ``predictq score`` and ``Client.score``.

The file is read in blocks (producer/tables.py); each block's rows go out as jobs of
``rows_per_job`` rows, at most ``_BLOCKS_IN_FLIGHT`` blocks at a time, and each block's results
are written to the output, in input order, once its jobs are final. Memory therefore depends on
the block size, never on the file's length.

**Resumable.** Job IDs are derived from the input's SHA-256, the options that change results
(model, version or alias, probabilities, rows per job, the columns read) and the job's index in
the file. A second run of the same command finds the records of the jobs the first run submitted
(``SUBMIT`` leaves an existing ID alone, and this module does not even send those): finished
ones are read, unfinished ones waited for, and only the rest are submitted. The output is
written to a temporary file beside it and renamed at the end, so it is complete or absent.

**Row-level failures.** A job fails as a whole, but a row's error must not cost its neighbours
their predictions. Two steps keep failures to their rows:

1. Client side, before submitting: cells are typed by the version's schema and rows validated
   one by one only when their job's rows do not validate together (the fast path stays one
   call per job). A bad row gets its error in the output and is left out of its job.
2. Worker side: a job the model refused (``invalid_input``: an unknown category under
   ``handle_unknown="error"``, say) or whose ``predict()`` raised (``internal``) is run again as
   single-row jobs, with IDs derived from the job's, so that only the rows the model refuses
   fail. Errors that are not about the rows (the model was deleted, a worker was lost, the job
   was cancelled) fail the job's rows with that error, without re-running them; and once a job
   run row by row had not one row pass, later jobs are not (a model that fails on everything
   would otherwise cost a job per row of the file).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, Field

from registry import DEFAULT_ALIAS, InvalidInput, ModelVersion, Overloaded, PredictqError
from registry.validation import check_probabilities, validate_rows

from .contract import FINAL_STATUSES, JobResult
from .tables import Block, Format, Writer, format_of, open_reader, open_writer, typed_column

if TYPE_CHECKING:
    from .client import Client

__all__ = ["FAILED_ROWS_SHOWN", "ScoreInProgress", "ScoreProgress", "ScoreSummary", "score_file"]

FAILED_ROWS_SHOWN = 100
"""Failed row numbers a summary lists; ``failed`` counts them all."""

# Rows per block, rounded down to a whole number of jobs: what is read, typed and held at once.
_BLOCK_ROWS = 32_768
# Blocks submitted and not yet written: enough that workers are never idle while the client
# reads the next block and writes the last one, few enough to bound memory.
_BLOCKS_IN_FLIGHT = 4
# Job errors that depend on the rows: such a job is run again one row per job.
_ROW_ERRORS = frozenset({"invalid_input", "internal"})
# Bumped when the jobs a file is split into change, so that old records are not reused.
_SCHEME = "score/1"


class ScoreInProgress(PredictqError):
    """Raised when another run is scoring the same file, with the same options, into the same
    output: the two would write one temporary file."""

    code = "score_in_progress"
    http_status = 409


def _lock(partial: Path, output: Path) -> int:
    """A descriptor holding an exclusive lock on ``partial``, the file a run writes its output
    to before renaming it; ScoreInProgress when another live run holds it.

    The lock lives on the file itself, so it dies with its process (a killed run leaves nothing
    to clean up), and the run that holds it is the only one that writes, renames or removes it.
    """
    while True:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ScoreInProgress(
                f"another run is already scoring this file into {output} with the same "
                f"options (it writes {partial.name}): wait for it to end, or give another -o"
            ) from None
        try:
            here = os.stat(partial)
        except FileNotFoundError:
            here = None
        held = os.fstat(fd)
        if here is not None and (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            return fd
        # The run that held the lock renamed (or removed) the file before it let go: the lock
        # is on what is now its output. Take a lock on a new file of that name instead.
        os.close(fd)


class ScoreProgress(BaseModel):
    """Where a scoring run is, given to the ``progress`` callback after each block."""

    rows: int = Field(description="Rows written to the output so far.")
    failed: int = Field(description="Of those, rows that failed.")
    fraction: float = Field(description="How far through the input (0 to 1), estimated.")
    seconds: float


class ScoreSummary(BaseModel):
    """What a scoring run did: ``predictq score --json`` prints it."""

    model: str
    input: str
    output: str
    rows: int
    succeeded: int
    failed: int
    failed_rows: list[int] = Field(
        description=f"Numbers of failed rows (1 is the first data row), the first "
        f"{FAILED_ROWS_SHOWN}; ``failed`` counts them all."
    )
    seconds: float
    rows_per_second: float
    jobs: int = Field(description="Jobs the file is split into.")
    jobs_submitted: int = Field(description="Of those, jobs this run submitted.")
    jobs_already_done: int = Field(description="Jobs a previous run had finished: read, not run.")
    jobs_resumed: int = Field(description="Jobs a previous run submitted that were not final.")
    row_jobs: int = Field(description="Single-row jobs run to isolate rows a job failed on.")
    waited_overloaded: int = Field(
        0, description="Times a submission was refused as overloaded and offered again."
    )
    versions: list[int] = Field(description="The versions that made the predictions.")


@dataclass
class _Job:
    id: str
    members: list[int]  # rows of the block it carries
    rows: list[list[Any]]


@dataclass
class _Pending:
    block_start: int
    n: int
    passed: dict[str, list[Any]]
    errors: dict[int, str]
    jobs: list[_Job] = field(default_factory=list)


@dataclass
class _Tally:
    rows: int = 0
    failed: int = 0
    failed_rows: list[int] = field(default_factory=list)
    jobs: int = 0
    submitted: int = 0
    done: int = 0
    resumed: int = 0
    row_jobs: int = 0
    waited_overloaded: int = 0
    versions: set[int] = field(default_factory=set)


def _plain(values: Any) -> list[Any]:
    """A passed-through column as a list of Python values (a numpy array's too)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _checksum(path: Path) -> str:
    """SHA-256 of the file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while piece := f.read(1 << 20):
                digest.update(piece)
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from e
    return digest.hexdigest()


def _prediction_type(meta: ModelVersion, output: int) -> Any:
    """The Parquet type of a prediction column: its classes' type, else float."""
    import pyarrow as pa

    classes = meta.signature.classes
    if classes and meta.signature.outputs > 1:
        classes = classes[output] if isinstance(classes[output], list) else None
    if not classes:
        return pa.float64()
    try:
        return pa.array(classes).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


class _Run:
    """One scoring run: the reader, the writer and the jobs in flight."""

    def __init__(
        self,
        client: Client,
        model: str,
        meta: ModelVersion,
        *,
        version: int | None,
        alias: str,
        probabilities: bool,
        rows_per_job: int,
        features: list[str],
        passed: list[str],
        prefix: str,
        timeout: float,
    ) -> None:
        self.client = client
        self.model = model
        self.meta = meta
        self.schema = meta.signature.input_schema
        self.version = version
        self.alias = alias
        self.probabilities = probabilities
        self.rows_per_job = rows_per_job
        self.features = features
        self.passed = passed
        self.prefix = prefix
        self.timeout = timeout
        self.tally = _Tally()
        # Whether a job that failed on its rows is run again one row per job (see finish).
        self.isolating = True
        outputs = meta.signature.outputs
        self.prediction_names = (
            ["prediction"] if outputs == 1 else [f"prediction_{i}" for i in range(outputs)]
        )
        self.classes = list(meta.signature.classes or []) if probabilities else []
        self.proba_names = [f"proba_{c}" for c in self.classes]

    # -- before submitting ---------------------------------------------------------------------

    def prepare(self, block: Block) -> _Pending:
        """Type and check a block's rows, and split the good ones into jobs."""
        import numpy as np

        errors = dict(block.errors)
        columns: list[Any] = []
        for name, column in zip(self.features, self.schema.columns, strict=True):
            values = block.columns[name]
            if name in block.text:
                raw = values
                values, bad, expected = typed_column(raw, column)
                for i in np.flatnonzero(bad).tolist():
                    errors.setdefault(
                        i,
                        f"invalid_input: column {name!r}: expected {expected}, got {raw[i][:40]!r}",
                    )
            columns.append(values)
        checked: list[bool] | None = None
        if self.schema.plain and all(isinstance(c, np.ndarray) for c in columns):
            # The fast path: one float matrix; only rows with NaN or infinity need a look.
            matrix = np.column_stack(columns).astype(np.float64, copy=False)
            finite = np.isfinite(matrix).all(axis=1)
            rows: list[list[Any]] = matrix.tolist()
            checked = cast(list[bool], finite.tolist())
        else:
            lists = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
            rows = [list(row) for row in zip(*lists, strict=True)]
        for i, row in enumerate(rows):
            if checked is not None and checked[i]:
                continue
            # NaN (an empty numeric cell) is a missing value: the schema says if it may be.
            rows[i] = [None if isinstance(v, float) and v != v else v for v in row]
        pending = _Pending(
            block.start, block.rows, {c: _plain(block.columns[c]) for c in self.passed}, errors
        )
        per = self.rows_per_job
        for first in range(0, block.rows, per):
            members = [i for i in range(first, min(first + per, block.rows)) if i not in errors]
            if checked is None or not all(checked[i] for i in members):
                members = self._valid(members, rows, errors)
            if members:
                index = (block.start + first) // per
                pending.jobs.append(
                    _Job(f"{self.prefix}-{index}", members, [rows[i] for i in members])
                )
        return pending

    def _valid(
        self, members: list[int], rows: list[list[Any]], errors: dict[int, str]
    ) -> list[int]:
        """``members`` whose rows pass the schema; the others get their error."""
        max_rows = self.client.settings.max_rows
        try:
            validate_rows([rows[i] for i in members], self.schema, max_rows=max_rows)
            return members
        except InvalidInput:
            pass
        good = []
        for i in members:
            try:
                rows[i] = validate_rows([rows[i]], self.schema, max_rows=max_rows)[0]
                good.append(i)
            except InvalidInput as e:
                errors[i] = f"invalid_input: {e.message.removeprefix('row 0 ')}"
        return good

    def submit(self, jobs: Sequence[_Job], *, row_jobs: bool = False) -> None:
        """Submit the jobs that have no record yet; count the others (row jobs apart)."""
        if not jobs:
            return
        statuses = self._renew(jobs, self.client._statuses([j.id for j in jobs]))
        new = [j for j, status in zip(jobs, statuses, strict=True) if status is None]
        if row_jobs:
            self.tally.row_jobs += len(jobs)
        else:
            self.tally.jobs += len(jobs)
            self.tally.done += sum(s in FINAL_STATUSES for s in statuses)
            self.tally.resumed += sum(s is not None and s not in FINAL_STATUSES for s in statuses)
            self.tally.submitted += len(new)
        if new:
            self._submit_when_admitted(new)

    def _submit_when_admitted(self, jobs: Sequence[_Job]) -> None:
        """Submit, waiting out an ``Overloaded`` refusal (for up to ``timeout``).

        A full queue refuses a submission whole, so nothing of it was enqueued: the same jobs
        are offered again after the ``retry_after`` the refusal names. A file is scored into
        a busy deployment at the pace its workers drain the queue, instead of giving up. Slices
        of at most ``PREDICTQ_MAX_QUEUED`` jobs, so that an empty queue always admits one."""
        step = self.client.settings.max_queued
        for start in range(0, len(jobs), step):
            piece = jobs[start : start + step]
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    self.client.submit_many(
                        self.model,
                        [j.rows for j in piece],
                        version=self.version,
                        alias=self.alias,
                        job_ids=[j.id for j in piece],
                        probabilities=self.probabilities,
                    )
                    break
                except Overloaded as e:
                    if time.monotonic() + e.retry_after > deadline:
                        raise
                    self.tally.waited_overloaded += 1
                    time.sleep(e.retry_after)

    def _renew(self, jobs: Sequence[_Job], statuses: list[str | None]) -> list[str | None]:
        """Give the next generation's ID to each job an earlier run left failed for a reason
        that is not its rows, and return the jobs' statuses under their IDs.

        A lost worker, a missing module, a tampered artifact or a cancel says nothing about the
        rows: after the operator fixes it, running the command again must run those jobs again,
        not read their failures back. SUBMIT leaves an existing ID alone, so such a job moves to
        ``<id>.g2``, ``.g3``...: derived, like the first, so that a run killed while re-running
        them resumes too. A failure about the rows (``_ROW_ERRORS``) would only fail again.
        """
        todo = [k for k, status in enumerate(statuses) if status in ("failed", "cancelled")]
        while todo:
            records = self.client._fetch([jobs[k].id for k in todo])
            stale = [
                k
                for k, record in zip(todo, records, strict=True)
                if record is not None
                and record.status in ("failed", "cancelled")
                and (record.error is None or record.error.code not in _ROW_ERRORS)
            ]
            for k in stale:
                jobs[k].id = _next_generation(jobs[k].id)
            fresh = self.client._statuses([jobs[k].id for k in stale])
            for k, status in zip(stale, fresh, strict=True):
                statuses[k] = status
            todo = [k for k in stale if statuses[k] in ("failed", "cancelled")]
        return statuses

    # -- after the jobs end ----------------------------------------------------------------------

    def finish(self, pending: _Pending) -> dict[str, list[Any]]:
        """Wait for a block's jobs and return its output columns."""
        n = pending.n
        predictions: list[Any] = [None] * n
        proba: list[list[float] | None] = [None] * n
        versions: list[int | None] = [None] * n
        errors: list[str | None] = [pending.errors.get(i) for i in range(n)]
        ids = [j.id for j in pending.jobs]
        results = self.client.wait_many(ids, timeout=self.timeout) if ids else []
        for job, result in zip(pending.jobs, results, strict=True):
            if result.status == "succeeded":
                self._take(result, job.members, predictions, proba, versions)
                continue
            row_error = result.error is not None and result.error.code in _ROW_ERRORS
            if row_error and len(job.members) > 1 and self.isolating:
                if self._isolate(job, predictions, proba, versions, errors):
                    continue
                # Not one of its rows passed alone: the failure is not about rows, and
                # isolating every later job would only multiply the jobs by their rows.
                self.isolating = False
                continue
            message = self._error(result)
            for i in job.members:
                errors[i] = message
                versions[i] = result.version
        out: dict[str, list[Any]] = dict(pending.passed)
        if len(self.prediction_names) == 1:
            out["prediction"] = predictions
        else:
            for k, name in enumerate(self.prediction_names):
                out[name] = [None if p is None else p[k] for p in predictions]
        for k, name in enumerate(self.proba_names):
            out[name] = [None if p is None else p[k] for p in proba]
        out["version"] = versions
        out["error"] = [e or "" for e in errors]
        failed = [i for i, e in enumerate(errors) if e]
        t = self.tally
        t.rows += n
        t.failed += len(failed)
        room = FAILED_ROWS_SHOWN - len(t.failed_rows)
        t.failed_rows += [pending.block_start + i + 1 for i in failed[: max(0, room)]]
        return out

    def _isolate(
        self,
        job: _Job,
        predictions: list[Any],
        proba: list[list[float] | None],
        versions: list[int | None],
        errors: list[str | None],
    ) -> bool:
        """Run a failed job's rows again one per job; whether any of them succeeded."""
        alone = [
            _Job(f"{job.id}-r{k}", [i], [row])
            for k, (i, row) in enumerate(zip(job.members, job.rows, strict=True))
        ]
        self.submit(alone, row_jobs=True)
        results = self.client.wait_many([j.id for j in alone], timeout=self.timeout)
        passed = False
        for single, result in zip(alone, results, strict=True):
            if result.status == "succeeded":
                self._take(result, single.members, predictions, proba, versions)
                passed = True
            else:
                errors[single.members[0]] = self._error(result)
                versions[single.members[0]] = result.version
        return passed

    def _take(
        self,
        result: JobResult,
        members: list[int],
        predictions: list[Any],
        proba: list[list[float] | None],
        versions: list[int | None],
    ) -> None:
        values = result.predictions or []
        for i, value in zip(members, values, strict=True):
            predictions[i] = value
            versions[i] = result.version
        if result.version is not None:
            self.tally.versions.add(result.version)
        if self.probabilities and result.probabilities is not None:
            order = result.classes or self.classes
            rows: list[Any] = result.probabilities
            if order != self.classes:  # the alias moved to a version with other classes
                where = {c: k for k, c in enumerate(order)}
                picked = [where.get(c) for c in self.classes]
                rows = [[None if k is None else p[k] for k in picked] for p in rows]
            for i, p in zip(members, rows, strict=True):
                proba[i] = p

    @staticmethod
    def _error(result: JobResult) -> str:
        if result.error is None:
            return f"{result.status}: the job ended {result.status}"
        return f"{result.error.code}: {' '.join(result.error.message.split())}"


def _next_generation(job_id: str) -> str:
    """``<id>.g2`` for a first-generation ID, ``<id>.g(N+1)`` for ``<id>.gN``."""
    base, sep, number = job_id.rpartition(".g")
    if sep and number.isdigit():
        return f"{base}.g{int(number) + 1}"
    return f"{job_id}.g2"


def _options_key(
    meta: ModelVersion,
    *,
    model: str,
    version: int | None,
    alias: str,
    probabilities: bool,
    rows_per_job: int,
    features: list[str],
    header: bool,
    checksum: str,
) -> str:
    """What the job IDs are derived from: the file and every option that changes results.

    The input schema is among them: it decides which rows are left out of their jobs, so a
    record made under another schema (the alias moved between two runs) holds other rows.
    """
    target = f"v{version}" if version is not None else f"@{alias}"
    parts = [
        _SCHEME,
        checksum,
        model,
        target,
        str(int(probabilities)),
        str(rows_per_job),
        str(int(header)),
        "\x1f".join(features),
        meta.signature.input_schema.model_dump_json(),
    ]
    return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()


def score_file(
    client: Client,
    model: str,
    input: Path,
    output: Path,
    *,
    version: int | None = None,
    alias: str = DEFAULT_ALIAS,
    probabilities: bool = False,
    rows_per_job: int = 1000,
    id_column: str | None = None,
    keep: Sequence[str] = (),
    input_format: str | None = None,
    output_format: str | None = None,
    header: bool | None = None,
    timeout: float = 600.0,
    progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreSummary:
    """Score every row of ``input`` with ``model`` and write one output row per input row, in
    order, to ``output``; see ``Client.score``."""
    started = time.monotonic()
    input, output = Path(input), Path(output)
    in_fmt: Format = format_of(input, input_format, "input")
    out_fmt: Format = format_of(output, output_format, "output")
    max_rows = client.settings.max_rows
    if not 1 <= rows_per_job <= max_rows:
        raise InvalidInput(
            f"rows_per_job must be 1 to {max_rows} (PREDICTQ_MAX_ROWS), got {rows_per_job}"
        )
    if not input.is_file():
        raise InvalidInput(f"no file {input}: give the path of a file to score")
    if output.exists() and output.resolve() == input.resolve():
        raise InvalidInput(f"the output {output} is the input: give another -o path")
    if output.is_dir():
        raise InvalidInput(f"the output {output} is a directory: give the path of a file")
    if not output.parent.is_dir():
        raise InvalidInput(f"no directory {output.parent} to write {output.name} in")
    passed = [c for c in [id_column, *keep] if c]
    if len(set(passed)) != len(passed):
        raise InvalidInput("a column is given twice among --id-column and --keep")
    meta = client.registry.get(model, version=version, alias=alias)
    if probabilities:
        check_probabilities(meta)
    schema = meta.signature.input_schema
    block_rows = max(1, _BLOCK_ROWS // rows_per_job) * rows_per_job
    reader = open_reader(
        input, in_fmt, block_rows, header=header, names_wanted=set(passed), schema=schema
    )
    try:
        names = reader.names
        absent = [c for c in passed if c not in names]
        if absent:
            raise InvalidInput(f"{input} has no column {absent[0]!r}; its columns are {names[:12]}")
        if schema.named:
            features = schema.names
            missing = [c for c in features if c not in names]
            if missing:
                hint = (
                    " (a model fitted on named columns needs a header line naming them)"
                    if in_fmt == "csv" and names and names[0] == "0"
                    else ""
                )
                raise InvalidInput(
                    f"{input} lacks the model's columns {missing[:8]}{hint}; "
                    f"{model} v{meta.version} takes {features[:12]}"
                )
        else:
            # A model fitted without feature names takes the other columns, in file order.
            features = [c for c in names if c not in passed]
            if len(features) != len(schema.columns):
                raise InvalidInput(
                    f"{input} has {len(features)} feature columns ({features[:8]}...), "
                    f"{model} v{meta.version} takes {len(schema.columns)}: every column but "
                    "the --id-column and --keep ones is a feature, in file order"
                )
        header = getattr(reader, "header", True)
        key = _options_key(
            meta,
            model=model,
            version=version,
            alias=alias,
            probabilities=probabilities,
            rows_per_job=rows_per_job,
            features=features,
            header=bool(header),
            checksum=_checksum(input),
        )
        run = _Run(
            client,
            model,
            meta,
            version=version,
            alias=alias,
            probabilities=probabilities,
            rows_per_job=rows_per_job,
            features=features,
            passed=passed,
            prefix=f"score-{key[:24]}",
            timeout=timeout,
        )
        types: dict[str, Any] = {}
        if out_fmt == "parquet":
            types = _parquet_types(run, meta, reader, in_fmt, passed)
        partial = output.with_name(f".{output.name}.{key[:12]}.partial")
        lock = _lock(partial, output)
        writer: Writer | None = None
        try:
            writer = open_writer(partial, out_fmt, types)
            pending: deque[_Pending] = deque()

            def write_oldest(into: Writer) -> None:
                into.write(run.finish(pending.popleft()))
                if progress is not None:
                    progress(
                        ScoreProgress(
                            rows=run.tally.rows,
                            failed=run.tally.failed,
                            fraction=reader.fraction(run.tally.rows),
                            seconds=time.monotonic() - started,
                        )
                    )

            for block in reader.blocks():
                prepared = run.prepare(block)
                run.submit(prepared.jobs)
                pending.append(prepared)
                while len(pending) >= _BLOCKS_IN_FLIGHT:
                    write_oldest(writer)
            while pending:
                write_oldest(writer)
            if run.tally.rows == 0:
                raise InvalidInput(f"{input} holds no rows to score")
            writer.close()
            os.replace(partial, output)
        except BaseException:
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
            raise
        finally:
            os.close(lock)  # after the rename or removal: see _lock
    finally:
        reader.close()
    t = run.tally
    seconds = time.monotonic() - started
    return ScoreSummary(
        model=model,
        input=str(input),
        output=str(output),
        rows=t.rows,
        succeeded=t.rows - t.failed,
        failed=t.failed,
        failed_rows=t.failed_rows,
        seconds=round(seconds, 3),
        rows_per_second=round(t.rows / seconds, 1) if seconds else 0.0,
        jobs=t.jobs,
        jobs_submitted=t.submitted,
        jobs_already_done=t.done,
        jobs_resumed=t.resumed,
        row_jobs=t.row_jobs,
        waited_overloaded=t.waited_overloaded,
        versions=sorted(t.versions),
    )


def _parquet_types(
    run: _Run, meta: ModelVersion, reader: Any, in_fmt: Format, passed: list[str]
) -> dict[str, Any]:
    """Parquet column types fixed up front, so that a block whose rows all failed (all null)
    does not fix a column's type to null."""
    import pyarrow as pa

    types: dict[str, Any] = {}
    if in_fmt == "parquet":
        for name in passed:
            types[name] = reader.arrow_schema.field(name).type
    elif in_fmt == "csv":
        types.update({name: pa.string() for name in passed})
    for k, name in enumerate(run.prediction_names):
        types[name] = _prediction_type(meta, k)
    types.update({name: pa.float64() for name in run.proba_names})
    types["version"] = pa.int64()
    types["error"] = pa.string()
    return types
