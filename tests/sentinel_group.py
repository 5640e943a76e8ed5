"""A Sentinel-managed Redis as local processes: a primary, replicas and three sentinels.

The data nodes run Debian's ``/usr/bin/redis-server`` and the sentinels ``/usr/bin/redis-sentinel``,
whatever server the session's other tests use: the failover tests run once (Makefile
``SERVER_INDEPENDENT``). Settings are fast: a node is down after 1 s without answers.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import free_port

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"
MASTER = "mymaster"
# The master's and the sentinels' passwords differ, so that the URL must carry both.
PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


def available() -> bool:
    return shutil.which(REDIS_SERVER) is not None and shutil.which(REDIS_SENTINEL) is not None


class SentinelGroup:
    """``replicas`` replicas of one primary, watched by three sentinels (quorum 2)."""

    def __init__(self, root: Path, replicas: int = 1) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []
        try:
            self.start_node(self.ports[0])
            for port in self.ports[1:]:
                self.start_node(port, replica_of=self.ports[0])
            for i, port in enumerate(self.sentinel_ports):
                self._start_sentinel(i, port)
            primary = self.node(self.ports[0])
            # WAIT counts only replicas past their first sync.
            self.wait(lambda: _online(primary) >= replicas, 30, "replicas in sync")
            primary.close()
            self.wait(
                lambda: all(self._sentinel_sees_replicas(p, replicas) for p in self.sentinel_ports),
                30,
                "sentinels to see replicas",
            )
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return (
            f"redis+sentinel://:{PASSWORD}@{hosts}/{MASTER}/0?sentinel_password={SENTINEL_PASSWORD}"
        )

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, decode_responses=True,
                           socket_timeout=2, socket_connect_timeout=2)  # fmt: skip

    def start_node(self, port: int, replica_of: int | None = None) -> None:
        data = self.root / f"node-{port}"
        data.mkdir(parents=True, exist_ok=True)
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
                "--masterauth", PASSWORD, "--repl-diskless-sync-delay", "0",
                "--logfile", str(data / "redis.log")]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.nodes[port] = subprocess.Popen(args)
        client = self.node(port)
        self.wait(lambda: _answers(client), 10, f"redis on {port}")
        client.close()

    def _start_sentinel(self, i: int, port: int) -> None:
        data = self.root / f"sentinel-{i}"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {data}\nlogfile {data / 'sentinel.log'}\n"
            f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports[0]} 2\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 2000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.sentinels.append(subprocess.Popen([REDIS_SENTINEL, str(conf)]))

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True,
                           socket_timeout=1, socket_connect_timeout=1)  # fmt: skip

    def _sentinel_sees_replicas(self, port: int, n: int) -> bool:
        try:
            with self._sentinel(port) as s:
                return len(s.sentinel_slaves(MASTER)) >= n
        except redis.RedisError:
            return False

    def master_port(self) -> int | None:
        """The primary's port, as a majority of the sentinels say; None while they disagree."""
        said: list[int] = []
        for port in self.sentinel_ports:
            try:
                with self._sentinel(port) as s:
                    found = s.sentinel_get_master_addr_by_name(MASTER)
                if found:
                    said.append(int(found[1]))
            except redis.RedisError:
                continue
        best = max(set(said), key=said.count) if said else None
        return best if best is not None and said.count(best) >= 2 else None

    def switchover(self) -> None:
        """A failover the sentinels run with the primary still up (it turns replica)."""

        def accepted() -> bool:
            try:
                with self._sentinel(self.sentinel_ports[0]) as s:
                    return bool(s.execute_command("SENTINEL FAILOVER", MASTER))
            except redis.ResponseError as e:  # NOGOODSLAVE until a sentinel knows the replica
                if "NOGOODSLAVE" not in str(e):
                    raise
                return False

        self.wait(accepted, 20, "the sentinels to accept a failover")

    def kill(self, port: int) -> None:
        proc = self.nodes.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), *self.sentinels]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.nodes.values(), *self.sentinels]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nodes.clear()
        self.sentinels.clear()

    @staticmethod
    def wait(condition: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _online(client: redis.Redis) -> int:
    """Replicas of ``client`` that finished their first sync."""
    try:
        info = client.info("replication")
    except redis.RedisError:
        return 0
    states = [
        v.get("state") for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
    ]
    return states.count("online")
