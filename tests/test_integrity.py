"""A tampered artifact fails with integrity_error and is never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from producer import Client
from registry import IntegrityError, Registry


class _Canary:
    """Unpickling this creates a file: proof that the payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


def test_a_tampered_artifact_fails_with_integrity_error_and_is_never_unpickled(
    registry: Registry, client: Client, fitted, tmp_path, start_worker
) -> None:
    meta = registry.register("clf", fitted)
    canary = tmp_path / "canary"
    registry.store.blob_path(meta.sha256).write_bytes(pickle.dumps(_Canary(canary)))
    start_worker()

    res = client.wait(client.submit("clf", [[0.0] * 6], version=1), timeout=30)

    assert res.status == "failed"
    assert res.error is not None and res.error.code == "integrity_error"
    assert "SHA-256" in res.error.message and "not loaded" in res.error.message
    assert not canary.exists()


def test_the_registry_refuses_to_load_a_tampered_artifact(
    registry: Registry, fitted, tmp_path
) -> None:
    meta = registry.register("clf", fitted)
    canary = tmp_path / "canary"
    registry.store.blob_path(meta.sha256).write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(IntegrityError):
        registry.load(meta)
    assert not canary.exists()
