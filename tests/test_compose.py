"""docker-compose.yml cannot run here (no Docker engine), so check what it would run."""

from __future__ import annotations

import subprocess
import sys

import yaml

from .conftest import REPO


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_predictq_service_runs_a_real_predictq_command() -> None:
    services = _compose()["services"]
    entrypoint = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["predictq"]' in entrypoint
    ours = {name: s for name, s in services.items() if s.get("build") == "."}
    assert set(ours) == {"worker", "flower", "api"}
    for name, service in ours.items():
        argv = [str(a) for a in service["command"]]
        # --help parses every option given, so an unknown command or flag fails here.
        check = subprocess.run(
            [sys.executable, "-m", "worker", *argv, "--help"], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert check.returncode == 0, f"{name}: predictq {' '.join(argv)}: {check.stderr}"


def test_redis_runs_with_aof_a_password_and_no_eviction() -> None:
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--requirepass ${REDIS_PASSWORD" in command
    assert "--maxmemory-policy noeviction" in command
    worker_env = _compose()["services"]["worker"]["environment"]
    assert worker_env["PREDICTQ_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")


def test_the_api_service_takes_its_keys_from_the_environment_and_the_image_installs_it() -> None:
    api = _compose()["services"]["api"]
    env = api["environment"]
    # Required from the environment, with no default secret to fall back on.
    assert env["PREDICTQ_API_KEYS"].startswith("${PREDICTQ_API_KEYS:?")
    assert (
        env["PREDICTQ_REDIS_URL"]
        == _compose()["services"]["worker"]["environment"]["PREDICTQ_REDIS_URL"]
    )
    assert "8000:8000" in api["ports"]
    assert "api" in (REPO / "Dockerfile").read_text().split("pip install")[1].split("\n")[0]
