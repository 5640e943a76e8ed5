"""Registry safety rails: archive, delete, who made a change, and models that need custom code."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from producer import Client
from registry import (
    IncompatibleSchema,
    MissingModule,
    ModelNotFound,
    Registry,
    Settings,
    VersionConflict,
    keys,
)

from .conftest import REPO, ApiServer, wait_for
from .poison import SlowClassifier


def _constant(value: int, dataset) -> DummyClassifier:
    x, y = dataset
    return DummyClassifier(strategy="constant", constant=value).fit(x, y)


def predictq(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], env={**os.environ, **env}, cwd=REPO,
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- promotion checks the input schema -------------------------------------------------------


def test_promote_refuses_a_version_with_an_incompatible_schema_until_forced(
    registry: Registry, env, dataset, api: ApiServer
) -> None:
    x, y = dataset
    registry.register("iris", LogisticRegression().fit(x, y), promote=True)
    wider = LogisticRegression().fit(np.hstack([x, x[:, :4]]), y)  # 10 features, not 6
    registry.register("iris", wider)

    with pytest.raises(IncompatibleSchema) as refused:
        registry.promote("iris", 2)
    assert "columns added: x6, x7, x8, x9" in refused.value.message
    assert "--force" in refused.value.message
    assert registry.resolve("iris") == 1  # nothing moved

    cli = predictq(env, "models", "promote", "iris", "2")
    assert cli.returncode == 1 and "incompatible_schema" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
    with api.http("ops") as http:
        answer = http.post("/v1/models/iris/versions/2/promote")
        assert answer.status_code == 409 and "columns added" in answer.text
        assert registry.resolve("iris") == 1
        forced = http.post("/v1/models/iris/versions/2/promote", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert registry.resolve("iris") == 2
    # Back to v1 needs the same force: v2's callers send ten features.
    with pytest.raises(IncompatibleSchema, match="columns removed"):
        registry.promote("iris", 1)
    assert predictq(env, "models", "promote", "iris", "1", "--force").returncode == 0
    assert registry.resolve("iris") == 1


def test_promote_takes_a_compatible_version_and_an_alias_serving_nothing(
    registry: Registry, dataset
) -> None:
    x, y = dataset
    registry.register("m", LogisticRegression().fit(x, y))
    registry.register("m", _constant(1, dataset))  # the same six columns
    registry.promote("m", 1, alias="canary")  # an alias that served nothing: no check
    registry.promote("m", 2, alias="canary")
    assert registry.resolve("m", "canary") == 2


# -- archive ---------------------------------------------------------------------------------


def test_archiving_or_deleting_a_version_an_alias_serves_is_refused_naming_the_alias(
    registry: Registry, fitted
) -> None:
    registry.register("clf", fitted, promote=True)
    registry.promote("clf", 1, alias="canary")
    with pytest.raises(VersionConflict) as archived:
        registry.archive("clf", 1)
    with pytest.raises(VersionConflict) as deleted:
        registry.delete("clf", 1)

    assert archived.value.message == (
        "cannot archive clf v1: aliases 'canary' and 'production' serve it; point each at "
        "another version first with `predictq models promote clf VERSION --alias canary` or "
        "`predictq models rollback clf --alias canary`"
    )
    assert deleted.value.message.startswith("cannot delete clf v1: aliases 'canary' and")
    assert not registry.get("clf", version=1).archived
    assert [e.action for e in registry.history("clf")] == ["promote", "promote"]


def test_an_archived_version_is_kept_for_audit_and_refused_by_promote_and_at_submission(
    registry: Registry, client: Client, fitted, dataset, r
) -> None:
    x, _ = dataset
    registry.register("clf", fitted, promote=True)
    registry.register("clf", fitted)

    meta = registry.archive("clf", 2, actor="alice")
    assert (meta.archived, meta.archived_by) == (True, "alice")
    assert [v.archived for v in registry.versions("clf")] == [False, True]
    with pytest.raises(VersionConflict) as promoted:
        registry.promote("clf", 2)
    assert promoted.value.message == (
        "clf v2 is archived: unarchive it first with `predictq models unarchive clf 2`, "
        "or promote another version"
    )
    with pytest.raises(ModelNotFound, match=r"clf v2 is archived and serves no jobs"):
        client.submit("clf", x[:1], version=2)
    assert registry.aliases("clf") == {"production": 1}

    r.flushdb()  # the archive survives a rebuild from the store
    registry.rebuild()
    assert registry.get("clf", version=2).archived_by == "alice"

    registry.unarchive("clf", 2)
    registry.promote("clf", 2)
    assert registry.get("clf").version == 2
    assert [(e.action, e.to_version) for e in registry.history("clf")] == [
        ("promote", 1), ("archive", 2), ("unarchive", 2), ("promote", 2),
    ]  # fmt: skip
    assert registry.history("clf")[1].who == "alice"


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_the_manifest_and_the_blob_only_once_no_version_uses_it(
    registry: Registry, fitted, dataset, tmp_path
) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(fitted, path)
    shared = registry.register("clf", path, promote=True)  # clf v1
    registry.register("clf", path)  # clf v2, the same bytes
    registry.register("other", path)  # other v1, the same bytes under another model
    registry.register("clf", _constant(1, dataset))  # clf v3, other bytes
    blob = registry.store.blob_path(shared.sha256)

    registry.delete("clf", 2, actor="alice")
    assert blob.exists()
    assert [(m.name, m.version) for m in registry.store.manifests()] == [
        ("clf", 1), ("clf", 3), ("other", 1),
    ]  # fmt: skip
    with pytest.raises(ModelNotFound, match=r"clf v2 was deleted \(.* by alice\): pin another"):
        registry.get("clf", version=2)
    assert [v.version for v in registry.versions("clf")] == [1, 3]

    registry.delete("other", 1)
    assert blob.exists()  # clf v1 still has these bytes
    registry.promote("clf", 3)
    registry.delete("clf", 1)
    assert not blob.exists()
    assert [(e.action, e.to_version, e.who) for e in registry.history("clf")][1] == (
        "delete", 2, "alice",
    )  # fmt: skip


def test_a_deleted_version_leaves_the_rollback_stack_and_its_number_is_never_reused(
    registry: Registry, fitted, r
) -> None:
    for _ in range(4):
        registry.register("clf", fitted, promote=True)  # v4 served; v1..v3 to roll back to
    registry.register("clf", fitted)  # v5, the highest number
    registry.delete("clf", 3)
    registry.delete("clf", 5)
    assert r.lrange(keys.model_stack("clf", "production"), 0, -1) == ["1", "2"]

    r.flushdb()  # Redis lost everything and nobody ran rebuild
    assert registry.register("clf", fitted).version == 6
    r.flushdb()
    registry.rebuild()
    assert registry.register("clf", fitted).version == 7
    assert registry.rollback("clf").version == 2
    assert registry.rollback("clf").version == 1


# -- the worker stops serving what was archived or deleted -----------------------------------


def test_a_running_worker_stops_serving_a_version_once_it_is_archived_or_deleted(
    registry: Registry, client: Client, settings: Settings, dataset, start_worker
) -> None:
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    w = start_worker()
    # A client that trusts what it cached for long: only the worker can refuse its jobs.
    stale = Client(settings=settings.model_copy(update={"alias_cache_seconds": 600}))

    def pinned() -> tuple[str, str | None, str]:
        res = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        return (
            res.status,
            res.error.code if res.error else None,
            res.error.message if res.error else "",
        )

    try:
        assert pinned() == ("succeeded", None, "")  # v2 is loaded in the pool process now
        registry.archive("m", 2)
        wait_for(lambda: "m v2: archive;" in w.output(), 30, "the worker to hear of the archive")
        status, code, message = pinned()
        assert (status, code) == ("failed", "model_not_found")
        assert message.startswith("m v2 is archived and serves no jobs")

        registry.unarchive("m", 2)
        wait_for(lambda: "m v2: unarchive;" in w.output(), 30, "the worker to hear of it")
        assert pinned() == ("succeeded", None, "")

        registry.delete("m", 2)
        wait_for(lambda: "m v2: delete;" in w.output(), 30, "the worker to hear of the delete")
        status, code, message = pinned()
        assert (status, code) == ("failed", "model_not_found")
        assert "m v2 was deleted" in message
        with pytest.raises(ModelNotFound, match="m v2 was deleted"):
            client.submit("m", x[:1], version=2)
        assert client.wait(client.submit("m", x[:1]), timeout=30).predictions == [0]
    finally:
        stale.close()


# -- audit -----------------------------------------------------------------------------------


def test_changes_made_over_http_record_the_api_keys_name(
    api: ApiServer, registry: Registry, fitted
) -> None:
    for promote in (True, False, False):
        registry.register("clf", fitted, promote=promote)
    with api.http("ops") as ops:
        promoted = ops.post("/v1/models/clf/versions/2/promote")
        rolled = ops.post("/v1/models/clf/rollback")
        served = ops.post("/v1/models/clf/versions/1/archive")
        archived = ops.post("/v1/models/clf/versions/3/archive")
        refused = ops.post("/v1/models/clf/versions/3/promote")
        deleted = ops.delete("/v1/models/clf/versions/2")
        gone = ops.get("/v1/models/clf/versions/2")
    with api.http("reader") as reader:
        forbidden = reader.delete("/v1/models/clf/versions/3")

    assert (promoted.status_code, rolled.status_code) == (200, 200)
    assert served.status_code == 409 and served.json()["code"] == "version_conflict"
    assert "alias 'production' serves it" in served.json()["message"]
    assert archived.status_code == 200 and archived.json()["archived_by"] == "ops"
    assert refused.status_code == 409 and "is archived" in refused.json()["message"]
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert gone.status_code == 404 and "was deleted" in gone.json()["message"]
    assert forbidden.status_code == 403
    history = [(e.action, e.to_version, e.who) for e in registry.history("clf")]
    assert history[1:] == [
        ("promote", 2, "ops"), ("rollback", 1, "ops"), ("archive", 3, "ops"), ("delete", 2, "ops"),
    ]  # fmt: skip
    assert history[0][2] != "ops"  # registered and promoted in Python: user@host


def test_the_cli_archives_and_deletes_and_refuses_in_one_line(env, fitted, tmp_path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(fitted, path)
    assert predictq(env, "models", "register", "clf", str(path), "--promote").returncode == 0
    assert predictq(env, "models", "register", "clf", str(path)).returncode == 0

    archived = predictq(env, "models", "archive", "clf", "2")
    show = predictq(env, "models", "show", "clf")
    served = predictq(env, "models", "delete", "clf", "1", "--yes")
    declined = predictq(env, "models", "delete", "clf", "2", stdin="n\n")
    deleted = predictq(env, "models", "delete", "clf", "2", "--yes")

    assert archived.returncode == 0 and "clf v2 archived" in archived.stdout
    assert "archived" in show.stdout and "archive" in show.stdout
    assert served.returncode == 1
    assert served.stderr.startswith("error (version_conflict): cannot delete clf v1: alias")
    assert served.stderr.count("\n") == 1 and "Traceback" not in served.stderr
    assert declined.returncode == 1
    assert deleted.returncode == 0 and "clf v2 deleted" in deleted.stdout


# -- custom code -----------------------------------------------------------------------------

_SLOWMOD = """
from sklearn.base import BaseEstimator, TransformerMixin


class Doubler(TransformerMixin, BaseEstimator):
    def fit(self, x, y=None):
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x):
        return x * 2
"""

# A module that imports another at its top: the artifact names only the first.
_WRAPMOD = """
import deepdep
from sklearn.base import BaseEstimator, TransformerMixin


class Tripler(TransformerMixin, BaseEstimator):
    def fit(self, x, y=None):
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x):
        return x * deepdep.FACTOR
"""


@pytest.fixture
def code_dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """slowmod, wrapmod and deepdep, each in its own directory, importable by this process."""
    dirs = {}
    for module, source in (("slowmod", _SLOWMOD), ("wrapmod", _WRAPMOD), ("deepdep", "FACTOR = 3")):
        d = dirs[module] = tmp_path / f"code-{module}"
        d.mkdir()
        (d / f"{module}.py").write_text(textwrap.dedent(source))
        sys.path.insert(0, str(d))
    importlib.invalidate_caches()
    yield dirs
    for module, d in dirs.items():
        _unimport(module, d)


def _unimport(module: str, directory: Path) -> None:
    """Make ``module`` unimportable here again, as on a machine that never installed it."""
    sys.modules.pop(module, None)
    if str(directory) in sys.path:
        sys.path.remove(str(directory))
    importlib.invalidate_caches()


def _fit_with(module: str, cls: str, dataset) -> object:
    x, y = dataset
    step = getattr(importlib.import_module(module), cls)()
    return make_pipeline(step, LogisticRegression(max_iter=1000)).fit(x, y)


def test_registration_records_the_modules_and_refuses_one_not_importable_in_one_line(
    registry: Registry, env, code_dirs, dataset, tmp_path, r
) -> None:
    path = tmp_path / "custom.joblib"
    joblib.dump(_fit_with("slowmod", "Doubler", dataset), path)
    meta = registry.register("ok", path)
    assert {"slowmod", "sklearn", "numpy"} <= set(meta.modules or [])

    _unimport("slowmod", code_dirs["slowmod"])
    with pytest.raises(MissingModule) as refused:
        registry.register("clf", path)
    cli = predictq(env, "models", "register", "clf", str(path))

    expected = (
        "model needs module 'slowmod', which is not importable here: install the package that "
        "provides it (or set PYTHONPATH) and register again"
    )
    assert refused.value.message == expected
    assert refused.value.__cause__ is None  # refused from the opcodes, before any unpickling
    assert cli.returncode == 1
    assert cli.stderr == f"error (missing_module): {expected}\n"
    assert registry.models() == ["ok"] and r.get(keys.model_seq("clf")) is None


def test_a_worker_without_a_models_module_fails_the_job_with_advice_to_install_it(
    registry: Registry, client: Client, code_dirs, dataset, start_worker
) -> None:
    x, _ = dataset
    registry.register("slow", _fit_with("slowmod", "Doubler", dataset), promote=True)
    registry.register("wrap", _fit_with("wrapmod", "Tripler", dataset), promote=True)
    path = os.environ.get("PYTHONPATH", "")
    # wrapmod is installed, but not deepdep, which it imports: only the unpickling can tell.
    w = start_worker(PYTHONPATH=os.pathsep.join([str(code_dirs["wrapmod"]), path]))
    slow = client.wait(client.submit("slow", x[:1]), timeout=30)
    wrap = client.wait(client.submit("wrap", x[:1]), timeout=30)
    w.stop()

    for res, module in ((slow, "slowmod"), (wrap, "deepdep")):
        assert res.status == "failed" and res.error is not None
        assert res.error.code == "missing_module"
        assert f"needs module {module!r}, which is not importable on worker" in res.error.message
        assert "install the package that provides it on the workers" in res.error.message

    everything = os.pathsep.join([*(str(d) for d in code_dirs.values()), path])
    start_worker(PYTHONPATH=everything)
    for model in ("slow", "wrap"):
        assert client.wait(client.submit(model, x[:1]), timeout=30).status == "succeeded"


# -- races found in review ---------------------------------------------------------------------


def test_an_alias_job_already_running_survives_promote_then_archive_of_the_old_version(
    registry: Registry, client: Client, dataset, start_worker
) -> None:
    """The usual clean-up, 'promote v2 then archive v1', while a job of the alias is running
    (started on v1; the batch window keeps it between START and its model lookup)."""
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    w = start_worker(PREDICTQ_BATCH_WINDOW_MS="6000")
    job = client.submit("m", x[:1])  # alias production -> v1
    wait_for(lambda: client.result(job).status == "running", 30, "the job to start")

    registry.promote("m", 2)
    registry.archive("m", 1)
    wait_for(lambda: "m v1: archive;" in w.output(), 30, "the worker to hear of the archive")

    res = client.wait(job, timeout=30)
    assert res.status == "succeeded", (res.version, res.error)


def test_a_pinned_job_right_after_unarchive_is_not_refused_as_archived(
    registry: Registry, client: Client, settings: Settings, dataset, start_worker
) -> None:
    x, y = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    registry.register("slow", SlowClassifier(delay=3.0).fit(x, y), promote=True)
    w = start_worker()
    stale = Client(settings=settings.model_copy(update={"alias_cache_seconds": 600}))
    try:
        first = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert first.status == "succeeded", first.error  # stale has v2's metadata cached
        registry.archive("m", 2)
        wait_for(lambda: "pool process exiting" in w.output(), 30, "the pool process to recycle")
        # A fresh pool process sees v2 archived, and remembers that for 30 s.
        refused = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert refused.status == "failed" and refused.error is not None
        assert "is archived" in refused.error.message

        slow = client.submit("slow", x[:1])  # keeps that process busy for 3 s
        wait_for(lambda: client.result(slow).status == "running", 30, "the slow job to start")
        registry.unarchive("m", 2)
        wait_for(lambda: "m v2: unarchive;" in w.output(), 30, "the worker to hear of it")
        job = client.submit("m", x[:1], version=2)  # v2 is servable again: the client agrees

        res = client.wait(job, timeout=30)
        assert client.wait(slow, timeout=30).status == "succeeded"
        assert res.status == "succeeded", res.error
    finally:
        stale.close()


def test_a_worker_serving_other_models_stops_serving_an_archived_version_it_loaded(
    registry: Registry, settings: Settings, dataset, start_worker
) -> None:
    """PREDICTQ_MODELS only says what a worker preloads: it still runs every model's jobs, and
    loads pinned versions on demand. Its listener skips notices for models outside that list."""
    x, _ = dataset
    registry.register("m", _constant(0, dataset), promote=True)
    registry.register("m", _constant(1, dataset))
    start_worker(PREDICTQ_MODELS="other")
    stale = Client(settings=settings.model_copy(update={"alias_cache_seconds": 600}))
    try:
        first = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
        assert first.status == "succeeded", first.error  # v2 loaded in the pool process
        registry.archive("m", 2)
        outcomes: list[str] = []
        deadline = time.monotonic() + 10  # a served model's worker refuses within a second
        while time.monotonic() < deadline:  # polling: each round is a whole job
            res = stale.wait(stale.submit("m", x[:1], version=2), timeout=30)
            outcomes.append(res.status)
            if res.status == "failed":
                break
        served = outcomes.count("succeeded")
        assert outcomes[-1] == "failed", f"archived v2 kept serving {served} jobs over 10 s"
    finally:
        stale.close()


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


class NotebookModel(ClassifierMixin, BaseEstimator):
    """A class defined where the model was trained: a notebook, a script (``__main__``)."""

    def fit(self, x, y):  # type: ignore[no-untyped-def]
        self.n_features_in_ = x.shape[1]
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x):  # type: ignore[no-untyped-def]
        return (x[:, 0] > 0).astype(int)


def test_a_class_defined_in_main_is_refused_at_registration(registry: Registry, dataset) -> None:
    """Every process has a __main__, so it always looks importable; no worker has the
    notebook's, so registration refuses it."""
    x, y = dataset
    main = sys.modules["__main__"]
    original = NotebookModel.__module__
    NotebookModel.__module__ = "__main__"
    main.NotebookModel = NotebookModel  # type: ignore[attr-defined]
    try:
        with pytest.raises(MissingModule, match="defined in __main__"):
            registry.register("nb", NotebookModel().fit(x, y), promote=True)
    finally:
        NotebookModel.__module__ = original
        del main.NotebookModel  # type: ignore[attr-defined]
    assert registry.models() == []
