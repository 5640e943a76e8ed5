"""Defects found reviewing 12bd521 (the HTTP gateway's hot path), each reproduced on a real
``predictq api`` process."""

from __future__ import annotations

import json
import re

import httpx
import pytest

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
