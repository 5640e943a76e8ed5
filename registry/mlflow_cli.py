"""``predictq models import`` and ``predictq models follow``: models from MLflow."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from pathlib import Path
from types import FrameType

import typer

from .errors import SchemaWarning
from .registry import DEFAULT_ALIAS, Registry

__all__ = ["follow", "import_model"]


def import_model(
    name: str = typer.Argument(help="predictq model name."),
    source: str = typer.Argument(
        help="An MLflow model directory (with its MLmodel file), runs:/RUN_ID/PATH, "
        "models:/NAME/VERSION or models:/NAME@ALIAS (through MLFLOW_TRACKING_URI)."
    ),
    promote: bool = typer.Option(False, "--promote", help="Promote the new version at once."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", help="Alias --promote moves."),
) -> None:
    """Import an MLflow scikit-learn model as the next version of NAME (needs predictq[mlflow])."""
    from .cli import _print_schema
    from .mlflow import lower_mlflow_retries

    lower_mlflow_retries()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SchemaWarning)
        meta = Registry().import_mlflow(name, source, promote=promote, alias=alias)
    for warning in caught:
        if issubclass(warning.category, SchemaWarning):
            typer.echo(f"warning: {warning.message}", err=True)
    promoted = f" and promoted to {alias!r}" if promote else ""
    shown = ("mlflow.model_name", "mlflow.model_version", "mlflow.run_id")
    origin = ", ".join(f"{k.removeprefix('mlflow.')} {meta.tags[k]}" for k in shown
                       if k in meta.tags)  # fmt: skip
    typer.echo(f"imported {name} v{meta.version} (sha256 {meta.sha256[:12]}...) from MLflow "
               f"{source}{f' ({origin})' if origin else ''}{promoted}")  # fmt: skip
    _print_schema(meta.signature.input_schema)


def follow(
    name: str = typer.Argument(help="predictq model name."),
    mlflow: str = typer.Option(
        ..., "--mlflow", help="The MLflow alias to follow: models:/NAME@ALIAS."
    ),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", help="The predictq alias kept in step."),
    interval: float = typer.Option(30.0, "--interval", help="Seconds between checks."),
    heartbeat: Path | None = typer.Option(
        None,
        "--heartbeat",
        help="A file touched after each check, for a health check to read its age.",
    ),
) -> None:
    """Keep ALIAS of NAME in step with an MLflow alias: import, check and promote each version
    it moves to. Runs until SIGTERM or Ctrl-C; logs one line per action."""
    from .follow import Follower
    from .mlflow import lower_mlflow_retries

    lower_mlflow_retries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    follower = Follower(name, mlflow, alias=alias, interval=interval)
    stop = threading.Event()

    def stopping(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        # A second signal stops at once, even in the middle of a download.
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    follower.run(stop, heartbeat=heartbeat)
