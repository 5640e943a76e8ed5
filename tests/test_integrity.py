"""A tampered artifact fails with integrity_error and is never unpickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from producer import Client
from registry import IntegrityError, Registry

from .poison import Canary


def test_a_tampered_artifact_fails_with_integrity_error_and_is_never_unpickled(
    registry: Registry, client: Client, fitted, tmp_path, start_worker
) -> None:
    meta = registry.register("clf", fitted)
    canary = tmp_path / "canary"
    registry.store.blob_path(meta.sha256).write_bytes(pickle.dumps(Canary(canary)))
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
    registry.store.blob_path(meta.sha256).write_bytes(pickle.dumps(Canary(canary)))
    with pytest.raises(IntegrityError):
        registry.load(meta)
    assert not canary.exists()


def test_a_skops_artifact_is_served_like_a_joblib_one(
    registry: Registry, client: Client, fitted, dataset, worker
) -> None:
    x, _ = dataset
    meta = registry.register("clf", fitted, promote=True, format="skops")
    assert meta.format == "skops"
    res = client.wait(client.submit("clf", x[:3]), timeout=30)
    assert res.status == "succeeded", res.error
    assert res.predictions == fitted.predict(x[:3]).tolist()


def test_skops_artifacts_with_types_off_the_allow_list_are_refused(
    registry: Registry, settings, client: Client, start_worker
) -> None:
    from registry import InvalidInput

    from .poison import PoisonClassifier

    custom = PoisonClassifier().fit(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(InvalidInput, match=r"outside the allow-list: \['tests.poison"):
        registry.register("custom", custom, format="skops")
    assert registry.models() == []

    trusting = Registry(
        settings=settings.model_copy(update={"skops_trusted": "tests.poison.PoisonClassifier"})
    )
    trusting.register("custom", custom, promote=True, format="skops")
    start_worker()  # its allow-list is the default: the custom type is not on it

    res = client.wait(client.submit("custom", [[1.0, 0.0, 0.0]]), timeout=30)

    assert (res.status, res.error and res.error.code) == ("failed", "integrity_error")
    assert "skops allow-list" in res.error.message
