"""Review of issue 10: hostile bodies over HTTP get a one-line 4xx, never a 500."""

from __future__ import annotations

import pytest

from ..conftest import ApiServer

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("depth", [200, 900])
def test_a_deeply_nested_cell_is_a_422(api: ApiServer, promoted: str, depth: int) -> None:
    cell = "[" * depth + "1" + "]" * depth  # within the 1024 levels the body parser takes
    body = '{"rows": [[' + cell + ', 0, 0, 0, 0, 0]]}'
    with api.http("svc") as http:
        answer = http.post(f"/v1/models/{promoted}/jobs", content=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code in (400, 422), (answer.status_code, answer.text[:300])
