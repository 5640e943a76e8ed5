"""Review of issue 10: hostile values through the Python client and the CLI must be refused
with InvalidInput (one line), never a raw TypeError from the JSON encoder."""

from __future__ import annotations

from typing import Any

import pytest

from producer import Client
from registry import InvalidInput, Registry

from ..tabular import MODELS
from ..test_cli import predictq

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def churn(registry: Registry) -> str:
    model, train = MODELS["pipeline"]()
    registry.register("churn", model, input_example=train.head(50), promote=True)
    return "churn"


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"age": 30, "income": 40_000.0, "plan": "pro", "country": "fr",
                           "active": True}  # fmt: skip
    row.update(changes)
    return row


def _refused(call) -> InvalidInput:  # type: ignore[no-untyped-def]
    try:
        call()
    except Exception as e:  # noqa: BLE001
        assert isinstance(e, InvalidInput), f"raw {type(e).__name__}: {e}"
        return e
    pytest.fail("accepted")


def test_huge_int_in_a_plain_numeric_model(client: Client, promoted: str) -> None:
    _refused(lambda: client.submit(promoted, [[2**64, 0.0, 0.0, 0.0, 0.0, 0.0]]))


def test_huge_int_in_a_number_column(client: Client, churn: str) -> None:
    _refused(lambda: client.submit(churn, [_row(income=2**70)]))


def test_lone_surrogate_in_a_string_column(client: Client, churn: str) -> None:
    _refused(lambda: client.submit(churn, [_row(country="\ud800")]))


def test_cli_huge_int_is_one_line_exit_2(env, promoted: str) -> None:
    done = predictq(env, "submit", promoted, "--rows", "[[18446744073709551616, 0, 0, 0, 0, 0]]")
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


def test_cli_csv_with_a_huge_integer_is_one_line_exit_2(env, promoted: str, tmp_path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("123456789012345678901234567890,0,0,0,0,0\n")
    done = predictq(env, "submit", promoted, "--file", str(path))
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
