"""Safe defaults: Redis passwords and ACL users, input limits, and a property test of the
validator (no input crashes it; whatever it accepts is finite and well-shaped)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from producer import Client, validate_rows
from registry import InvalidInput, RedisUnavailable, Registry, Settings, Signature
from registry.embedded import redis_args, wait_until_answers

from .conftest import free_port


@pytest.fixture
def locked_redis(tmp_path: Path):
    """A redis-server that needs a password, with an extra ACL user for predictq."""
    port = free_port()
    proc = subprocess.Popen([*redis_args(port, tmp_path / "locked", daemonize=False),
                             "--requirepass", "s3cret"])  # fmt: skip
    try:
        wait_until_answers(f"redis://:s3cret@127.0.0.1:{port}/0", timeout=10)
        admin = redis.Redis(port=port, password="s3cret")
        admin.acl_setuser("pq", enabled=True, passwords=["+pq-pass"], keys=["*"],
                          channels=["*"], commands=["+@all"])  # fmt: skip
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("userinfo", [":s3cret", "pq:pq-pass"])
def test_password_and_acl_user_urls_work_end_to_end(
    locked_redis: int, userinfo: str, settings: Settings, fitted, start_worker
) -> None:
    url = f"redis://{userinfo}@127.0.0.1:{locked_redis}/0"
    s = settings.model_copy(update={"redis_url": SecretStr(url)})
    Registry(settings=s).register("clf", fitted, promote=True)
    start_worker(PREDICTQ_REDIS_URL=url, redis_client=redis.Redis.from_url(url))
    with Client(settings=s) as client:
        assert client.wait(client.submit("clf", [[0.0] * 6]), timeout=30).status == "succeeded"


def test_a_wrong_password_is_refused(locked_redis: int, tmp_path: Path) -> None:
    url = f"redis://:wrong@127.0.0.1:{locked_redis}/0"
    with pytest.raises(RedisUnavailable, match="refused the user or password") as refused:
        Registry(settings=Settings(redis_url=url, artifact_dir=tmp_path)).models()
    assert isinstance(refused.value.__cause__, redis.AuthenticationError)


def test_a_million_rows_and_oversized_jobs_are_refused_before_anything_is_enqueued(
    client: Client, promoted: str, r
) -> None:
    with pytest.raises(InvalidInput, match="1000000 rows is more than the limit"):
        client.submit(promoted, [[0.0] * 6] * 1_000_000)
    small = Client(settings=client.settings.model_copy(update={"max_job_bytes": 2000}))
    with pytest.raises(InvalidInput, match="over the limit of 2000"):
        small.submit(promoted, [[0.123456789] * 6] * 50)
    nested: list = [0.0]
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(InvalidInput, match="row 0 has 1 values"):
        client.submit(promoted, nested)
    assert r.llen("predictq") == 0


SIG = Signature(n_features=3, feature_names=["a", "b", "c"], has_predict_proba=False,
                estimator="x.Y")  # fmt: skip
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(), st.none(),
    st.text(max_size=3),
)  # fmt: skip
rows = st.one_of(
    st.lists(values, max_size=5),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), values, max_size=4),
    values,
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(rows, max_size=6), values))
def test_the_validator_accepts_only_finite_well_shaped_rows_and_never_crashes(data) -> None:
    try:
        out = validate_rows(data, SIG, max_rows=4)
    except InvalidInput as e:
        assert e.code == "invalid_input" and e.message
        return
    assert 1 <= len(out) <= 4
    for row in out:
        assert len(row) == 3
        assert all(type(v) in (int, float) and math.isfinite(v) for v in row)
