"""docker-compose.yml cannot run here (no Docker engine), so check what it would run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import redis
import yaml

from registry import Settings, keys

from .conftest import REPO


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_predictq_service_runs_a_real_predictq_command() -> None:
    services = _compose()["services"]
    entrypoint = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["predictq"]' in entrypoint
    ours = {name: s for name, s in services.items() if s.get("build") == "."}
    assert set(ours) == {"worker", "flower", "api", "follow"}
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


def test_every_service_restarts_by_itself_and_has_a_health_check() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "worker", "api", "flower", "follow"}
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped"}, name
        check = service.get("healthcheck", {})
        assert check.get("test"), name
        # A hung check must count as a failure, and a few misses must mark it unhealthy.
        assert {"interval", "timeout", "retries"} <= set(check), name
        assert _seconds(check["timeout"]) <= _seconds(check["interval"]), name


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert match, f"not a duration: {duration}"
    return float(match[1]) * units[match[2]]


def test_the_worker_serves_metrics_inside_the_network_and_stops_after_its_longest_batch() -> None:
    worker = _compose()["services"]["worker"]
    port = worker["environment"]["PREDICTQ_METRICS_PORT"]
    assert port in worker["expose"]
    assert "ports" not in worker  # metrics stay on the compose network
    # The shared settings still reach the worker beside its own.
    assert worker["environment"]["PREDICTQ_ARTIFACT_DIR"] == "/data/artifacts"
    time_limit = Settings.model_fields["time_limit"].default
    assert _seconds(worker["stop_grace_period"]) >= time_limit + 30


def test_redis_is_at_least_version_7() -> None:
    image = _compose()["services"]["redis"]["image"]
    assert image.startswith("redis:"), image
    assert int(image.split(":")[1].split("-")[0].split(".")[0]) >= 7, image


def test_the_worker_health_check_passes_only_while_this_hosts_node_heartbeat_exists(
    r: redis.Redis, env: dict[str, str]
) -> None:
    test = _compose()["services"]["worker"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]

    def check() -> int:
        run = subprocess.run([sys.executable, *test[2:]], env={**os.environ, **env}, cwd=REPO,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert "Traceback" not in run.stderr, run.stderr
        return run.returncode

    r.set(keys.worker("predictq-0@elsewhere"), "{}")
    assert check() == 1
    r.set(keys.worker(f"predictq-1@{socket.gethostname()}"), "{}")
    assert check() == 0
