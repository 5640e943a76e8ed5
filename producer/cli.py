"""``predictq submit`` and ``predictq result``: the producer commands."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from registry import DEFAULT_ALIAS, InvalidInput, Overloaded

from .client import Client
from .contract import JobResult
from .files import read_csv


def _exit_unless_succeeded(results: Sequence[JobResult]) -> None:
    """Exit 1, naming them on stderr, when a final record is not ``succeeded``.

    A job still queued or running (``result`` without ``--wait``) is not a failure.
    """
    bad = [r for r in results if r.done and r.status != "succeeded"]
    if not bad:
        return
    named = "; ".join(f"{r.id} {r.status}" + (f" ({r.error.code}: {r.error.message})"
                                              if r.error else "") for r in bad[:5])  # fmt: skip
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    typer.echo(f"error: {len(bad)} of {len(results)} job(s) did not succeed: {named}{more}",
               err=True)  # fmt: skip
    raise typer.Exit(1)


def submit(
    name: str = typer.Argument(help="Model name."),
    rows: str | None = typer.Option(None, "--rows", help="JSON rows: [[1, 2], ...] or records."),
    file: Path | None = typer.Option(
        None,
        "--file",
        exists=True,
        dir_okay=False,
        help="CSV to score in bulk, typed by the version's input schema: a header row of "
        "column names (models fitted on named columns), or rows in column order; an empty "
        "cell is a missing value.",
    ),
    rows_per_job: int = typer.Option(
        1000, "--rows-per-job", min=1, help="With --file: rows per job."
    ),
    version: int | None = typer.Option(None, "--version", "-v", help="Pin a version."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a"),
    probabilities: bool = typer.Option(False, "--probabilities", "-p"),
    job_id: str | None = typer.Option(None, "--job-id", help="Idempotency key (with --rows)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait and print the results."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds --wait waits."),
) -> None:
    """Submit prediction jobs; prints job IDs, or the results with --wait.

    Overloaded (queue or Redis memory full): one line on stderr, exit code 1, nothing enqueued.
    With --wait, exit code 1 when any job did not succeed (every record is still printed).
    """
    if (rows is None) == (file is None):
        raise InvalidInput("give exactly one of --rows JSON or --file CSV")
    client = Client()
    try:
        if rows is not None:
            try:
                parsed = json.loads(rows)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"--rows is not valid JSON: {e}") from e
            ids = [client.submit(name, parsed, version=version, alias=alias, job_id=job_id,
                                 probabilities=probabilities)]  # fmt: skip
        else:
            assert file is not None
            schema = client.registry.get(name, version=version, alias=alias).signature
            data = read_csv(file, schema.input_schema)
            jobs = [data[i : i + rows_per_job] for i in range(0, len(data), rows_per_job)]
            ids = client.submit_many(name, jobs, version=version, alias=alias,
                                     probabilities=probabilities)  # fmt: skip
    except Overloaded as e:
        # Plain and unwrapped, whatever the terminal's width: scripts match it and retry later.
        typer.echo(f"error ({e.code}): {e.message}", err=True)
        raise typer.Exit(1) from e
    if not wait:
        for i in ids:
            typer.echo(i)
        return
    results = client.wait_many(ids, timeout=timeout)
    for result in results:
        typer.echo(result.model_dump_json())
    _exit_unless_succeeded(results)


def result(
    job_id: str = typer.Argument(help="Job ID."),
    wait: float | None = typer.Option(None, "--wait", help="Wait up to SECONDS for the end."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (the default already; accepted like other commands)."
    ),
) -> None:
    """Print a job's record as JSON.

    Exit code 1 when the job ended failed or cancelled (the record is still printed), or when
    --wait ran out; 3 for an unknown or expired job ID.
    """
    client = Client()
    found = client.wait(job_id, timeout=wait) if wait else client.result(job_id)
    typer.echo(found.model_dump_json())
    _exit_unless_succeeded([found])
