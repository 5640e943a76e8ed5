"""Bad input is refused with a message that says what was wrong, and nothing is enqueued."""

from __future__ import annotations

import math

import pytest

from producer import Client, validate_rows
from registry import InvalidInput, ModelNotFound, Signature


def _nothing_enqueued(r) -> None:
    assert r.llen("predictq") == 0
    assert list(r.scan_iter(match="predictq:job:*")) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0, 2.0]], "row 0 has 2 values, the model expects 6 features"),
        ([[1.0] * 7], "row 0 has 7 values"),
        ([[1.0, 2.0, math.nan, 4.0, 5.0, 6.0]], "must be finite"),
        ([[1.0, 2.0, math.inf, 4.0, 5.0, 6.0]], "must be finite"),
        ([[1.0, "2", 3.0, 4.0, 5.0, 6.0]], "row 0 column 1 is '2': every value must be a number"),
        ([[True, 2.0, 3.0, 4.0, 5.0, 6.0]], "must be a number"),
        ([[None, 2.0, 3.0, 4.0, 5.0, 6.0]], "must be a number"),
        ([], "rows is empty"),
        ([[]], "row 0 has 0 values"),
        ("1,2,3", "rows must be a list"),
        ([{"a": 1.0}], "fitted without feature names"),
        ([[1.0] * 6, "x"], "row 1 is 'x'"),
    ],
)
def test_bad_rows_are_rejected_at_submission_and_nothing_is_enqueued(
    client: Client, promoted: str, r, rows, message
) -> None:
    with pytest.raises(InvalidInput) as info:
        client.submit(promoted, rows)
    assert message in str(info.value)
    assert info.value.code == "invalid_input"
    _nothing_enqueued(r)


def test_one_bad_job_in_submit_many_enqueues_none_of_them(client: Client, promoted: str, r) -> None:
    good = [[0.0] * 6]
    with pytest.raises(InvalidInput, match="job 2: row 0 has 3 values"):
        client.submit_many(promoted, [good, good, [[1.0, 2.0, 3.0]], good])
    _nothing_enqueued(r)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": "nope"}, ModelNotFound, "no model named 'nope'"),
        ({"alias": "staging"}, ModelNotFound, "has no alias 'staging'"),
        ({"version": 9}, ModelNotFound, "has no version 9"),
        ({"model": "../etc"}, InvalidInput, "is not allowed"),
    ],
)
def test_unknown_models_aliases_and_versions_are_rejected_at_submission(
    client: Client, promoted: str, r, kwargs, error, message
) -> None:
    args = {"model": promoted, **kwargs}
    with pytest.raises(error, match=message):
        client.submit(args.pop("model"), [[0.0] * 6], **args)
    _nothing_enqueued(r)


def test_too_many_rows_are_rejected_with_the_limit_named(client: Client, promoted: str, r) -> None:
    with pytest.raises(InvalidInput, match="10001 rows is more than the limit of 10000 per job"):
        client.submit(promoted, [[0.0] * 6] * 10_001)
    _nothing_enqueued(r)


def test_probabilities_for_a_model_without_predict_proba_are_rejected(
    registry, client: Client, dataset, r
) -> None:
    from sklearn.linear_model import LinearRegression

    x, y = dataset
    registry.register("reg", LinearRegression().fit(x, y), promote=True)
    with pytest.raises(InvalidInput, match="has no predict_proba"):
        client.submit("reg", x[:1], probabilities=True)
    _nothing_enqueued(r)


SIG = Signature(n_features=2, feature_names=["a", "b"], has_predict_proba=True, estimator="x.Y")


def test_records_must_have_exactly_the_model_feature_names() -> None:
    assert validate_rows([{"b": 2, "a": 1}], SIG, max_rows=5) == [[1.0, 2.0]]
    with pytest.raises(InvalidInput, match=r"missing \['b'\]"):
        validate_rows([{"a": 1}], SIG, max_rows=5)
    with pytest.raises(InvalidInput, match=r"unknown \['c'\]"):
        validate_rows([{"a": 1, "b": 2, "c": 3}], SIG, max_rows=5)
