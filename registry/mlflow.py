"""Importing scikit-learn models from MLflow: a model directory, ``runs:/`` or ``models:/``.

An MLflow model is a directory with an ``MLmodel`` file; its ``sklearn`` flavor names the model
file and its ``serialization_format`` (pickle, cloudpickle or skops). The file's own bytes
become the predictq artifact (pickle and cloudpickle load as joblib files do, skops stays
skops), stored and checksummed by ``Registry.register`` like any other. skops trust comes from
PREDICTQ_SKOPS_TRUSTED only: the MLmodel file's ``skops_trusted_types`` is the model vouching
for itself, so it is ignored.

The MLflow signature's column spec (names, types, ``required``) becomes the version's typed
input schema, typed further from the fitted model (categories, imputers). A tensor signature,
or none, leaves the schema to the fitted model, with a SchemaWarning.

URIs are resolved through the MLflow client (``pip install 'predictq[mlflow]'``), against the
tracking server MLFLOW_TRACKING_URI names. A directory needs only the MLmodel parser (PyYAML).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import formats
from .errors import InvalidInput, MlflowUnavailable, ModelNotFound, SchemaWarning
from .models import ModelVersion
from .registry import DEFAULT_ALIAS, Registry
from .schema import Column, ColumnType
from .signature import first_line

__all__ = [
    "MlflowSource",
    "declared_columns",
    "import_mlflow",
    "lower_mlflow_retries",
    "mlflow_client",
    "parse_source",
    "read_mlmodel",
]

# Tags an imported version carries: where it came from in MLflow. `models follow` finds an
# already imported version by the last two.
SOURCE_TAG = "mlflow.source"
RUN_TAG = "mlflow.run_id"
MODEL_TAG = "mlflow.model_name"
VERSION_TAG = "mlflow.model_version"

_HINT = "pip install 'predictq[mlflow]'"
# MLflow column types -> predictq's. Missing ones (binary, datetime, arrays, objects, maps)
# cannot be typed: the schema then comes from the fitted model.
_TYPES: dict[str, ColumnType] = {
    "boolean": "boolean",
    "integer": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "string": "string",
}
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run>[^/]+)/")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise InvalidInput(f"importing from an MLflow URI needs the MLflow client: {_HINT}") from e
    return mlflow


def lower_mlflow_retries() -> None:
    """For a command's own process: fail in seconds when MLflow is down, not after MLflow's
    default of 7 retries with exponential backoff (minutes), and print no progress bars.
    Variables the user set win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def mlflow_client(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (default: MLFLOW_TRACKING_URI)."""
    return _mlflow().MlflowClient(tracking_uri=tracking_uri)


@dataclass
class MlflowSource:
    """What a SOURCE names: a local directory, or a URI MLflow downloads."""

    text: str
    directory: Path | None = None
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.model_name is not None


def parse_source(source: str) -> MlflowSource:
    """Read SOURCE: a directory, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/``,
    or another URI MLflow downloads from."""
    found = _MODELS_URI.match(source)
    if found:
        return MlflowSource(source, model_name=found["name"], model_version=found["version"],
                            alias=found["alias"])  # fmt: skip
    run = _RUNS_URI.match(source)
    if run:
        return MlflowSource(source, run_id=run["run"])
    if _URI.match(source):
        return MlflowSource(source)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise InvalidInput(
            f"{source} is neither an MLflow model directory nor an MLflow URI: give the "
            "directory holding its MLmodel file, or runs:/RUN_ID/PATH, models:/NAME/VERSION or "
            "models:/NAME@ALIAS"
        )
    return MlflowSource(source, directory=path.resolve())


@contextlib.contextmanager
def mlflow_errors(what: str, model: str | None = None) -> Iterator[None]:
    """MLflow's exceptions as one-line predictq errors: unknown names as ModelNotFound,
    anything else (an unreachable server, a refusal) as MlflowUnavailable."""
    try:
        yield
    except (InvalidInput, ModelNotFound, MlflowUnavailable):
        raise
    except Exception as e:
        code = str(getattr(e, "error_code", ""))
        message = first_line(getattr(e, "message", None) or e)
        if code == "RESOURCE_DOES_NOT_EXIST" or (
            code == "INVALID_PARAMETER_VALUE" and "not found" in message
        ):
            raise ModelNotFound(
                f"MLflow has no {what} ({message}): check the name, version or alias in the "
                "MLflow registry, and MLFLOW_TRACKING_URI",
                model=model,
            ) from e
        uri = os.environ.get("MLFLOW_TRACKING_URI", "MLflow's default")
        raise MlflowUnavailable(
            f"MLflow ({uri}) failed on {what}: {message}. Check that the tracking server is up "
            "and MLFLOW_TRACKING_URI names it",
            model=model,
        ) from e


def resolve(source: MlflowSource, tracking_uri: str | None = None) -> MlflowSource:
    """Pin a registered model's alias or version to the version it names now, and read its run
    and description: the metadata the import records, and what is downloaded."""
    if not source.registered:
        return source
    client = mlflow_client(tracking_uri)
    name = source.model_name
    with mlflow_errors(f"model {source.text.removeprefix('models:/')}"):
        if source.alias is not None:
            mv = client.get_model_version_by_alias(name, source.alias)
        else:
            mv = client.get_model_version(name, source.model_version)
    source.model_version = str(mv.version)
    source.run_id = mv.run_id or None
    if mv.description:
        source.tags["mlflow.description"] = str(mv.description)
    return source


def download(source: MlflowSource, into: Path, tracking_uri: str | None = None) -> Path:
    """The local model directory of ``source`` (downloaded into ``into`` when remote)."""
    if source.directory is not None:
        return source.directory
    uri = source.text
    if source.registered:  # the pinned version: the alias may move while this runs
        uri = f"models:/{source.model_name}/{source.model_version}"
    with mlflow_errors(f"artifacts {uri}"):
        local = _mlflow().artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri
        )
    return Path(local)


def read_mlmodel(directory: Path, source: str) -> dict[str, Any]:
    """The parsed MLmodel file of a model directory."""
    path = directory / "MLmodel"
    if not path.is_file():
        raise InvalidInput(
            f"{source} has no MLmodel file: give an MLflow model directory (what "
            "mlflow.sklearn.save_model writes) or a runs:/ or models:/ URI of a logged model"
        )
    try:
        import yaml
    except ImportError as e:
        raise InvalidInput(f"reading an MLmodel file needs PyYAML: {_HINT}") from e
    try:
        parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path} is not a valid MLmodel file: {first_line(e)}") from e
    if not isinstance(parsed, dict):
        raise InvalidInput(f"{path} is not a valid MLmodel file: it holds no mapping")
    return parsed


def _sklearn_file(mlmodel: dict[str, Any], directory: Path, source: str) -> Path:
    """The model file of the sklearn flavor, in a format predictq loads."""
    flavors = mlmodel.get("flavors") or {}
    if not isinstance(flavors, dict):
        raise InvalidInput(f"{source}'s MLmodel file is not valid: its flavors are not a mapping")
    flavor = flavors.get("sklearn")
    if not isinstance(flavor, dict):
        kinds = ", ".join(sorted(str(f) for f in flavors if f != "python_function")) or "none"
        raise InvalidInput(
            f"{source} is not a scikit-learn model (its MLflow flavors: {kinds}): predictq "
            "imports models logged with mlflow.sklearn only"
        )
    fmt = str(flavor.get("serialization_format") or "pickle")
    relative = flavor.get("pickled_model")
    if fmt not in ("pickle", "cloudpickle", "skops") or not relative:
        raise InvalidInput(
            f"{source}'s sklearn flavor has serialization_format {fmt!r} and model file "
            f"{relative!r}: predictq imports pickle, cloudpickle and skops models"
        )
    missing = InvalidInput(f"{source}'s MLmodel names a model file {relative!r} it does not hold")
    try:
        path = (directory / str(relative)).resolve()
        held = path.is_file() and directory.resolve() in path.parents
    except (OSError, ValueError) as e:  # a name too long for the OS, a NUL byte in it
        raise missing from e
    if not held:
        raise missing
    if (fmt == "skops") != (formats.format_of(path) == "skops"):
        raise InvalidInput(
            f"{source}'s model file {relative!r} does not match its serialization_format {fmt!r}"
        )
    return path


def declared_columns(mlmodel: dict[str, Any]) -> tuple[list[Column] | None, str | None]:
    """The input columns of an MLmodel's signature, or None and why they cannot be used."""
    signature = mlmodel.get("signature") or {}
    raw = signature.get("inputs") if isinstance(signature, dict) else None
    if not raw:
        return None, "the MLflow model has no signature"
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None, "the MLflow signature's inputs could not be parsed"
    if not isinstance(specs, list) or not specs:
        return None, "the MLflow signature has no input columns"
    columns = []
    for spec in specs:
        if not isinstance(spec, dict) or spec.get("type") == "tensor":
            return None, "the MLflow signature is a tensor spec, which has no typed columns"
        kind = spec.get("type")
        name = spec.get("name")
        if name is None:
            return None, "the MLflow signature's columns have no names"
        if not isinstance(kind, str) or kind not in _TYPES:
            shown = kind if isinstance(kind, str) else json.dumps(kind)[:40]
            return None, f"column {name!r} of the MLflow signature is {shown}, not a plain type"
        columns.append(Column(name=str(name), type=_TYPES[kind],
                              nullable=spec.get("required", True) is False))  # fmt: skip
    return columns, None


def import_mlflow(
    registry: Registry,
    name: str,
    source: str,
    *,
    promote: bool = False,
    alias: str = DEFAULT_ALIAS,
    tracking_uri: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Register the scikit-learn model of an MLflow ``source`` as the next version of ``name``.

    ``source`` is a model directory, ``runs:/RUN/PATH``, ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS`` (pinned to the version the alias names now) or another URI MLflow
    downloads. Its signature types the input schema; its source, run, model name and version
    become ``mlflow.*`` tags.
    """
    found = resolve(parse_source(source), tracking_uri)
    with tempfile.TemporaryDirectory(prefix="predictq-mlflow-") as tmp:
        directory = download(found, Path(tmp), tracking_uri)
        mlmodel = read_mlmodel(directory, source)
        model_file = _sklearn_file(mlmodel, directory, source)
        if formats.format_of(model_file) == "skops":
            _check_skops_trust(model_file, registry.settings.skops_trusted_types, source)
        columns, why_not = declared_columns(mlmodel)
        if why_not:
            warnings.warn(f"{name}: {why_not}: the input schema is read off the fitted model",
                          SchemaWarning, stacklevel=2)  # fmt: skip
        meta = registry.register(
            name, model_file, promote=promote, alias=alias,
            description=description or found.tags.pop("mlflow.description", None)
            or f"imported from MLflow {source}",
            tags={**_tags(found, mlmodel), **(tags or {})}, input_columns=columns,
        )  # fmt: skip
    return meta


def _check_skops_trust(path: Path, trusted: list[str], source: str) -> None:
    refused = formats.untrusted(path.read_bytes(), trusted)
    if refused:
        raise InvalidInput(
            f"{source}'s skops model holds types outside predictq's allow-list: {refused}. "
            "predictq does not take the MLmodel file's skops_trusted_types (the model would vouch "
            "for itself): add the ones you trust to PREDICTQ_SKOPS_TRUSTED (workers need the "
            "same list)"
        )


def _tags(source: MlflowSource, mlmodel: dict[str, Any]) -> dict[str, str]:
    text = str(source.directory) if source.directory is not None else source.text
    out = {SOURCE_TAG: text}
    run_id = source.run_id or mlmodel.get("run_id")
    if run_id:
        out[RUN_TAG] = str(run_id)
    if source.registered:
        out[MODEL_TAG] = str(source.model_name)
        out[VERSION_TAG] = str(source.model_version)
    if source.alias:
        out["mlflow.alias"] = source.alias
    if mlmodel.get("model_id"):
        out["mlflow.model_id"] = str(mlmodel["model_id"])
    return out
