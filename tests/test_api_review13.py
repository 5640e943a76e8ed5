"""Defects found reviewing 12bd521 (the HTTP gateway's hot path), each reproduced on a real
``predictq api`` process."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import redis

from producer import Client
from registry import keys

from .conftest import ApiServer


@pytest.mark.timeout(60)
def test_every_schema_the_openapi_document_refers_to_is_in_it(api: ApiServer) -> None:
    # POST /v1/jobs:wait parses its body itself and points at #/components/schemas/JobsWait:
    # a generated client or a schema validator fails on a reference the document lacks.
    doc = httpx.get(f"{api.url}/openapi.json", timeout=30).json()
    referred = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert referred - set(doc["components"]["schemas"]) == set()
    body = doc["paths"]["/v1/jobs:wait"]["post"]["requestBody"]["content"]["application/json"]
    assert doc["components"]["schemas"]["JobsWait"]["properties"].keys() == {"ids", "wait"}
    assert body["schema"] == {"$ref": "#/components/schemas/JobsWait"}


@pytest.mark.timeout(90)
def test_submissions_after_redis_forgot_its_scripts_write_each_job_once_with_its_owner(
    api: ApiServer, promoted: str, r: redis.Redis, client: Client
) -> None:
    # A restarted Redis has no scripts: the gateway's pipelined SUBMIT and owner records are
    # refused, loaded and sent again. When another client loaded SUBMIT first, only the owner
    # script is missing while SUBMIT ran: the jobs must keep their owner, not run unowned.
    def queued() -> int:
        return int(r.zcard(keys.queued("predictq")))

    with api.http("svc") as http:
        for loaded_by_another in (False, True):
            r.script_flush()
            if loaded_by_another:
                client.cancel(client.submit(promoted, [[0.0] * 6]))  # loads SUBMIT only
            before = queued()
            one = http.post(f"/v1/models/{promoted}/jobs", json={"rows": [[0.0] * 6]})
            batch = http.post(f"/v1/models/{promoted}/jobs:batch",
                              json={"jobs": [{"rows": [[1.0] * 6]}] * 3})  # fmt: skip
            assert one.status_code == 202 and batch.status_code == 202, (one.text, batch.text)
            ids = [one.json()["id"], *(j["id"] for j in batch.json()["jobs"])]
            assert queued() - before == 4
            mine = http.post("/v1/jobs:wait", json={"ids": ids}).json()
            assert mine["not_found"] == [] and sorted(mine["pending"]) == sorted(ids)
            theirs = http.post("/v1/jobs:wait", json={"ids": ids}, headers=api.auth("other"))
            assert theirs.json()["not_found"] == ids
