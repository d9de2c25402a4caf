"""QualityMonitor: rolling null / mismatch / out-of-range / unseen-category rates."""

from __future__ import annotations

import doctest
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import driftline.detectors.quality
from driftline.detectors.columns import FeatureKind, columnarize
from driftline.detectors.quality import _BITS, QualityMeasure, QualityMonitor, _bit_counts
from driftline.detectors.reference import ModelProfile

KINDS: dict[str, FeatureKind] = {"x": "numeric", "c": "categorical"}


def rows(n: int, rng: np.random.Generator, **override: Any) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for _ in range(n):
        row: dict[str, object] = {"x": float(rng.normal()), "c": str(rng.choice(["a", "b"]))}
        for name, make in override.items():
            row[name] = make(rng)
        out.append(row)
    return out


def update(monitor: QualityMonitor, batch: list[dict[str, object]]) -> list[QualityMeasure]:
    kinds = {**KINDS, **{k: "numeric" for r in batch for k in r if k not in KINDS}}
    cols = columnarize(batch, kinds)  # type: ignore[arg-type]
    return monitor.update(cols, kinds, np.zeros(len(batch), np.int64))  # type: ignore[arg-type]


def pick(measures: list[QualityMeasure], feature: str, metric: str) -> list[QualityMeasure]:
    return [m for m in measures if m.feature == feature and m.metric == metric]


def test_doctests() -> None:
    assert doctest.testmod(driftline.detectors.quality).failed == 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"window_size": 0}, "window_size"),
        ({"every": 0}, "every"),
        ({"reference_size": 0}, "reference_size"),
        ({"range_margin": -0.1}, "range_margin"),
        ({"min_window": 0}, "min_window"),
    ],
)
def test_constructor_validates_arguments(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        QualityMonitor(**kwargs)


def test_null_rate_of_20_percent_is_measured_within_1000_events() -> None:
    """Reference 0% nulls, then 20% nulls in one feature: with the default window of 500, a
    null_rate >= 0.15 is measured within 1,000 events (binomial(500, 0.2) < 75 has probability
    ~2e-3 per window; this seed is fixed)."""
    rng = np.random.default_rng(0)
    monitor = QualityMonitor()
    update(monitor, rows(5000, rng))
    nulls = rows(1000, rng, x=lambda r: None if r.random() < 0.2 else float(r.normal()))
    measures = pick(update(monitor, nulls), "x", "null_rate")
    assert [m.index for m in measures] == list(range(99, 1000, 100))
    assert measures[-1].value >= 0.15 and measures[-1].n == 500
    assert measures[4].value >= 0.15  # 500 events after the change: the window is all new
    assert all(m.reference_value == 0.0 for m in measures)
    assert all(m.value == 0.0 for m in pick(update(monitor, rows(500, rng)), "c", "null_rate"))


def test_type_mismatch_out_of_range_and_unseen_category_rates() -> None:
    reference = [{"x": float(v), "c": "ab"[v % 2]} for v in range(100)]  # x in [0, 99]
    monitor = QualityMonitor(window_size=10, every=10, reference_size=100)
    update(monitor, reference)
    batch: list[dict[str, object]] = [
        {"x": 105.0, "c": "a"},  # inside: the range is widened by 10% of 99 on each side
        {"x": 109.0, "c": "new"},  # outside
        {"x": -10.5, "c": "b"},  # outside
        {"x": "12", "c": 3},  # mismatches
        {"x": None, "c": None},
        {"x": 50.0, "c": "a"},
        {"x": 50.0, "c": "a"},
        {"x": True, "c": "zz"},
        {"x": 0.0, "c": "b"},
        {"x": 100.0, "c": "b"},
    ]
    measures = update(monitor, batch)
    assert {m.index for m in measures} == {9}
    by_metric = {(m.feature, m.metric): (m.value, m.n, m.reference_value) for m in measures}
    assert by_metric == {
        ("c", "null_rate"): (0.1, 10, 0.0),
        ("c", "type_mismatch_rate"): (0.1, 10, 0.0),
        ("c", "unseen_category_rate"): (0.25, 8, 0.0),
        ("x", "null_rate"): (0.1, 10, 0.0),
        ("x", "type_mismatch_rate"): (0.2, 10, 0.0),
        ("x", "out_of_range_rate"): (2 / 7, 7, 0.0),
    }
    assert [m.feature for m in measures] == ["c", "c", "c", "x", "x", "x"]


def test_before_the_reference_only_null_and_mismatch_rates_without_reference_value() -> None:
    monitor = QualityMonitor(window_size=50, every=50, reference_size=1000)
    measures = update(monitor, rows(100, np.random.default_rng(1)))
    assert {m.metric for m in measures} == {"null_rate", "type_mismatch_rate"}
    assert all(m.reference_value is None for m in measures)
    assert monitor.reference_profile is None and monitor.features == ("x", "c")


def test_reference_completing_mid_batch_checks_only_the_rows_after_it() -> None:
    monitor = QualityMonitor(window_size=100, every=100, reference_size=150, min_window=1)
    batch = rows(150, np.random.default_rng(2)) + [{"x": 1e9, "c": "a"}] * 50
    measures = update(monitor, batch)
    (outside,) = pick(measures, "x", "out_of_range_rate")
    assert (outside.index, outside.value, outside.n) == (199, 1.0, 50)
    nulls = pick(measures, "x", "null_rate")
    assert [(m.index, m.n, m.reference_value) for m in nulls] == [(99, 100, None), (199, 100, 0.0)]


def test_unexpected_features_are_counted_not_measured() -> None:
    rng = np.random.default_rng(3)
    monitor = QualityMonitor(window_size=50, every=50, reference_size=100)
    update(monitor, rows(100, rng))
    measures = update(monitor, rows(100, rng, extra=lambda r: 1.0 if r.random() < 0.5 else None))
    assert "extra" not in {m.feature for m in measures}
    assert monitor.unexpected_features == {"extra": pytest.approx(50, abs=20)}


def test_shared_profile_gives_the_same_measures_as_an_own_first_n_reference() -> None:
    rng = np.random.default_rng(4)
    reference, stream = rows(300, rng), rows(400, rng, x=lambda r: float(r.normal(3.0)))
    own = QualityMonitor(window_size=100, every=50, reference_size=300)
    update(own, reference)
    kinds = dict(sorted(KINDS.items()))
    profile = ModelProfile.from_columns(columnarize(reference, kinds), kinds)
    shared = QualityMonitor(window_size=100, every=50)
    shared.set_reference(profile)
    given_profile = QualityMonitor(window_size=100, every=50, profile=profile)
    from_shared, from_given = update(shared, stream), update(given_profile, stream)
    assert from_shared == from_given
    # own's first windows still hold reference rows; from event 100 on the windows are equal
    assert [m for m in update(own, stream) if m.index >= 99] == from_shared
    assert any(m.metric == "out_of_range_rate" and m.value > 0.05 for m in from_shared)


def test_pickle_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(5)
    monitor = QualityMonitor(window_size=100, every=30, reference_size=200)
    update(monitor, rows(250, rng))
    clone = pickle.loads(pickle.dumps(monitor))
    batch = rows(100, rng, c=lambda r: str(r.choice(["a", "q"])))
    assert update(monitor, batch) == update(clone, batch)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 20),
    st.lists(st.integers(0, 40), min_size=1, max_size=15),
    st.lists(st.sampled_from([None, 1.0, "s", 1e6]), min_size=200, max_size=200),
)
def test_rates_are_over_the_last_window_for_any_batch_split(
    window: int, every: int, sizes: list[int], values: list[object]
) -> None:
    reference: list[dict[str, object]] = [{"x": float(v)} for v in range(10)]
    kinds: dict[str, FeatureKind] = {"x": "numeric"}
    monitor = QualityMonitor(window_size=window, every=every, reference_size=10, min_window=1)
    monitor.update(columnarize(reference, kinds), kinds, np.zeros(10, np.int64))
    stream = [{"x": v} for v in values]
    start = 0
    for size in sizes:
        batch = stream[start : start + size]
        cols = columnarize(batch, kinds)
        measures = monitor.update(cols, kinds, np.zeros(len(batch), np.int64))
        for m in measures:
            end = start + m.index + 1
            seen = [r["x"] for r in stream[max(0, end - window) : end]]
            if end < window:  # the window reaches back into the reference rows
                seen = [r["x"] for r in reference[max(0, 10 - (window - end)) :]] + seen
            assert (10 + end) % every == 0
            if m.metric == "null_rate":
                assert m.value == pytest.approx(seen.count(None) / len(seen))
            elif m.metric == "type_mismatch_rate":
                assert m.value == pytest.approx(seen.count("s") / len(seen))
            else:
                checked = [v for v in values[max(0, end - window) : end] if v in (1.0, 1e6)]
                assert m.n == len(checked)
                assert m.value == pytest.approx(checked.count(1e6) / len(checked))
        start += len(batch)


def test_bit_counts_count_every_flag_of_every_feature() -> None:
    """The window's flag totals (a histogram of flag values per feature) against counting each
    bit directly, on random flag blocks of 0 to 600 events."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        flags = rng.integers(0, 16, (int(rng.integers(1, 25)), int(rng.integers(0, 600))))
        flags = flags.astype(np.uint8)
        want = np.stack([((flags & bit) != 0).sum(axis=1) for bit in _BITS], axis=1)
        assert np.array_equal(_bit_counts(flags), want)
