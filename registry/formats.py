"""Artifact formats: joblib (pickle: trusted sources only) and skops (an allow-list of types).

skops serves teams that take models from less trusted sources: loading a skops file builds
only the types it is allowed to, instead of running whatever a pickle says.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import joblib

from .errors import IntegrityError, InvalidInput

Format = Literal["joblib", "skops"]


def format_of(path: Path) -> Format:
    """The format of an artifact file, by its extension."""
    return "skops" if path.suffix == ".skops" else "joblib"


def _skops() -> Any:
    try:
        import skops.io
    except ImportError as e:
        raise InvalidInput(
            "the skops format needs the skops package: pip install 'predictq[skops]'"
        ) from e
    return skops.io


def untrusted(data: bytes, trusted: list[str]) -> list[str]:
    """Types in a skops artifact that neither skops's defaults nor ``trusted`` allow."""
    return [t for t in _skops().get_untrusted_types(data=data) if t not in trusted]


def dumps(estimator: Any, fmt: Format, trusted: list[str]) -> bytes:
    """The artifact bytes of ``estimator``; a skops artifact must load under ``trusted``."""
    if fmt == "joblib":
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        return buffer.getvalue()
    data: bytes = _skops().dumps(estimator)
    refused = untrusted(data, trusted)
    if refused:
        raise InvalidInput(
            f"the skops artifact holds types outside the allow-list: {refused}; add the ones "
            "you trust to PREDICTQ_SKOPS_TRUSTED (workers need the same list), or use joblib"
        )
    return data


def loads(data: bytes, fmt: Format, trusted: list[str], *, model: str, version: int) -> Any:
    """The estimator in ``data`` (already checked against its SHA-256)."""
    if fmt == "joblib":
        return joblib.load(io.BytesIO(data))
    refused = untrusted(data, trusted)
    if refused:
        raise IntegrityError(
            f"artifact of {model} v{version} holds types outside the skops allow-list: "
            f"{refused}; it was not loaded. Add them to PREDICTQ_SKOPS_TRUSTED if you trust them",
            model=model,
            version=version,
        )
    return _skops().loads(data, trusted=trusted or None)
