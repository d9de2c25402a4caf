"""Feature rows to typed columns: kinds, missing values and type mismatches, batch helpers."""

from __future__ import annotations

import doctest
import math
import pickle
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import driftline.detectors.columns
from driftline.detectors.columns import (
    FeatureColumns,
    FeatureKind,
    column_of,
    columnarize,
    encode_categories,
    infer_kinds,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


def test_doctests() -> None:
    assert doctest.testmod(driftline.detectors.columns).failed == 0


def test_infer_kinds_majority_of_non_null_values_and_bool_is_not_numeric() -> None:
    rows = [
        {"num": 1, "mostly_num": 1.5, "cat": "a", "flag": True, "nulls": None},
        {"num": 2.5, "mostly_num": "x", "cat": 3, "flag": False},
        {"num": None, "mostly_num": 2, "cat": "b", "flag": 1},
    ]
    assert infer_kinds(rows) == {
        "cat": "categorical",
        "flag": "categorical",
        "mostly_num": "numeric",
        "num": "numeric",
    }


def test_infer_kinds_tie_goes_to_categorical() -> None:
    assert infer_kinds([{"a": 1}, {"a": "x"}]) == {"a": "categorical"}


def test_numeric_column_marks_missing_and_mismatches() -> None:
    rows = [
        {"x": 1},
        {"x": 2.5},
        {"x": None},
        {},
        {"x": "3"},
        {"x": True},
        {"x": math.inf},
        {"x": math.nan},
        {"x": 10**400},
    ]
    cols = columnarize(rows, {"x": "numeric"})
    x = cols.numeric["x"]
    assert x[:2].tolist() == [1.0, 2.5]
    assert np.isnan(x[2:]).all()
    assert cols.missing["x"].tolist() == [False, False, True, True] + [False] * 5
    assert cols.type_mismatch["x"].tolist() == [False] * 4 + [True] * 5
    assert cols.n == 9 and x.dtype == np.float64


def test_categorical_column_bools_become_strings_numbers_mismatch() -> None:
    rows = [{"c": "a"}, {"c": True}, {"c": False}, {"c": 3}, {"c": None}, {}, {"c": 1.5}]
    cols = columnarize(rows, {"c": "categorical"})
    assert cols.categorical["c"].tolist() == ["a", "true", "false", None, None, None, None]
    assert cols.categorical["c"].dtype == object
    assert cols.missing["c"].tolist() == [False, False, False, False, True, True, False]
    assert cols.type_mismatch["c"].tolist() == [False, False, False, True, False, False, True]


def test_extra_keys_are_ignored_and_absent_features_are_all_missing() -> None:
    cols = columnarize([{"a": 1, "extra": "x"}], {"a": "numeric", "b": "categorical"})
    assert set(cols.numeric) == {"a"} and set(cols.categorical) == {"b"}
    assert cols.missing["b"].tolist() == [True]
    assert cols.kinds() == {"a": "numeric", "b": "categorical"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={"f": SCALARS}), max_size=30))
def test_every_row_is_exactly_one_of_value_missing_mismatch(rows: list[dict[str, object]]) -> None:
    for kind in ("numeric", "categorical"):
        cols = columnarize(rows, {"f": kind})  # type: ignore[dict-item]
        missing, mismatch = cols.missing["f"], cols.type_mismatch["f"]
        if kind == "numeric":
            has_value = ~np.isnan(cols.numeric["f"])
        else:
            has_value = ~np.equal(cols.categorical["f"], np.array(None, dtype=object))
        total = missing.astype(int) + mismatch.astype(int) + has_value.astype(int)
        assert (total == 1).all()
        for row, miss in zip(rows, missing.tolist(), strict=True):
            assert miss == (row.get("f") is None)


def test_slice_select_concat_round_trip() -> None:
    kinds = {"x": "numeric", "c": "categorical"}
    rows = [{"x": i, "c": "ab"[i % 2]} for i in range(10)]
    cols = columnarize(rows, kinds)  # type: ignore[arg-type]
    parts = [cols.slice(0, 3), cols.slice(3, 3), cols.slice(3, 10)]
    joined = FeatureColumns.concat(parts, kinds)  # type: ignore[arg-type]
    assert joined.n == 10
    assert joined.numeric["x"].tolist() == cols.numeric["x"].tolist()
    assert joined.categorical["c"].tolist() == cols.categorical["c"].tolist()
    wider = cols.select({"x": "numeric", "c": "numeric"})  # c held as categorical: absent
    assert wider.missing["c"].all() and np.isnan(wider.numeric["c"]).all()
    assert FeatureColumns.empty(kinds).n == 0  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(cols)).numeric["x"].tolist() == cols.numeric["x"].tolist()


def test_encode_categories() -> None:
    values = np.array(["b", None, "zz", "a", "b"], dtype=object)
    codes = encode_categories(values, np.array(["a", "b"]), np.array([7, 3], np.int32), 9)
    assert codes.tolist() == [3, -1, 9, 7, 3]
    empty = encode_categories(values, np.empty(0, dtype=np.str_), np.empty(0, np.int32), 0)
    assert empty.tolist() == [0, -1, 0, 0, 0]


def _reference_cell(value: object, kind: str) -> tuple[object, bool, bool]:
    """One value as the docstring of ``FeatureColumns`` defines it: (cell, missing, mismatch),
    checked one value at a time with no fast path."""
    if value is None:
        return (math.nan if kind == "numeric" else None), True, False
    if kind == "numeric":
        if type(value) in (int, float):
            try:
                number = float(value)  # type: ignore[arg-type]
            except OverflowError:
                return math.nan, False, True
            return (number, False, False) if math.isfinite(number) else (math.nan, False, True)
        return math.nan, False, True
    if type(value) is str:
        return value, False, False
    if type(value) is bool:
        return ("true" if value else "false"), False, False
    return None, False, True


def _assert_matches_reference(
    rows: list[dict[str, object]], kinds: dict[str, FeatureKind], cols: FeatureColumns
) -> None:
    assert cols.n == len(rows)
    assert cols.kinds() == kinds
    for name, kind in kinds.items():
        cells = [_reference_cell(row.get(name), kind) for row in rows]
        column = (cols.numeric if kind == "numeric" else cols.categorical)[name]
        if kind == "numeric":
            assert column.dtype == np.float64
            np.testing.assert_array_equal(column, np.array([c[0] for c in cells], dtype=float))
        else:
            assert column.dtype == object
            assert column.tolist() == [c[0] for c in cells]
        for mask, index in ((cols.missing[name], 1), (cols.type_mismatch[name], 2)):
            assert mask.dtype == np.bool_
            assert mask.tolist() == [c[index] for c in cells]


WIDE_SCALARS = st.one_of(
    SCALARS,
    st.integers(),  # beyond float range too
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 1, True, False, "", "1.5"]),
)
NAMES = ("a", "b", "c")
KINDS = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["numeric", "categorical"]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({}, optional=dict.fromkeys(NAMES, WIDE_SCALARS)),
        max_size=25,
    ),
    KINDS,
)
def test_columnarize_equals_value_by_value_reference(
    rows: list[dict[str, object]], kinds: dict[str, FeatureKind]
) -> None:
    """Rows of mixed types with keys sometimes absent (the per-name lookup)."""
    _assert_matches_reference(rows, kinds, columnarize(rows, kinds))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(dict.fromkeys(NAMES, WIDE_SCALARS), optional={"extra": SCALARS}),
        max_size=25,
    ),
    KINDS,
    st.sampled_from([None, int, float, str, bool]),
)
def test_columnarize_fast_path_equals_value_by_value_reference(
    rows: list[dict[str, object]], kinds: dict[str, FeatureKind], only: type | None
) -> None:
    """Every row holds every feature (the one-lookup-per-row path), uniform or mixed types."""
    if only is not None:
        # Columns of one type take the numpy fast paths.
        rows = [
            {k: v if type(v) is only or v is None else None for k, v in r.items()} for r in rows
        ]
    _assert_matches_reference(rows, kinds, columnarize(rows, kinds))


@settings(max_examples=200, deadline=None)
@given(st.lists(WIDE_SCALARS, max_size=25), st.sampled_from(["numeric", "categorical"]))
def test_column_of_equals_columnarize_of_one_key_rows(
    values: list[object], kind: FeatureKind
) -> None:
    got = column_of("v", values, kind)
    want = columnarize([{"v": v} for v in values], {"v": kind})
    _assert_matches_reference([{"v": v} for v in values], {"v": kind}, got)
    assert got.kinds() == want.kinds()
    for attr in ("numeric", "categorical", "missing", "type_mismatch"):
        for name, array in getattr(want, attr).items():
            np.testing.assert_array_equal(getattr(got, attr)[name], array)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=2)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from("abcd"), _VALUES, max_size=4), min_size=1, max_size=8),
    st.booleans(),
)
def test_infer_kinds_counts_numbers_against_everything_else(
    rows: list[dict[str, object]], complete: bool
) -> None:
    """The column-wise count (every row holds every name) and the row-wise one (rows with
    missing names) agree with the definition: numeric when numbers outnumber the other non-null
    values; features seen only null are left out."""
    if complete:
        rows = [{name: row.get(name) for name in "abcd"} for row in rows]
    expected = {}
    for name in sorted({k for row in rows for k in row}):
        values = [row[name] for row in rows if name in row and row[name] is not None]
        numbers = sum(type(v) in (int, float) for v in values)
        if values:
            expected[name] = "numeric" if numbers > len(values) - numbers else "categorical"
    assert infer_kinds(rows) == expected
    subset = {"a", "c"}
    assert infer_kinds(rows, names=subset) == {k: v for k, v in expected.items() if k in subset}


# -- the numeric block against the feature-by-feature conversion ---------------------------------


class _Row(dict[str, object]):
    """A mapping that is not a plain dict: ``columnarize`` converts its batch feature by
    feature."""


_FLOAT_EDGES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308]
_BIG_INTS = [2**53 + 1, 2**63, -(2**63) - 1, 2**64 + 1, 10**30, -(10**30), 10**308]
_HUGE_INTS = [10**400, -(10**400), 10**309, 2**1024]  # beyond float range
_NOT_NUMBERS: list[object] = [True, False, "", "1.5", "x"]
_CATEGORY_VALUES: list[object] = ["a", "b", "", None, True, False, 3, 1.5, math.nan, 10**400]


def _number(rng: random.Random, huge: bool) -> object:
    u = rng.random()
    if u < 0.1:
        return None
    if u < 0.4:
        return rng.randint(-1000, 1000)
    if u < 0.7:
        return rng.gauss(0.0, 100.0)
    if u < 0.85:
        return rng.choice(_FLOAT_EDGES)
    return rng.choice(_BIG_INTS + _HUGE_INTS if huge else _BIG_INTS)


def _batch(rng: random.Random) -> tuple[list[dict[str, object]], dict[str, FeatureKind]]:
    """2-6 numeric and 0-3 categorical features in shuffled order, 0-30 rows. Independently
    per batch: some numeric values bools or strings, keys omitted, one row not a plain dict,
    ints beyond float range; a batch with none of these is one the numeric block converts."""
    names: list[tuple[str, FeatureKind]] = [
        *((f"x{i}", "numeric") for i in range(rng.randint(2, 6))),
        *((f"c{i}", "categorical") for i in range(rng.randint(0, 3))),
    ]
    rng.shuffle(names)
    kinds = dict(names)
    wrong_types, omit = rng.random() < 0.3, rng.random() < 0.25
    subclass, huge = rng.random() < 0.15, rng.random() < 0.2
    rows: list[dict[str, object]] = []
    for _ in range(rng.randint(0, 30)):
        row: dict[str, object] = {}
        for name, kind in kinds.items():
            if omit and rng.random() < 0.15:
                continue
            if kind == "categorical":
                row[name] = rng.choice(_CATEGORY_VALUES)
            elif wrong_types and rng.random() < 0.15:
                row[name] = rng.choice(_NOT_NUMBERS)
            else:
                row[name] = _number(rng, huge)
        if rng.random() < 0.1:
            row["extra"] = "ignored"
        rows.append(row)
    if subclass and rows:
        i = rng.randrange(len(rows))
        rows[i] = _Row(rows[i])
    return rows, kinds


def test_columnarize_numeric_block_equals_feature_by_feature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 seeded batches: ``columnarize`` (numeric features in one block when every row is a
    plain dict holding every numeric name and every numeric value is an int, a float or None;
    else feature by feature) gives exactly what ``column_of`` gives for each feature's values
    alone: numeric columns (NaN where NaN, the sign of zeros too), categorical columns,
    ``missing`` and ``type_mismatch``; features come in the order of ``kinds``. The block is
    watched so that both paths surely run, 300 batches or more each."""
    block = driftline.detectors.columns._numeric_block
    used: list[bool] = []

    def watched(rows: Sequence[Mapping[str, object]], names: list[str]) -> Any:
        out = block(rows, names)
        used.append(out is not None)
        return out

    monkeypatch.setattr(driftline.detectors.columns, "_numeric_block", watched)
    rng = random.Random(20240611)
    for _ in range(1000):
        rows, kinds = _batch(rng)
        cols = columnarize(rows, kinds)
        assert cols.n == len(rows)
        numeric_names = [name for name, kind in kinds.items() if kind == "numeric"]
        assert list(cols.numeric) == numeric_names
        assert list(cols.categorical) == [n for n in kinds if n not in numeric_names]
        assert list(cols.missing) == list(cols.type_mismatch) == list(kinds)
        for name, kind in kinds.items():
            want = column_of(name, [row.get(name) for row in rows], kind)
            if kind == "numeric":
                got, expected = cols.numeric[name], want.numeric[name]
                assert got.dtype == expected.dtype == np.float64
                np.testing.assert_array_equal(got, expected)
                assert np.signbit(got).tolist() == np.signbit(expected).tolist()
            else:
                got, expected = cols.categorical[name], want.categorical[name]
                assert got.dtype == expected.dtype == object
                assert got.tolist() == expected.tolist()
            for attr in ("missing", "type_mismatch"):
                mask, want_mask = getattr(cols, attr)[name], getattr(want, attr)[name]
                assert mask.dtype == want_mask.dtype == np.bool_
                assert mask.tolist() == want_mask.tolist()
    assert len(used) == 1000
    assert sum(used) >= 300 and used.count(False) >= 300, sum(used)
