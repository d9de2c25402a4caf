"""The compact reference: its test accuracy against the full reference, the bytes a model holds,
and the one reference that data drift and data quality share."""

from __future__ import annotations

import math
import pickle
import sys
from typing import Any

import numpy as np
import pytest
import scipy.stats

from driftline.detectors.columns import FeatureColumns, FeatureKind
from driftline.detectors.data_drift import DataDriftMonitor, DriftEvaluation
from driftline.detectors.generation import Generation
from driftline.detectors.quality import QualityMonitor
from driftline.detectors.reference import FeatureReference
from driftline.detectors.settings import MonitorSettings
from driftline.detectors.stats import bin_counts, js_distance, kolmogorov_sf, psi, quantile_edges
from tests.unit.test_data_drift import CATEGORIES, KINDS, NUMERIC, _numeric, model_batch

S = 512  # sketch points per numeric feature (the default sample_size)
SD = {k: float(np.std(v)) for k, v in _numeric(np.random.default_rng(99), 200_000).items()}


def _cases() -> list[tuple[DriftEvaluation, FeatureColumns]]:
    """20 seeds x 4 mean shifts (0, 0.1, 0.2, 0.3 sd of every numeric feature): a 5,000-event
    first-N reference and one 1,000-event window, evaluated by the monitor with the defaults."""
    out = []
    for seed in range(20):
        for shift in (0.0, 0.1, 0.2, 0.3):
            rng = np.random.default_rng(seed)
            reference = model_batch(rng, 5000)
            window = model_batch(rng, 1000, shift={k: shift * SD[k] for k in NUMERIC})
            monitor = DataDriftMonitor(reference_size=5000, window_size=1000, every=1000)
            monitor.update(reference, KINDS, np.zeros(5000, np.int64))
            (evaluation,) = monitor.update(window, KINDS, np.zeros(1000, np.int64))
            out.append((evaluation, reference))
    return out


@pytest.fixture(scope="module")
def cases() -> list[tuple[DriftEvaluation, FeatureColumns]]:
    return _cases()


def _full(reference: FeatureColumns, evaluation: DriftEvaluation, name: str) -> Any:
    """The full reference and the window of ``name`` as the monitor holds values (float32),
    without missing values."""
    ref = reference.numeric[name].astype(np.float32).astype(np.float64)
    cur = evaluation.windows[name].astype(np.float64)
    return np.sort(ref[~np.isnan(ref)]), np.sort(cur[~np.isnan(cur)])


def test_ks_on_the_sketch_agrees_with_scipy_on_the_full_reference(
    cases: list[tuple[DriftEvaluation, FeatureColumns]],
) -> None:
    """KS of each window against the 512-point sketch vs ``scipy.stats.ks_2samp`` against the
    whole 5,000-event reference, 1,200 seeded (feature, window) pairs.

    * D: within ``1 / S`` always (the sketch ECDF is exact at its points and interpolated
      between them); observed max 0.00106, mean |error| 0.00026 and no bias (mean error
      -0.00003; an uninterpolated sketch has +0.0002, i.e. too many rejections).
    * p-value: inside the band that ``D +- 1 / S`` gives, with 0.03 decades for the difference
      between our asymptotic formula and scipy's; observed within 0.15 decades of scipy's for
      p >= 1e-12 (0.3 below).
    * Decisions ``p < level`` at 1e-2, 1e-3 and 5e-7 (alpha 1e-5 over 20 features): observed
      1, 0 and 4 disagreements in 1,200, each with scipy's p-value within a factor 1.3 of the
      level. The test allows 1% of cases, within a factor 10^0.2 of the level.
    """
    d_errors, log_errors, disagreements = [], [], 0
    for evaluation, reference in cases:
        for f in evaluation.features:
            if f.kind != "numeric":
                continue
            ref, cur = _full(reference, evaluation, f.feature)
            full = scipy.stats.ks_2samp(ref, cur, method="asymp")
            d_errors.append(f.statistic - full.statistic)
            assert abs(f.statistic - full.statistic) <= 1 / S
            n, m = ref.shape[0], cur.shape[0]
            root = math.sqrt(n * m / (n + m))
            scale = root + 0.12 + 0.11 / root
            lowest = kolmogorov_sf(scale * (full.statistic + 1 / S))
            highest = kolmogorov_sf(scale * max(full.statistic - 1 / S, 0.0))
            slack = 10**0.03
            assert lowest / slack <= f.p_value <= highest * slack
            if full.pvalue >= 1e-12:
                log_errors.append(abs(math.log10(f.p_value) - math.log10(full.pvalue)))
            for level in (1e-2, 1e-3, 5e-7):
                if (f.p_value < level) != (full.pvalue < level):
                    disagreements += 1
                    assert abs(math.log10(full.pvalue / level)) < 0.2
    errors = np.array(d_errors)
    assert errors.shape == (1200,)
    assert np.mean(np.abs(errors)) < 0.0004 and abs(np.mean(errors)) < 0.0001
    assert max(log_errors) < 0.2
    assert disagreements <= 0.01 * 3 * 1200


def test_wasserstein_psi_and_js_agree_with_the_full_reference(
    cases: list[tuple[DriftEvaluation, FeatureColumns]],
) -> None:
    """Wasserstein on the sketch vs ``scipy.stats.wasserstein_distance`` on the full reference:
    within 0.005 reference standard deviations (observed max 0.004). PSI and JS use the
    reference's own deciles, kept exactly: equal to the full-sample values up to the 9-digit
    rounding of the stored bin proportions."""
    for evaluation, reference in cases[::4]:
        for f in evaluation.features:
            if f.kind != "numeric":
                continue
            ref, cur = _full(reference, evaluation, f.feature)
            assert f.wasserstein is not None
            full = scipy.stats.wasserstein_distance(ref, cur)
            assert abs(f.wasserstein - full) <= 0.005 * SD[f.feature]
            f32 = ref.astype(np.float32)
            inner = quantile_edges(f32, 10)
            edges = np.concatenate([[-np.inf], inner, [np.inf]]).astype(np.float32)
            ref_counts = bin_counts(f32, edges)
            cur_counts = bin_counts(cur.astype(np.float32), edges)
            assert f.psi == pytest.approx(psi(ref_counts / ref.shape[0], cur_counts), abs=1e-6)
            assert f.js_distance == pytest.approx(js_distance(ref_counts, cur_counts), abs=1e-6)


# -- memory -------------------------------------------------------------------------------------


def model_bytes(
    n_numeric: int,
    categories: list[tuple[int, int]],
    *,
    window: int = 1000,
    prediction_window: int = 1000,
    quality_window: int = 500,
    sample_size: int = S,
    n_bins: int = 10,
    reference_size: int = 5000,
) -> tuple[int, int]:
    """(steady, filling) bytes of numpy arrays of a model's prediction side, the formula of
    ``DataDriftMonitor``'s docstring: ``categories`` holds (categories, longest name) of each
    categorical feature; the prediction is a numeric score."""
    n_features = n_numeric + len(categories)
    numeric_reference = 4 * sample_size + 12 * n_bins + 140
    steady = (
        window * (4 * n_numeric + len(categories) + 8)
        + n_numeric * numeric_reference
        + (8 * n_numeric**2 if n_numeric >= 2 else 0)  # the joint test's correlation matrix
        + sum(_lookup_bytes(k) for k, _ in categories)
        + 12 * prediction_window
        + numeric_reference
        + n_features * (quality_window + 88)
    )
    filling = 4 * reference_size * (n_numeric + 1) + n_features * (quality_window + 40)
    return steady, filling


def _lookup_bytes(k: int) -> int:
    """A category lookup as a profile builds it: one key per category, then None."""
    lookup: dict[str | None, int] = {}
    for code in range(k):
        lookup[f"category {code}"] = code
    lookup[None] = -1
    return sys.getsizeof(lookup)


def _score(values: np.ndarray) -> FeatureColumns:
    no = np.zeros(values.shape[0], dtype=bool)
    return FeatureColumns(values.shape[0], {"score": values}, {}, {"score": no}, {"score": no})


def test_bytes_per_model_match_the_formula_and_stay_constant_while_filling() -> None:
    """The prediction side of a model at the defaults, wired like ``Generation`` (quality reads
    the data-drift reference): while the first-N reference fills with one-row calls, the bytes
    held are the fill arrays allocated up front and do not change from call to call; once it
    is ready they are the compact form, 137,808 bytes for 15 numeric and 5 categorical
    features, and stay so."""
    drift, prediction = DataDriftMonitor(), DataDriftMonitor()
    quality = QualityMonitor(shared_reference=drift.feature_reference)
    shared = drift.feature_reference
    assert shared is not None

    def held() -> int:
        return drift.nbytes + prediction.nbytes + quality.nbytes - shared.nbytes

    rng = np.random.default_rng(0)
    steady, filling = model_bytes(15, [(len(p), 4) for p in CATEGORIES.values()])
    score_kinds: dict[str, FeatureKind] = {"score": "numeric"}

    def feed(n: int) -> None:
        seen = drift.n_seen
        batch, ts = model_batch(rng, n), np.arange(seen, seen + n, dtype=np.int64)
        drift.update(batch, KINDS, ts)
        prediction.update(_score(rng.random(n)), score_kinds, ts)
        quality.update(batch, KINDS, ts)

    for _ in range(300):
        feed(1)
        assert held() == filling
    feed(4699)
    assert held() == filling and not shared.ready
    feed(1)
    assert shared.ready and held() == steady == 137_808
    for _ in range(300):
        feed(1)
        assert held() == steady
    feed(3000)
    assert held() == steady


def test_a_sliding_reference_holds_two_windows() -> None:
    monitor = DataDriftMonitor("sliding", window_size=400)
    batch = model_batch(np.random.default_rng(1), 1000)
    monitor.update(batch, KINDS, np.arange(1000, dtype=np.int64))
    assert monitor.feature_reference is None
    assert monitor.nbytes == 2 * 400 * (4 * 15 + 5 + 8)


# -- one reference for data drift and quality ---------------------------------------------------


def test_quality_reads_the_data_drift_reference_and_both_take_each_event_once() -> None:
    rng = np.random.default_rng(2)
    drift = DataDriftMonitor(reference_size=1000, window_size=500, every=250)
    quality = QualityMonitor(window_size=200, every=100, shared_reference=drift.feature_reference)
    own = QualityMonitor(window_size=200, every=100, reference_size=1000)
    alone = DataDriftMonitor(reference_size=1000, window_size=500, every=250)
    got: list[Any] = [[], [], [], []]
    for size in (1, 299, 1, 650, 49, 1000):  # the reference completes mid-batch
        batch = model_batch(rng, size, null_rate=0.1)
        ts = np.arange(drift.n_seen, drift.n_seen + size, dtype=np.int64)
        for out, monitor in zip(got, (drift, quality, own, alone), strict=True):
            out.extend(monitor.update(batch, KINDS, ts))
    assert quality.feature_reference is drift.feature_reference
    assert drift.feature_reference is not None and drift.feature_reference.n_rows == 1000
    # The same measures as with a reference of its own, the same evaluations as alone.
    assert got[1] == got[2] and got[0] == got[3]
    assert {m.metric for m in got[1]} >= {"out_of_range_rate", "unseen_category_rate"}
    profile = quality.reference_profile
    assert profile is not None and profile.to_dict() == own.reference_profile.to_dict()  # type: ignore[union-attr]


def test_generation_gives_quality_the_data_drift_reference_of_its_size() -> None:
    def wired(**data_drift: Any) -> tuple[Any, Any]:
        settings = MonitorSettings.model_validate({"data_drift": data_drift})
        generation = Generation("m", settings)
        drift, quality = generation._data_drift, generation._quality
        assert quality is not None
        return None if drift is None else drift.monitor, quality.monitor.feature_reference

    drift, reference = wired(reference_size=300)
    assert reference is drift.feature_reference and reference.size == 300
    for settings in ({"enabled": False}, {"reference": "sliding"}):
        drift, reference = wired(reference_size=300, **settings)
        assert reference.size == 300
        assert drift is None or drift.feature_reference is None
    generation = pickle.loads(pickle.dumps(Generation("m", MonitorSettings())))
    assert generation._quality is not None and generation._data_drift is not None
    quality, drift = generation._quality.monitor, generation._data_drift.monitor
    assert quality.feature_reference is drift.feature_reference


def test_the_reference_refuses_skipped_events_and_pickles_while_filling() -> None:
    kinds: dict[str, FeatureKind] = {"x": "numeric"}

    def column(values: np.ndarray) -> FeatureColumns:
        no = np.zeros(values.shape[0], dtype=bool)
        return FeatureColumns(values.shape[0], {"x": values}, {}, {"x": no}, {"x": no})

    reference = FeatureReference(size=10)
    four = column(np.arange(4.0))
    assert reference.observe(four, kinds, position=0) == 4
    assert reference.observe(four, kinds, position=0) == 4  # the same events: not again
    with pytest.raises(ValueError, match="skips events"):
        reference.observe(four, kinds, position=5)
    assert reference.observe(four, kinds, position=4) == 4
    assert reference.observe(four, kinds, position=8) == 2 and reference.ready
    assert reference.numeric.sample[0, :10].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    # A fill array of its own memory mapping pickles as a plain array.
    big = FeatureReference(size=5000)
    values = np.random.default_rng(3).normal(size=5000)
    big.observe(column(values[:7]), kinds, position=0)
    clone = pickle.loads(pickle.dumps(big))
    for r in (big, clone):
        assert r.observe(column(values[7:]), kinds, position=7) == 4993 and r.ready
    assert np.array_equal(big.numeric.sample, clone.numeric.sample)
    assert big.numeric.summary(0) == clone.numeric.summary(0)


def test_a_feature_counts_only_the_fill_events_that_carried_it() -> None:
    """The fill array is set column by column as events are taken: a numeric feature that
    first appears mid-fill, or that a batch lacks, is missing in those events' columns (not 0),
    exactly as when the same events come in one batch with the gaps as nulls."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(5.0, 1.0, 10), rng.normal(-5.0, 1.0, 10)
    kinds: dict[str, FeatureKind] = {"x": "numeric", "y": "numeric"}

    def batch(lo: int, hi: int, names: tuple[str, ...]) -> FeatureColumns:
        n = hi - lo
        values = {k: v[lo:hi] for k, v in (("x", x), ("y", y)) if k in names}
        no = {k: np.zeros(n, dtype=bool) for k in values}
        return FeatureColumns(n, values, {}, no, no)

    # Big enough for a fill array of its own mapping (the pages the system zeroes).
    size = 2048
    pieces = FeatureReference(size=size)
    pieces.observe(batch(0, 4, ("x",)), {"x": "numeric"}, position=0)
    pieces.observe(batch(4, 7, ("x", "y")), kinds, position=4)
    pieces.observe(batch(7, 10, ("y",)), kinds, position=7)
    x_gaps, y_gaps = x.copy(), y.copy()
    x_gaps[7:], y_gaps[:4] = np.nan, np.nan
    missing = {"x": np.isnan(x_gaps), "y": np.isnan(y_gaps)}
    whole = FeatureReference(size=size)
    no = np.zeros(10, dtype=bool)
    whole.observe(
        FeatureColumns(10, {"x": x_gaps, "y": y_gaps}, {}, missing, {"x": no, "y": no}),
        kinds,
        position=0,
    )
    rest = FeatureColumns(size - 10, {}, {}, {}, {})
    for reference in (pieces, whole):
        reference.observe(rest, kinds, position=10)
        assert reference.ready
    assert pieces.numeric.count.tolist() == whole.numeric.count.tolist() == [7, 6]
    for i in range(2):
        assert pieces.numeric.summary(i) == whole.numeric.summary(i)
    assert pieces.numeric.summary(1)["max"] < 0  # no 0 from the events before y appeared
