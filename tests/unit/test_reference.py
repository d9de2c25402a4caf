"""Reference profiles: what they keep, exact JSON round trips, summaries."""

from __future__ import annotations

import doctest
import json
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import detectors.reference
from detectors.columns import FeatureColumns, FeatureKind, columnarize
from detectors.reference import (
    QUANTILE_KEYS,
    QUANTILES,
    CategoricalProfile,
    ModelProfile,
    NumericProfile,
    categorical_summary,
    numeric_summary,
)


def test_doctests() -> None:
    assert doctest.testmod(detectors.reference).failed == 0


def json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return result


def test_numeric_profile_moments_quantiles_and_rates() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, 10_000)
    values[:100] = np.nan
    missing = np.zeros(10_000, bool)
    missing[:60] = True
    mismatch = np.zeros(10_000, bool)
    mismatch[60:100] = True
    profile = NumericProfile.from_values(values, missing, mismatch)
    finite = values[100:]
    assert profile.count == 9_900 and profile.n_rows == 10_000
    assert profile.null_rate == 0.006 and profile.type_mismatch_rate == 0.004
    assert profile.mean == pytest.approx(finite.mean(), rel=1e-8)
    assert profile.std == pytest.approx(finite.std(), rel=1e-8)
    assert (profile.min, profile.max) == pytest.approx((finite.min(), finite.max()), rel=1e-8)
    expected = np.quantile(finite, QUANTILES)
    got = [profile.quantiles[k] for k in QUANTILE_KEYS]
    assert got == pytest.approx(expected.tolist(), rel=1e-8)


def test_numeric_bins_are_reference_deciles_with_open_outer_bins() -> None:
    rng = np.random.default_rng(1)
    profile = NumericProfile.from_values(rng.exponential(size=20_000))
    assert profile.edges[0] == -np.inf and profile.edges[-1] == np.inf
    assert profile.inner_edges.shape == (9,)
    assert profile.bin_proportions.sum() == pytest.approx(1.0, abs=1e-8)
    assert np.allclose(profile.bin_proportions, 0.1, atol=1e-3)


def test_numeric_bins_deduplicate_for_discrete_features() -> None:
    values = np.array([0.0] * 700 + [1.0] * 300)
    profile = NumericProfile.from_values(values)
    assert profile.inner_edges.tolist() == [0.0, 1.0]
    assert profile.bin_proportions.tolist() == [0.0, 0.7, 0.3]
    assert NumericProfile.from_values(np.arange(10.0), n_bins=5).inner_edges.tolist() == [
        1.0,
        3.0,
        5.0,
        7.0,
    ]


def test_sample_is_capped_sorted_and_evenly_spaced_order_statistics() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=5_000)
    profile = NumericProfile.from_values(values, sample_size=2_000)
    ordered = np.sort(values)
    picks = ((np.arange(2_000) + 0.5) * 2.5).astype(int)
    assert profile.sample.shape == (2_000,)
    assert np.all(np.diff(profile.sample) >= 0)
    assert np.allclose(profile.sample, ordered[picks], rtol=1e-8)
    small = NumericProfile.from_values(values[:50], sample_size=2_000)
    assert np.allclose(small.sample, np.sort(values[:50]), rtol=1e-8)


def test_all_null_numeric_profile_serialises_to_json() -> None:
    profile = NumericProfile.from_values(np.full(10, np.nan), np.ones(10, bool))
    assert profile.count == 0 and profile.null_rate == 1.0
    data = json_round_trip(profile.to_dict())
    assert data["mean"] is None and data["sample"] == []
    assert NumericProfile.from_dict(data).to_dict() == data


def test_categorical_profile_top_k_with_ties_by_name_and_other_pool() -> None:
    values = np.array([*"aaabbbccd", None], dtype=object)
    profile = CategoricalProfile.from_values(values, top_k=2)
    assert profile.categories == ("a", "b") and profile.counts == (3, 3)
    assert profile.other_count == 3 and profile.other_distinct == 2
    assert profile.count == 9 and profile.shares.tolist() == pytest.approx([1 / 3] * 3)
    codes = profile.encode(np.array(["b", "c", None, "new", "a"], dtype=object))
    assert codes.tolist() == [1, 2, -1, 2, 0]


def test_profile_round_trips_exactly_through_json() -> None:
    rng = np.random.default_rng(3)
    rows: list[dict[str, object]] = [
        {
            "x": float(rng.normal()),
            "n": int(rng.poisson(3)),
            "c": str(rng.choice(["red", "green", "blue"])),
            "maybe": None if rng.random() < 0.3 else float(rng.lognormal()),
        }
        for _ in range(3_000)
    ]
    kinds: dict[str, FeatureKind] = {
        "x": "numeric",
        "n": "numeric",
        "c": "categorical",
        "maybe": "numeric",
    }
    outputs = columnarize(
        [{"score": float(rng.random()), "prediction": str(rng.integers(2))} for _ in rows],
        {"score": "numeric", "prediction": "categorical"},
    )
    profile = ModelProfile.from_columns(columnarize(rows, kinds), kinds, outputs=outputs)
    data = profile.to_dict()
    assert list(data["features"]) == ["c", "maybe", "n", "x"]
    again = ModelProfile.from_dict(json_round_trip(data))
    assert again.to_dict() == data
    x_before, x_after = profile.features["x"], again.features["x"]
    assert isinstance(x_before, NumericProfile) and isinstance(x_after, NumericProfile)
    assert np.array_equal(x_before.sample, x_after.sample)
    assert np.array_equal(x_before.edges, x_after.edges)
    assert again.kinds() == dict(sorted(kinds.items()))
    assert again.score is not None and again.score.kind == "numeric"
    assert again.prediction is not None and again.prediction.kind == "categorical"
    restored = pickle.loads(pickle.dumps(again))
    assert restored.to_dict() == data
    out = again.output_profile()
    assert out is not None and out.kinds() == {"prediction": "categorical", "score": "numeric"}
    assert ModelProfile(features={}).output_profile() is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)), min_size=1, max_size=300),
    st.integers(2, 12),
    st.integers(10, 100),
)
def test_numeric_to_dict_from_dict_is_the_identity(
    values: list[float | None], n_bins: int, sample_size: int
) -> None:
    column = np.array([math.nan if v is None else v for v in values])
    missing = np.array([v is None for v in values])
    profile = NumericProfile.from_values(column, missing, n_bins=n_bins, sample_size=sample_size)
    data = json_round_trip(profile.to_dict())
    assert data == profile.to_dict()
    assert NumericProfile.from_dict(data).to_dict() == data
    assert profile.bin_proportions.shape[0] == profile.inner_edges.shape[0] + 1


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"schema_version": 2, "features": {}},
        {"schema_version": 1, "features": []},
        {"schema_version": 1, "features": {"x": {"kind": "vector"}}},
        {"schema_version": 1, "features": {"x": {"kind": "numeric", "count": 3}}},
        {"schema_version": 1, "features": {"c": {"kind": "categorical", "categories": 5}}},
    ],
)
def test_from_dict_refuses_malformed_profiles(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ModelProfile.from_dict(data)


def test_from_dict_refuses_inconsistent_bins() -> None:
    good = NumericProfile.from_values(np.arange(100.0)).to_dict()
    bad = {**good, "bin_proportions": good["bin_proportions"][:-1]}
    with pytest.raises(ValueError, match="bin_proportions"):
        NumericProfile.from_dict(bad)
    unsorted = {**good, "inner_bin_edges": good["inner_bin_edges"][::-1]}
    with pytest.raises(ValueError, match="increasing"):
        NumericProfile.from_dict(unsorted)


def test_profile_summary_has_the_shape_of_a_window_summary() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=1_000)
    values[::50] = np.nan
    profile = NumericProfile.from_values(values)
    window = numeric_summary(values)
    summary = profile.summary()
    assert summary.keys() == window.keys()
    assert summary["quantiles"].keys() == window["quantiles"].keys()
    assert summary["count"] == window["count"] == 980
    assert summary["null_rate"] == window["null_rate"] == 0.02
    for key in ("mean", "std", "min", "max"):
        assert summary[key] == pytest.approx(window[key], rel=1e-5)

    cats = np.array(["a"] * 6 + ["b"] * 3 + ["c"], dtype=object)
    cat_profile = CategoricalProfile.from_values(cats)
    assert cat_profile.summary() == categorical_summary(("a", "b", "c"), np.array([6, 3, 1, 0]), 10)
    assert cat_profile.summary()["top"] == {"a": 0.6, "b": 0.3, "c": 0.1}


def test_from_columns_profiles_absent_features_as_all_missing() -> None:
    cols = FeatureColumns.empty({"x": "numeric"}).select({"x": "numeric"})
    profile = ModelProfile.from_columns(
        columnarize([{"x": 1.0}] * 5, {"x": "numeric"}), {"x": "numeric", "y": "categorical"}
    )
    y = profile.features["y"]
    assert isinstance(y, CategoricalProfile) and y.count == 0 and y.null_rate == 1.0
    assert cols.n == 0 and profile.n_rows == 5
