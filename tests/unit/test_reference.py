"""Reference profiles: what they keep, exact JSON round trips, summaries."""

from __future__ import annotations

import doctest
import json
import math
import pickle
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import driftline.detectors.reference
from driftline.detectors.columns import FeatureColumns, FeatureKind, columnarize
from driftline.detectors.reference import (
    QUANTILE_KEYS,
    QUANTILES,
    CategoricalProfile,
    FeatureReference,
    ModelProfile,
    NumericProfile,
    categorical_summary,
    numeric_summary,
)
from driftline.detectors.sketch import sketch_ks_wasserstein_rows
from driftline.detectors.stats import ks_wasserstein_rows


def test_doctests() -> None:
    assert doctest.testmod(driftline.detectors.reference).failed == 0


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


# -- FeatureReference: the compact reference the monitors share ----------------------------------


def _stream(n: int, seed: int = 7) -> tuple[FeatureColumns, dict[str, FeatureKind]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = [
        {
            "x": float(rng.normal()),
            "n": int(rng.poisson(3)),
            "c": str(rng.choice(["red", "green", "blue", "teal"], p=[0.5, 0.3, 0.15, 0.05])),
            "maybe": None if rng.random() < 0.3 else float(rng.lognormal()),
            "mixed": "oops" if rng.random() < 0.1 else float(rng.random()),
        }
        for _ in range(n)
    ]
    kinds: dict[str, FeatureKind] = {
        "x": "numeric",
        "n": "numeric",
        "c": "categorical",
        "maybe": "numeric",
        "mixed": "numeric",
    }
    return columnarize(rows, kinds), kinds


def _arrays(reference: FeatureReference) -> dict[str, Any]:
    numeric = reference.numeric
    out: dict[str, Any] = {
        f: getattr(numeric, f).tolist()
        for f in (
            "n_rows",
            "count",
            "n_missing",
            "n_type_mismatch",
            "stats",
            "sample",
            "sample_sizes",
            "edges",
            "proportions",
            "n_bins",
        )
    }
    out["categorical"] = {k: v.to_dict() for k, v in reference.categorical.items()}
    return out


def test_first_n_reference_is_the_profile_of_its_events_held_in_float32() -> None:
    """Filled from 3,000 events it holds what ``ModelProfile.from_columns`` makes of those
    events as float32 (moments, quantiles, bins, counts, rates, categories), with a 512-point
    sketch; bin proportions count a value on an edge in the bin that starts there, as windows
    do, so they differ from the float64 profile's by at most one event per edge."""
    columns, kinds = _stream(3000)
    reference = FeatureReference(size=3000, sample_size=512)
    assert reference.observe(columns, kinds, position=0) == 3000 and reference.ready
    as32 = FeatureColumns(
        columns.n,
        {k: v.astype(np.float32).astype(np.float64) for k, v in columns.numeric.items()},
        columns.categorical,
        columns.missing,
        columns.type_mismatch,
    )
    expected = ModelProfile.from_columns(as32, kinds, sample_size=512).to_dict()
    got = reference.to_profile()
    assert got is not None
    for name, feature in got.to_dict()["features"].items():
        want = expected["features"][name]
        props, want_props = feature.pop("bin_proportions", []), want.pop("bin_proportions", [])
        assert feature == want
        assert np.allclose(props, want_props, atol=9 / 3000)
    assert reference.numeric.names == ("maybe", "mixed", "n", "x")
    assert reference.numeric.n_type_mismatch.tolist()[1] == pytest.approx(300, abs=60)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=8))
def test_the_reference_does_not_depend_on_how_events_are_batched(cuts: list[int]) -> None:
    columns, kinds = _stream(1200, seed=len(cuts))
    whole = FeatureReference(size=1000, sample_size=64)
    whole.observe(columns, kinds, position=0)
    parts = FeatureReference(size=1000, sample_size=64)
    start = 0
    for size in [*cuts, 1200]:
        stop = min(start + size, 1200)
        taken = parts.observe(columns.slice(start, stop), kinds, position=start)
        assert taken == min(stop - start, max(0, 1000 - start))
        start = stop
        if start == 1200:
            break
    assert parts.ready and _arrays(parts) == _arrays(whole)


def test_profile_round_trip_gives_back_the_same_reference() -> None:
    columns, kinds = _stream(2500)
    first_n = FeatureReference(size=2500)
    first_n.observe(columns, kinds, position=0)
    saved = first_n.to_profile()
    assert saved is not None
    again = FeatureReference(profile=ModelProfile.from_dict(json_round_trip(saved.to_dict())))
    assert again.ready and again.n_rows == 2500 and _arrays(again) == _arrays(first_n)


def test_a_larger_profile_sample_is_thinned_to_the_sketch_size() -> None:
    columns, kinds = _stream(5000)
    profile = ModelProfile.from_columns(columns, kinds, sample_size=2000)
    reference = FeatureReference(profile=profile, sample_size=500)
    x = profile.features["x"]
    assert isinstance(x, NumericProfile)
    row = reference.numeric.names.index("x")
    assert reference.numeric.sample_sizes[row] == 500
    thinned = reference.numeric.sample[row]
    assert np.all(np.diff(thinned) >= 0)
    assert np.array_equal(thinned, x.sample[2 + 4 * np.arange(500)].astype(np.float32))
    assert reference.numeric.count[row] == x.count  # the p-value's sample size


def test_values_beyond_float32_stay_finite_and_order_is_kept() -> None:
    kinds: dict[str, FeatureKind] = {"x": "numeric"}
    values = [1e300, -1e300, 0.5] * 20
    reference = FeatureReference(size=60)
    reference.observe(columnarize([{"x": v} for v in values], kinds), kinds, position=0)
    sample = reference.numeric.sample[0, : reference.numeric.sample_sizes[0]]
    assert sample.shape == (60,) and np.all(np.isfinite(sample)) and sample[0] < 0.5 < sample[-1]
    assert reference.numeric.summary(0)["max"] == pytest.approx(3.40282e38)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=4),
    st.integers(0, 60),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_sketch_ks_is_exact_when_the_sketch_is_the_whole_reference(
    ref_sizes: list[int], cur_size: int, discrete: bool, seed: int
) -> None:
    """With every reference value kept (small references, sliding windows) the interpolated
    ECDF is the exact one: D, p-value and Wasserstein distance are those of the exact
    two-sample computation, ties included."""
    rng = np.random.default_rng(seed)
    rows = len(ref_sizes)
    sizes = np.array(ref_sizes)
    width = max(ref_sizes) + 2
    ref = np.full((rows, width), np.inf)
    cur = np.full((rows, max(cur_size, 1)), np.nan)
    cur_sizes = np.full(rows, cur_size)
    for i, s in enumerate(ref_sizes):
        draw = (
            rng.integers(0, 6, s + cur_size).astype(float)
            if discrete
            else rng.normal(size=s + cur_size)
        )
        ref[i, :s] = np.sort(draw[:s])
        cur[i, :cur_size] = np.sort(draw[s:] + (0 if discrete else 0.3))
    got = sketch_ks_wasserstein_rows(ref, sizes, sizes, cur, cur_sizes)
    want = ks_wasserstein_rows(ref, sizes, sizes, cur, cur_sizes)
    assert np.allclose(got[0], want[0], atol=1e-12)
    assert np.allclose(got[1], want[1], rtol=1e-9, atol=1e-300)
    assert np.allclose(got[2], want[2], atol=1e-9, equal_nan=True)
    for i, s in enumerate(ref_sizes):
        if s and cur_size:
            # scipy's asymptotic distribution divides by zero for a one-value side.
            with np.errstate(divide="ignore"):
                full = scipy.stats.ks_2samp(ref[i, :s], cur[i, :cur_size], method="asymp")
            assert got[0][i] == pytest.approx(full.statistic, abs=1e-12)
