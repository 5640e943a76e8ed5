"""Review of issue 10: registry races, forced into the interleaving that loses (in-process, with
the real registry code; hooks only pause one side at the point named)."""

from __future__ import annotations

import threading
from pathlib import Path

import joblib
import pytest

from registry import ModelNotFound, Registry, Settings

pytestmark = pytest.mark.timeout(60)


def test_delete_racing_a_registration_of_the_same_bytes_keeps_the_new_versions_blob(
    settings: Settings, fitted, tmp_path: Path
) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(fitted, path)
    deleter, registrar = Registry(settings=settings), Registry(settings=settings)
    old = registrar.register("old", path)  # unpromoted: deletable
    scanned, registered = threading.Event(), threading.Event()
    referenced = deleter.store.referenced

    def paused(sha: str) -> bool:
        answer = referenced(sha)  # scanned before the new manifest exists
        scanned.set()
        registered.wait(20)  # ... and acted on after the registration returned
        return answer

    deleter.store.referenced = paused  # type: ignore[method-assign]
    t = threading.Thread(target=deleter.delete, args=("old", old.version))
    t.start()
    assert scanned.wait(20)
    new = registrar.register("new", path)  # same bytes, same blob
    registered.set()
    t.join(20)

    assert new.sha256 == old.sha256
    try:
        registrar.load(new)
    except ModelNotFound as e:
        pytest.fail(f"the new version lost its artifact: {e.message}")


def test_promote_check_survives_the_served_version_being_replaced_and_deleted(
    settings: Settings, fitted
) -> None:
    a, b = Registry(settings=settings), Registry(settings=settings)
    for promote in (True, False, False):
        a.register("m", fitted, promote=promote)  # v1 served; v2, v3 compatible
    get = a.get
    moved = threading.Event()

    def racing_get(name, version=None, alias="production"):  # type: ignore[no-untyped-def]
        if version == 1 and not moved.is_set():
            moved.set()  # between reading the alias (v1) and reading v1's schema:
            b.promote("m", 3)
            b.delete("m", 1)
        return get(name, version=version, alias=alias)

    a.get = racing_get  # type: ignore[method-assign]
    try:
        a.promote("m", 2)
    except ModelNotFound as e:
        pytest.fail(f"promote of v2 failed naming another version: {e.message}")
    assert a.resolve("m") == 2
