"""``predictq score MODEL INPUT -o OUTPUT``: a file scored through the queue, with progress."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from registry import DEFAULT_ALIAS, InvalidInput

from .client import Client
from .score import ScoreProgress, ScoreSummary

__all__ = ["score"]


def score(
    model: str = typer.Argument(help="Model name."),
    input: Path = typer.Argument(help="The file to score: .csv, .parquet or .jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the results."),
    version: int | None = typer.Option(None, "--version", "-v", help="Pin a version."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a"),
    probabilities: bool = typer.Option(
        False, "--probabilities", "-p", help="Add a proba_<class> column per class."
    ),
    id_column: str | None = typer.Option(
        None,
        "--id-column",
        help="A column copied to the output (a 0-based position in a CSV without a header).",
    ),
    keep: str | None = typer.Option(
        None, "--keep", help="More columns copied to the output, comma-separated."
    ),
    input_format: str | None = typer.Option(
        None, "--input-format", help="csv, parquet or jsonl (default: from the extension)."
    ),
    output_format: str | None = typer.Option(
        None, "--output-format", help="csv, parquet or jsonl (default: from the extension)."
    ),
    header: bool | None = typer.Option(
        None,
        "--header/--no-header",
        help="Whether the CSV's first line names its columns (default: detected).",
    ),
    rows_per_job: int = typer.Option(1000, "--rows-per-job", min=1, help="Rows per job."),
    timeout: float = typer.Option(
        600.0, "--timeout", help="Seconds to wait for one block of jobs to end."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Score a file into another: one output row per input row, in order, with its prediction,
    the version that made it and an error for a failed row. Running the same command again
    after a crash or Ctrl-C resumes: jobs already submitted are not submitted again.

    Exit codes: 0 every row scored, 1 some rows failed (the summary names them), 2 bad input.
    """
    kept = [c.strip() for c in keep.split(",") if c.strip()] if keep else []
    if keep is not None and not kept:
        raise InvalidInput("--keep names no column: give COLUMN[,COLUMN...]")
    err = Console(stderr=True)
    # A bar on a terminal only: piped or redirected, stderr stays quiet.
    bar = Progress(
        TextColumn("{task.fields[rows]:,} rows"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]:,} failed"),
        console=err,
        disable=not err.is_terminal,
    )
    task: TaskID = bar.add_task("score", total=1.0, rows=0, rate=0.0, failed=0)

    def show(p: ScoreProgress) -> None:
        rate = p.rows / p.seconds if p.seconds else 0.0
        bar.update(task, completed=p.fraction, rows=p.rows, rate=rate, failed=p.failed)

    with Client() as client, bar:
        try:
            summary = client.score(
                model,
                input,
                output,
                version=version,
                alias=alias,
                probabilities=probabilities,
                rows_per_job=rows_per_job,
                id_column=id_column,
                keep=kept,
                input_format=input_format,
                output_format=output_format,
                header=header,
                timeout=timeout,
                progress=show,
            )
        except KeyboardInterrupt:
            bar.stop()
            typer.echo("interrupted: run the same command again to resume", err=True)
            raise typer.Exit(130) from None
        bar.update(task, completed=1.0)
    if json_out:
        typer.echo(summary.model_dump_json())
    else:
        typer.echo(_said(summary))
    if summary.failed:
        raise typer.Exit(1)


def _said(s: ScoreSummary) -> str:
    line = (
        f"scored {s.rows:,} rows of {s.input} into {s.output} in {s.seconds:.1f}s "
        f"({s.rows_per_second:,.0f} rows/s): {s.succeeded:,} succeeded, {s.failed:,} failed"
    )
    if s.failed:
        rows = ", ".join(str(r) for r in s.failed_rows)
        more = (
            f" and {s.failed - len(s.failed_rows):,} more" if s.failed > len(s.failed_rows) else ""
        )
        line += f" (rows {rows}{more}; their error is in the output's error column)"
    if s.jobs_already_done or s.jobs_resumed:
        line += (
            f"; resumed: {s.jobs_already_done} jobs were done already, "
            f"{s.jobs_resumed} in flight, {s.jobs_submitted} submitted"
        )
    return line
