"""Redis Sentinel: the URL syntax, and a failover under load (a primary SIGKILLed mid-run).

The failover tests start their own primary, replica and three sentinels from Debian's Redis
(``tests/sentinel_group.py``), so they run once (Makefile ``SERVER_INDEPENDENT``).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import yaml
from sklearn.linear_model import LogisticRegression

from producer import Client, records
from registry import NotReplicated, PredictqError, RedisUnavailable, Registry, Settings
from registry.connection import connect, explain, redact
from registry.sentinel import kombu_broker, parse
from tests.conftest import REPO, ApiServer, Worker, free_port, report, wait_for
from tests.sentinel_group import REDIS_SERVER, SentinelGroup, available
from worker.app import celery_config

URL = "redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/2?sentinel_password=spw"


def test_a_sentinel_url_names_the_sentinels_master_db_and_both_passwords() -> None:
    parsed = parse(URL)
    assert parsed.sentinels == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    assert (parsed.master, parsed.db, parsed.password) == ("mymaster", 2, "pw")
    assert parsed.sentinel_kwargs() == {"password": "spw"}
    assert "pw" not in redact(URL) and "spw" not in redact(URL)
    assert redact(URL).startswith("redis+sentinel://s1:26379,s2,[::1]:26380/mymaster/2")
    # Celery's broker goes through kombu's own sentinel transport, to the same master.
    config = celery_config(URL, Settings(redis_url=None))
    assert config["broker_url"].split(";")[0] == "sentinel://:pw@s1:26379/2"
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    assert config["broker_transport_options"]["sentinel_kwargs"] == {"password": "spw"}
    assert kombu_broker("rediss+sentinel://h/m")[2] is not None  # TLS to the master


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "no master name"),
        ("redis+sentinel://h1:26379/", "no master name"),
        ("redis+sentinel://:secret@/mymaster", "no sentinel hosts"),
        ("redis+sentinel://h1:port/mymaster", "bad port"),
        ("redis+sentinel://h1:99999/mymaster", "bad port"),
        ("redis+sentinel://h1/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h1/mymaster?sentinel_pasword=x", "unknown option"),
        ("redis+sentinel://h1/mymaster?ssl_ca_certs=/ca.pem", "need TLS"),
    ],
)
def test_a_malformed_sentinel_url_is_one_line_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(RedisUnavailable) as caught:
        connect(url.replace("h1", ":secret@h1", 1))
    message = caught.value.message
    assert says in message and "redis+sentinel://[:PASSWORD@]HOST:26379" in message
    assert "\n" not in message and "secret" not in message


ROWS = [[0.1, -0.2, 0.3, 0.0, 1.0, -1.0]]


class Load:
    """One thread submitting without pause (lone jobs and small bulks), recording what was
    acknowledged and when; a refusal is counted by its code, and the thread tries again."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.acked: list[tuple[str, float]] = []
        self.refused: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                if i % 4:
                    ids = [self.client.submit("clf", ROWS)]
                else:
                    ids = self.client.submit_many("clf", [ROWS] * 10)
            except PredictqError as e:
                self.refused[e.code] = self.refused.get(e.code, 0) + 1
                self._stop.wait(0.05)  # a back-off between attempts, not a synchronisation
                continue
            now = time.monotonic()
            self.acked += [(job_id, now) for job_id in ids]

    def since(self, t: float) -> list[str]:
        return [job_id for job_id, at in list(self.acked) if at > t]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _final_or_gone(r: redis.Redis, ids: list[str]) -> bool:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"predictq:job:{job_id}", "status")
    return all(s in (None, "succeeded", "failed", "cancelled") for s in pipe.execute())


def test_a_demoted_primary_or_a_replica_url_is_a_transient_one_line_error() -> None:
    where = redact(URL)
    demoted = explain(redis.ConnectionError("The previous master is now a slave"), where)
    assert demoted is not None and demoted.transient and "turned replica" in demoted.message
    gone = explain(redis.ConnectionError("Error 111 connecting to 10.0.0.1:6379."), where)
    assert gone is not None and gone.transient and "failover may be under way" in gone.message
    replica = explain(redis.ReadOnlyError("You can't write against a read only replica."), where)
    assert replica is not None and replica.transient and "read-only replica" in replica.message


@pytest.mark.timeout(60)
def test_a_submission_no_replica_confirms_fails_in_one_line_and_is_safe_to_resubmit(
    settings: Settings, promoted: str, env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> None:
    # The session's Redis has no replica: WAIT can only time out.
    strict = settings.model_copy(update={"min_replicas": 1, "min_replicas_timeout": 0.2})
    with Client(settings=strict) as client:
        with pytest.raises(NotReplicated) as caught:
            client.submit(promoted, ROWS, job_id="j1")
        assert "only 0 of PREDICTQ_MIN_REPLICAS=1" in caught.value.message
        assert "same job IDs" in caught.value.message and caught.value.job_ids == ["j1"]
        assert r.hget("predictq:job:j1", "status") == "queued"  # it was enqueued all the same
        with pytest.raises(NotReplicated) as bulk:
            client.submit_many(promoted, [ROWS] * 3)
        assert bulk.value.enqueued == 3 and "3 of 3 jobs were enqueued" in bulk.value.message
    # Resubmitting an ID that exists enqueues nothing, and is acknowledged only once the
    # replicas have the job: with none attached, never.
    queued = r.llen(strict.queue)
    with Client(settings=strict) as client, pytest.raises(NotReplicated) as again:
        client.submit(promoted, ROWS, job_id="j1")
    assert again.value.job_ids == ["j1"] and "only 0 of" in again.value.message
    assert r.llen(strict.queue) == queued
    # Over HTTP: 503 with Retry-After; a chosen ID stays readable, generated ones are taken back.
    api = ApiServer({**env, "PREDICTQ_MIN_REPLICAS": "1", "PREDICTQ_MIN_REPLICAS_TIMEOUT": "0.2"},
                    tmp_path / "api.log")  # fmt: skip
    try:
        with api.http("svc") as http:
            chosen = http.post(f"/v1/models/{promoted}/jobs", json={"rows": ROWS, "job_id": "h1"})
            assert chosen.status_code == 503 and chosen.headers["Retry-After"] == "1"
            assert chosen.json()["code"] == "not_replicated"
            assert http.get("/v1/jobs/h1").json()["status"] == "queued"
            generated = http.post(f"/v1/models/{promoted}/jobs", json={"rows": ROWS})
            assert generated.status_code == 503 and "cancelled" in generated.json()["message"]
            # The connection dropped during WAIT (a failover's CLIENT KILL): the job the
            # script wrote is taken back too, not left to run beside the caller's retry.
            queued = _queued(r)
            killer = _during_wait(r, lambda c: r.client_kill_filter(_id=c["id"]))
            dropped = http.post(f"/v1/models/{promoted}/jobs", json={"rows": ROWS})
            killer.join(10)
            assert dropped.status_code == 503, dropped.text
            assert dropped.json()["code"] == "not_replicated", dropped.text
            assert _queued(r) == queued  # the new job was cancelled
    finally:
        api.stop()


def _queued(r: redis.Redis) -> set[str]:
    return {k for k in r.scan_iter("predictq:job:*") if r.hget(k, "status") == "queued"}


def _during_wait(r: redis.Redis, act: object) -> threading.Thread:
    """A thread that does ``act(client)`` to the first client it sees blocked in WAIT."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            blocked = [c for c in r.client_list() if c.get("cmd") == "wait"]
            if blocked:
                act(blocked[0])  # type: ignore[operator]
                return
            time.sleep(0.01)  # polling CLIENT LIST for the submission to reach WAIT

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_a_connection_lost_during_wait_is_not_replicated_with_the_job_ids(
    settings: Settings, promoted: str, r: redis.Redis
) -> None:
    # WAIT long enough for the connection to be killed while it blocks.
    strict = settings.model_copy(update={"min_replicas": 1, "min_replicas_timeout": 5.0})
    with Client(settings=strict) as client:
        client.redis.script_load(records.SUBMIT)  # the first pipeline is not a NOSCRIPT one
        before = r.llen(strict.queue)
        killer = _during_wait(r, lambda c: r.client_kill_filter(_id=c["id"]))
        with pytest.raises(NotReplicated) as caught:
            client.submit(promoted, ROWS)
        killer.join(10)
    # Not "Redis unavailable, start it": the job was written, and the caller holds its ID.
    assert "connection to Redis dropped" in caught.value.message
    [job_id] = caught.value.job_ids
    assert r.hget(f"predictq:job:{job_id}", "status") == "queued"
    assert r.llen(strict.queue) == before + 1


@pytest.mark.skipif(not available(), reason="needs /usr/bin/redis-server")
@pytest.mark.timeout(60)
def test_a_primary_turning_replica_during_wait_is_not_replicated(
    tmp_path: Path, fitted: LogisticRegression
) -> None:
    # A switchover makes the old primary a replica; its blocked WAIT gets an UNBLOCKED error.
    port = free_port()
    server = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(tmp_path),
                               "--logfile", str(tmp_path / "redis.log")])  # fmt: skip
    try:
        r = redis.Redis(port=port, decode_responses=True)
        wait_for(lambda: _pings(r), 10, "redis-server")
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", home=tmp_path / "home",
                            min_replicas=1, min_replicas_timeout=5.0)  # fmt: skip
        Registry(settings=settings).register("clf", fitted, promote=True)
        r.script_load(records.SUBMIT)
        demote = _during_wait(r, lambda c: r.replicaof("127.0.0.1", free_port()))
        with Client(settings=settings) as client, pytest.raises(NotReplicated) as caught:
            client.submit("clf", ROWS)
        demote.join(10)
        assert caught.value.job_ids and "0 of PREDICTQ_MIN_REPLICAS=1" in caught.value.message
        # Now a replica, it refuses the script: one transient line, not a raw ReadOnlyError.
        with Client(settings=settings) as client, pytest.raises(RedisUnavailable) as refused:
            client.submit("clf", ROWS)
        assert refused.value.transient and "read-only replica" in refused.value.message
    finally:
        server.terminate()
        server.wait(10)


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


SCENARIOS = [("kill", 1), ("kill", 0), ("switchover", 1), ("switchover", 0)]


@pytest.mark.skipif(not available(), reason="needs /usr/bin/redis-server and redis-sentinel")
@pytest.mark.timeout(150)
@pytest.mark.parametrize(("how", "min_replicas"), SCENARIOS)
def test_clients_and_workers_follow_a_failover_and_acknowledged_jobs_survive_it(
    how: str, min_replicas: int, tmp_path: Path, fitted: LogisticRegression
) -> None:
    """``kill``: SIGKILL the primary, then start it again (empty: it rejoins as a replica).
    ``switchover``: SENTINEL FAILOVER; the old primary stays a writable primary for about 10 s
    until the sentinels turn it into a replica, and what clients write there before they move
    is lost when it resyncs: without MIN_REPLICAS that is every job acknowledged meanwhile."""
    group = SentinelGroup(tmp_path / "redis")
    services: list[Worker | ApiServer] = []
    load: Load | None = None
    try:
        env = {"PREDICTQ_REDIS_URL": group.url, "PREDICTQ_HOME": str(tmp_path / "home"),
               "PREDICTQ_ARTIFACT_DIR": str(tmp_path / "artifacts")}  # fmt: skip
        settings = Settings(redis_url=group.url, home=tmp_path / "home",
                            artifact_dir=tmp_path / "artifacts", min_replicas=min_replicas,
                            min_replicas_timeout=2.0)  # fmt: skip
        Registry(settings=settings).register("clf", fitted, promote=True)
        r = connect(group.url)
        services.append(Worker(env, tmp_path / "worker.log", 1, r))
        api = ApiServer(env, tmp_path / "api.log") if min_replicas else None
        services += [api] if api else []
        client = Client(settings=settings)
        load = Load(client)
        wait_for(lambda: len(load.acked) >= 200, 30, "submissions before the failover")

        old = group.master_port()
        assert old == group.ports[0]
        killed_at = time.monotonic()
        if how == "kill":
            group.kill(old)
        else:
            group.switchover()
        wait_for(lambda: group.master_port() not in (None, old), 30, "a new primary")
        named_at = time.monotonic()  # the sentinels name the new primary from here on
        promoted = named_at - killed_at
        if how == "kill":
            # The old primary comes back empty, as a replica of the new one (with one replica in
            # all, MIN_REPLICAS=1 acknowledges nothing until then). It is started as one, where
            # the sentinels would convert it 8 to 18 s after it answers, or 30 s later still if a
            # loaded machine sends them into TILT mode (which failed a CI run): their timing is
            # Redis's, and what this test checks is how our clients and workers follow it.
            new = group.master_port()
            assert new is not None
            group.start_node(old, replica_of=new)
        try:
            wait_for(lambda: len(load.since(named_at)) >= 50, 30, "acknowledgements after it")
        except pytest.fail.Exception as e:  # say why the client was refused meanwhile
            pytest.fail(f"{e}; refused meanwhile: {load.refused}")
        # From the kill to the first submission the new primary acknowledged.
        followed = min(at for _, at in load.acked if at > named_at) - killed_at
        load.stop()
        if api is not None:  # the API's clients (sync and asyncio) follow it too
            with api.http("svc") as http:
                job = http.post("/v1/models/clf/jobs", json={"rows": ROWS}).json()
                done = http.get(f"/v1/jobs/{job['id']}", params={"wait": 5}).json()
            assert done["status"] == "succeeded", done

        ids = [job_id for job_id, _ in load.acked]
        wait_for(lambda: _final_or_gone(r, ids), 60, "every acknowledged job to end")
        found = client.wait_many([j for j in ids if r.exists(f"predictq:job:{j}")], timeout=10)
        after = set(load.since(named_at))
        counts = report(f"{how}, PREDICTQ_MIN_REPLICAS={min_replicas}", ids, found, r)
        final = {res.id for res in found if res.done}
        lost_at = [at - killed_at for job_id, at in load.acked if job_id not in final]
        window = (f" (lost ones acknowledged {min(lost_at):.1f}s to {max(lost_at):.1f}s after it)"
                  if lost_at else "")  # fmt: skip
        print(f"new primary named after {promoted:.1f}s, first acknowledgement by it "
              f"{followed:.1f}s after the {how}{window}; "
              f"refused meanwhile: {load.refused}")  # fmt: skip
        assert followed < 30
        assert all(s.proc.poll() is None for s in services), "a worker or the API died"
        # Jobs submitted after the failover all ran: the worker follows the new primary.
        assert all(res.status == "succeeded" for res in found if res.id in after)
        failed = Counter(res.error.code for res in found if res.status == "failed" and res.error)
        print(f"failed by code: {dict(failed)}")
        if min_replicas:
            assert counts["failed"] == 0
            assert counts["lost"] == 0, "a job acknowledged by a replica was lost"
        # Without MIN_REPLICAS nothing is promised for jobs acknowledged around the switch (they
        # may be lost, or, seen once in six loaded runs, fail): the counts above say what it did.
    finally:
        if load is not None:
            load.stop()
        for service in services:
            service.stop()
        group.stop()


def test_the_compose_override_points_every_predictq_service_at_the_sentinels() -> None:
    override = yaml.safe_load((REPO / "deploy" / "compose" / "sentinel.yml").read_text())
    services = override["services"]
    base = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    ours = {name for name, s in base.items() if s.get("build") == "."}
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    for name in [*sentinels, "redis-replica"]:
        service = {**override["x-sentinel"], **services[name]}
        assert service["restart"] == "unless-stopped" and "healthcheck" in service, name
    monitor = " ".join(services["sentinel-1"]["command"])
    for name in ours:
        url = services[name]["environment"]["PREDICTQ_REDIS_URL"]
        parsed = parse(url.replace("${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw"))
        assert [h for h, _ in parsed.sentinels] == sentinels
        assert f"sentinel monitor {parsed.master} redis 6379 2" in monitor
        assert set(services[name]["depends_on"]) == set(sentinels)
