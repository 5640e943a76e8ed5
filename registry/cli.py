"""``predictq models ...``: the registry commands."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from . import mlflow_cli
from .console import echo_json, make_console, make_table
from .errors import InvalidInput, SchemaWarning
from .registry import DEFAULT_ALIAS, Registry
from .schema import InputSchema

app = typer.Typer(help="Register, promote, roll back and inspect model versions.",
                  no_args_is_help=True, rich_markup_mode=None)  # fmt: skip
console = make_console()  # literal text (a name or path may hold [brackets]), unwrapped piped


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must look like KEY=VALUE")
        out[key] = value
    return out


@app.command()
def register(
    name: str = typer.Argument(help="Model name."),
    path: Path = typer.Argument(
        help="A fitted estimator saved with joblib.dump.", exists=True, dir_okay=False
    ),
    promote: bool = typer.Option(False, "--promote", help="Promote the new version at once."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", help="Alias --promote moves."),
    description: str | None = typer.Option(None, "--description", "-d"),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE, repeatable."),
    metric: list[str] = typer.Option([], "--metric", help="KEY=NUMBER, repeatable."),
    input_example: Path | None = typer.Option(
        None,
        "--input-example",
        exists=True,
        dir_okay=False,
        help="A CSV of a few rows the model takes (with a header): types the input columns "
        "(strings, booleans, integers, missing values). Without it they are read off the "
        "fitted model.",
    ),
) -> None:
    """Register a joblib file as the next version of NAME."""
    metrics_raw = _pairs(metric, "metric")
    try:
        metrics = {k: float(v) for k, v in metrics_raw.items()}
    except ValueError as e:
        raise InvalidInput(f"metric values must be numbers: {e}") from e
    example = _read_example(input_example) if input_example is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SchemaWarning)
        meta = Registry().register(
            name, path, promote=promote, alias=alias, description=description,
            tags=_pairs(tag, "tag"), metrics=metrics, input_example=example,
        )  # fmt: skip
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    promoted = f" and promoted to {alias!r}" if promote else ""
    console.print(f"registered {name} v{meta.version} (sha256 {meta.sha256[:12]}...){promoted}")
    _print_schema(meta.signature.input_schema)


def _read_example(path: Path) -> Any:
    """A CSV input example as pandas reads it: strings stay strings, empty cells are missing."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, encoding="utf-8-sig")
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path} could not be read as a CSV input example: {e}") from e
    if frame.empty:
        raise InvalidInput(f"{path} has no rows: an input example needs a header and rows")
    return frame


def _print_schema(schema: InputSchema) -> None:
    table = make_table("column", "type", "missing allowed", "known values",
                       title=f"input schema (from the {schema.source})")  # fmt: skip
    for column in schema.columns:
        known = column.categories
        shown = "-" if known is None else ", ".join(str(k) for k in known[:10])
        if known is not None and len(known) > 10:
            shown += f", ... ({len(known)})"
        table.add_row(column.name, column.type, "yes" if column.nullable else "no", shown)
    console.print(table)


@app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list (see README)."),
) -> None:
    """List every model with its versions and aliases."""
    reg = Registry()
    if as_json:
        echo_json([_summary(reg, name) for name in reg.models()])
        return
    table = make_table("model", "versions", "aliases", "latest")
    for name in reg.models():
        versions = reg.versions(name)
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(reg.aliases(name).items()))
        latest = versions[-1] if versions else None
        table.add_row(
            name,
            str(len(versions)),
            aliases or "-",
            f"v{latest.version} {latest.created_at:%Y-%m-%d %H:%M}" if latest else "-",
        )
    console.print(table)


def _summary(reg: Registry, name: str) -> dict[str, Any]:
    """A model as ``models list --json`` prints it."""
    versions = reg.versions(name)
    latest = versions[-1] if versions else None
    return {
        "name": name,
        "versions": [m.version for m in versions],
        "aliases": reg.aliases(name),
        "latest": latest.version if latest else None,
        "latest_created_at": latest.created_at.isoformat() if latest else None,
    }


@app.command()
def show(
    name: str = typer.Argument(help="Model name."),
    version: int | None = typer.Argument(None, help="A version; all versions when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (see README)."),
) -> None:
    """Show a model's versions, aliases and history, or one version's full metadata."""
    reg = Registry()
    if version is not None:
        # JSON alone, for scripts: the schema is in it (signature.input_schema).
        record = reg.get(name, version=version).model_dump_json()
        if as_json:
            typer.echo(record)
        else:
            console.print_json(record)
        return
    if as_json:
        echo_json({"name": name, "aliases": reg.aliases(name),
                   "versions": [m.model_dump(mode="json") for m in reg.versions(name)],
                   "history": [e.model_dump(mode="json") for e in reg.history(name)]})  # fmt: skip
        return
    aliases = reg.aliases(name)
    table = make_table("version", "aliases", "estimator", "features", "sha256", "created",
                       "metrics")  # fmt: skip
    for meta in reg.versions(name):
        on = ", ".join(a for a, v in aliases.items() if v == meta.version)
        if meta.archived:
            on = f"archived {meta.archived_at:%Y-%m-%d} by {meta.archived_by}"
        table.add_row(
            str(meta.version), on or "-", meta.signature.estimator.rsplit(".", 1)[-1],
            str(meta.signature.n_features), meta.sha256[:12],
            f"{meta.created_at:%Y-%m-%d %H:%M:%S}",
            ", ".join(f"{k}={v:g}" for k, v in meta.metrics.items()) or "-",
        )  # fmt: skip
    console.print(table)
    served = aliases.get(DEFAULT_ALIAS)
    if served is not None:
        _print_schema(reg.get(name, version=served).signature.input_schema)
    history = reg.history(name)[-10:]
    if history:
        hist = make_table("when", "action", "alias", "from", "to", "who",
                          title="promotion history")  # fmt: skip
        for e in history:
            hist.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.action, e.alias or "-",
                         f"v{e.from_version}" if e.from_version else "-", f"v{e.to_version}",
                         e.who)  # fmt: skip
        console.print(hist)


@app.command()
def promote(
    name: str = typer.Argument(help="Model name."),
    version: int = typer.Argument(help="Version to promote."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a"),
    force: bool = typer.Option(
        False, "--force", help="Promote even if its input schema differs from the served one."
    ),
) -> None:
    """Point ALIAS at VERSION; running workers switch without a restart.

    Refused when VERSION's input schema is incompatible with the version ALIAS serves (the
    difference is shown), unless --force.
    """
    Registry().promote(name, version, alias=alias, force=force)
    console.print(f"{name} {alias!r} -> v{version}")


@app.command()
def rollback(
    name: str = typer.Argument(help="Model name."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", "-a"),
) -> None:
    """Point ALIAS back at the version it had before its last promotion."""
    meta = Registry().rollback(name, alias=alias)
    console.print(f"{name} {alias!r} rolled back to v{meta.version}")


@app.command()
def archive(
    name: str = typer.Argument(help="Model name."),
    version: int = typer.Argument(help="Version to archive."),
) -> None:
    """Keep VERSION for audit but serve it no more (refused while an alias points at it)."""
    Registry().archive(name, version)
    console.print(f"{name} v{version} archived")


@app.command()
def unarchive(
    name: str = typer.Argument(help="Model name."),
    version: int = typer.Argument(help="Version to serve again."),
) -> None:
    """Make an archived VERSION promotable and servable again."""
    Registry().unarchive(name, version)
    console.print(f"{name} v{version} unarchived")


@app.command()
def delete(
    name: str = typer.Argument(help="Model name."),
    version: int = typer.Argument(help="Version to delete."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete VERSION and, unless another version has the same bytes, its artifact.

    Refused while an alias points at it. Its number is never given out again.
    """
    if not yes:
        typer.confirm(f"Delete {name} v{version}? This cannot be undone", abort=True)
    meta = Registry().delete(name, version)
    console.print(f"{name} v{version} deleted (sha256 {meta.sha256[:12]}...)")


@app.command()
def rebuild() -> None:
    """Restore versions, aliases and history into Redis from the artifact store."""
    reg = Registry()
    count = reg.rebuild()
    console.print(f"restored {count} version(s) of {len(reg.models())} model(s) "
                  f"from {reg.store.location}")  # fmt: skip


# Models from MLflow (registry/mlflow_cli.py): listed after the registry's own commands.
app.command("import")(mlflow_cli.import_model)
app.command()(mlflow_cli.follow)
