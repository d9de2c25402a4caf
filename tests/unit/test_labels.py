"""Canonical labels: 1, 1.0 and True are one class; "1" is another."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.labels import is_positive, label_key, labels_equal

scalars = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, -1.0, 1.5, 2.0, math.nan, math.inf]),
    st.booleans(),
    st.sampled_from(["0", "1", "1.0", "cat"]),
    st.none(),
    st.sampled_from([np.int64(1), np.float64(1.0), np.bool_(True), np.float32(0.5)]),
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, 1),
        (False, 0),
        (np.bool_(True), 1),
        (1, 1),
        (np.int64(7), 7),
        (np.uint8(3), 3),
        (1.0, 1),
        (np.float64(-2.0), -2),
        (2.5, 2.5),
        ("1", "1"),
        ("cat", "cat"),
        (None, None),
    ],
)
def test_label_key_canonical_forms(value: object, expected: object) -> None:
    key = label_key(value)
    assert key == expected
    assert type(key) is type(expected)


def test_label_key_keeps_non_finite_floats_as_floats() -> None:
    assert math.isnan(label_key(math.nan))  # type: ignore[arg-type]
    assert label_key(math.inf) == math.inf
    assert type(label_key(np.float64(math.inf))) is float


def test_strings_are_not_parsed() -> None:
    assert label_key("1") != label_key(1)
    assert label_key("1.0") == "1.0"


@settings(deadline=None)
@given(scalars)
def test_label_key_is_idempotent(value: object) -> None:
    key = label_key(value)
    again = label_key(key)
    assert again == key or (isinstance(key, float) and math.isnan(key))


@settings(deadline=None)
@given(st.lists(scalars, max_size=30), scalars)
def test_is_positive_matches_label_key_equality(labels: list[object], positive: object) -> None:
    expected = [label_key(v) == label_key(positive) for v in labels]
    assert is_positive(labels, positive).tolist() == expected


@settings(deadline=None)
@given(st.lists(st.integers(-2, 2), max_size=30), st.sampled_from([1, 1.0, True, "1", None, 2.5]))
def test_is_positive_numeric_array_matches_list(labels: list[int], positive: object) -> None:
    assert (
        is_positive(np.array(labels, dtype=np.int64), positive).tolist()
        == is_positive(labels, positive).tolist()
    )


def test_is_positive_string_array() -> None:
    labels = np.array(["spam", "ham", "spam"])
    assert is_positive(labels, "spam").tolist() == [True, False, True]
    assert is_positive(labels, 1).tolist() == [False, False, False]


def test_is_positive_rejects_two_dimensional_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        is_positive(np.zeros((2, 2)), 1)


@settings(deadline=None)
@given(st.lists(st.tuples(scalars, scalars), max_size=30))
def test_labels_equal_matches_label_key_equality(pairs: list[tuple[object, object]]) -> None:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    assert labels_equal(a, b).tolist() == [label_key(x) == label_key(y) for x, y in pairs]


def test_labels_equal_mixed_array_kinds() -> None:
    assert labels_equal(np.array([1, 2]), np.array(["1", "2"])).tolist() == [False, False]
    assert labels_equal(np.array([1.0, 2.0]), [1, True]).tolist() == [True, False]
    assert labels_equal(np.array([True, False]), np.array([1, 0])).tolist() == [True, True]


def test_labels_equal_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="a, b"):
        labels_equal([1, 2], [1])
