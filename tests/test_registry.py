"""Registry: atomic versions, metadata, aliases, history, rollback and rebuild."""

from __future__ import annotations

import sys
import threading

import joblib
import numpy as np
import pytest
import sklearn

from registry import ModelNotFound, NothingToRollBack, Registry, Settings


def test_register_records_signature_environment_and_metadata(
    registry: Registry, fitted, tmp_path
) -> None:
    meta = registry.register(
        "clf", fitted, description="first", tags={"team": "risk"}, metrics={"auc": 0.91}
    )
    assert meta.version == 1
    assert meta.signature.n_features == 6
    assert meta.signature.classes == [0, 1]
    assert meta.signature.has_predict_proba is True
    assert meta.signature.estimator == "sklearn.linear_model._logistic.LogisticRegression"
    assert meta.environment.sklearn == sklearn.__version__
    assert meta.environment.numpy == np.__version__
    assert meta.environment.python == ".".join(map(str, sys.version_info[:3]))
    assert (meta.description, meta.tags, meta.metrics) == ("first", {"team": "risk"}, {"auc": 0.91})
    assert registry.store.blob_path(meta.sha256).exists()
    assert registry.get("clf", version=1) == meta


def test_register_takes_a_joblib_file_and_stores_it_by_content(
    registry: Registry, fitted, tmp_path
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    a = registry.register("clf", path)
    b = registry.register("clf", path)
    assert (a.version, b.version) == (1, 2)
    assert a.sha256 == b.sha256
    assert registry.store.blob_path(a.sha256).read_bytes() == path.read_bytes()


def test_versions_are_allocated_atomically_under_concurrent_registration(
    settings: Settings, fitted
) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def register() -> None:
        meta = Registry(settings=settings).register("clf", fitted)
        with lock:
            got.append(meta.version)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == list(range(1, 9))


def test_rollback_walks_back_through_promotions_and_then_refuses(
    registry: Registry, fitted
) -> None:
    for _ in range(3):
        registry.register("clf", fitted, promote=True)
    assert registry.get("clf").version == 3
    assert registry.rollback("clf").version == 2
    assert registry.rollback("clf").version == 1
    with pytest.raises(NothingToRollBack, match="no earlier version"):
        registry.rollback("clf")
    assert registry.get("clf").version == 1
    history = registry.history("clf")
    assert [(e.action, e.to_version) for e in history][-2:] == [("rollback", 2), ("rollback", 1)]
    assert all(e.who and e.at for e in history)


def test_promoting_a_missing_version_changes_nothing(registry: Registry, fitted) -> None:
    registry.register("clf", fitted, promote=True)
    with pytest.raises(ModelNotFound, match="has no version 5"):
        registry.promote("clf", 5)
    assert registry.get("clf").version == 1
    assert len(registry.history("clf")) == 1


def test_rebuild_restores_versions_aliases_and_history_after_flushdb(
    registry: Registry, fitted, r
) -> None:
    for _ in range(3):
        registry.register("clf", fitted, promote=True, tags={"k": "v"})
    registry.rollback("clf")
    registry.register("other", fitted, promote=True, alias="staging")
    before = (registry.versions("clf"), registry.aliases("clf"), registry.history("clf"),
              registry.aliases("other"))  # fmt: skip

    r.flushdb()
    with pytest.raises(ModelNotFound):
        registry.get("clf")
    assert registry.rebuild() == 4

    after = (registry.versions("clf"), registry.aliases("clf"), registry.history("clf"),
             registry.aliases("other"))  # fmt: skip
    assert after == before
    assert registry.rollback("clf").version == 1  # the rollback stack came back too
    assert registry.register("clf", fitted).version == 4


def test_a_lost_version_counter_never_reuses_a_number(registry: Registry, fitted, r) -> None:
    registry.register("clf", fitted)
    registry.register("clf", fitted)
    r.flushdb()  # Redis lost everything and nobody ran rebuild
    assert registry.register("clf", fitted).version == 3
