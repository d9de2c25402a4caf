"""Rolling KPI windows: window contents under any batching, and metrics against direct formulas."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors.kpi import ClassificationKPIs, LabelTracker, RegressionKPIs

# --- window contents under arbitrary batching ---------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2]),  # y_true
        st.sampled_from([0, 1, 2]),  # y_pred
        st.one_of(st.just(math.nan), st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1)),
        st.integers(0, 100),  # timestamp, not necessarily in order
    ),
    max_size=60,
)
splits = st.lists(st.integers(0, 60), max_size=8)


def batches(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    return list(itertools.pairwise(bounds))


def columns(
    evs: list[tuple[int, int, float, int]],
) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    return (
        [e[0] for e in evs],
        [e[1] for e in evs],
        np.array([e[2] for e in evs], dtype=np.float64),
        np.array([e[3] for e in evs], dtype=np.int64),
    )


def in_one_batch(evs: list[tuple[int, int, float, int]]) -> dict[str, float | None]:
    kpis = ClassificationKPIs(size=max(1, len(evs)))
    if evs:
        kpis.update(*columns(evs))
    return kpis.metrics()


@settings(max_examples=200, deadline=None)
@given(events, splits, st.integers(1, 25))
def test_count_window_is_the_last_size_events_for_any_batching(
    evs: list[tuple[int, int, float, int]], cuts: list[int], size: int
) -> None:
    kpis = ClassificationKPIs(size=size)
    y_true, y_pred, score, ts = columns(evs)
    for lo, hi in batches(len(evs), cuts):
        kpis.update(y_true[lo:hi], y_pred[lo:hi], score[lo:hi], ts[lo:hi])
    assert kpis.metrics() == in_one_batch(evs[-size:])
    assert kpis.n_seen == len(evs)


@settings(max_examples=200, deadline=None)
@given(events, splits, st.integers(1, 60))
def test_time_window_is_the_events_within_duration_of_the_newest(
    evs: list[tuple[int, int, float, int]], cuts: list[int], duration: int
) -> None:
    kpis = ClassificationKPIs(window="time", duration_ms=duration)
    y_true, y_pred, score, ts = columns(evs)
    for lo, hi in batches(len(evs), cuts):
        kpis.update(y_true[lo:hi], y_pred[lo:hi], score[lo:hi], ts[lo:hi])
    newest = max((e[3] for e in evs), default=0)
    assert kpis.metrics() == in_one_batch([e for e in evs if e[3] > newest - duration])


def test_time_window_memory_stays_bounded() -> None:
    """Rows that left the window are dropped when the buffer fills, not kept forever."""
    kpis = RegressionKPIs(window="time", duration_ms=1_000)
    for start in range(0, 200_000, 250):
        t = np.arange(start, start + 250, dtype=np.int64)
        kpis.update(np.ones(250), np.zeros(250), t)
    assert kpis.metrics()["n"] == 1_000
    assert kpis._window._ts.shape[0] <= 4 * 1_024


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5_000), st.integers(0, 100)), max_size=50),
    splits,
    st.sampled_from([("count", 7, None), ("count", 50, None), ("time", 1000, 30)]),
)
def test_label_tracker_window_for_any_batching(
    evs: list[tuple[bool, int, int]], cuts: list[int], window: tuple[str, int, int | None]
) -> None:
    kind, size, duration = window
    tracker = LabelTracker(kind, size, duration)  # type: ignore[arg-type]
    for lo, hi in batches(len(evs), cuts):
        # One call per run of labelled or expired events, as the service would make them.
        chunk = evs[lo:hi]
        labeled = [e for e in chunk if e[0]]
        expired = [e for e in chunk if not e[0]]
        chunk = labeled + expired
        evs[lo:hi] = chunk
        if labeled:
            delays, stamps = [e[1] for e in labeled], [e[2] for e in labeled]
            tracker.update_labeled(np.array(delays), np.array(stamps))
        if expired:
            tracker.update_expired(len(expired), np.array([e[2] for e in expired]))
    if kind == "count":
        kept = evs[-size:]
    else:
        newest = max((e[2] for e in evs), default=0)
        kept = [e for e in evs if e[2] > newest - (duration or 0)]
    delays = np.array([e[1] for e in kept if e[0]], dtype=np.float64)
    m = tracker.metrics()
    assert m["n_labeled"] == len(delays)
    assert m["n_expired"] == len(kept) - len(delays)
    assert m["label_coverage"] == (len(delays) / len(kept) if kept else None)
    if len(delays):
        assert m["label_delay_p50_ms"] == np.quantile(delays, 0.5)
        assert m["label_delay_p95_ms"] == np.quantile(delays, 0.95)
    else:
        assert m["label_delay_p50_ms"] is None


# --- classification metrics against direct formulas ------------------------------------------


def brute_force_auc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def test_classification_metrics_match_direct_formulas() -> None:
    """Seeded binary stream; exact up to float rounding (rel 1e-12)."""
    rng = np.random.default_rng(11)
    n = 2_000
    y_true = (rng.random(n) < 0.3).astype(np.int64)
    score = np.clip(0.3 * y_true + rng.random(n) * 0.7, 0, 1).round(2)  # rounding makes ties
    score[rng.random(n) < 0.1] = np.nan
    y_pred = (np.nan_to_num(score, nan=0.2) > 0.5).astype(np.int64)
    kpis = ClassificationKPIs(size=1_500)
    kpis.update(list(y_true), list(y_pred), score, np.arange(n))
    m = kpis.metrics()

    t, p, s = y_true[-1_500:] == 1, y_pred[-1_500:] == 1, score[-1_500:]
    tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
    has = ~np.isnan(s)
    ps, ys = s[has], t[has].astype(float)
    clipped = np.clip(ps, np.finfo(float).eps, 1 - np.finfo(float).eps)
    expected = {
        "n": 1_500.0,
        "n_scored": float(has.sum()),
        "accuracy": (t == p).mean(),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": 2 * (tp / (tp + fp)) * (tp / (tp + fn)) / (tp / (tp + fp) + tp / (tp + fn)),
        "roc_auc": brute_force_auc(ps, t[has]),
        "log_loss": -np.mean(ys * np.log(clipped) + (1 - ys) * np.log(1 - clipped)),
        "brier": np.mean((ps - ys) ** 2),
        "positive_rate": p.mean(),
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key


def test_auc_matches_mann_whitney_u() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.4
    score = np.round(rng.beta(2, 3, 500) + 0.1 * y, 1).clip(0, 1)
    kpis = ClassificationKPIs(size=500)
    kpis.update(list(y), [True] * 500, score, np.zeros(500, dtype=np.int64))
    u = stats.mannwhitneyu(score[y], score[~y]).statistic
    assert kpis.metrics()["roc_auc"] == pytest.approx(u / (y.sum() * (~y).sum()), rel=1e-12)


def test_multiclass_accuracy_and_one_vs_rest_precision() -> None:
    kpis = ClassificationKPIs(positive_label="cat")
    y_true = ["cat", "dog", "bird", "cat", "dog"]
    y_pred = ["cat", "cat", "bird", "dog", "dog"]
    kpis.update(y_true, y_pred, np.full(5, np.nan), np.arange(5))
    m = kpis.metrics()
    assert m["accuracy"] == 3 / 5
    assert m["precision"] == 1 / 2
    assert m["recall"] == 1 / 2
    assert m["f1"] == 1 / 2
    assert m["positive_rate"] == 2 / 5


def test_labels_match_in_canonical_form() -> None:
    kpis = ClassificationKPIs(positive_label=True)
    kpis.update([1, 1.0, True, "1"], [True, 1, 1.0, 1], np.full(4, np.nan), np.arange(4))
    m = kpis.metrics()
    assert m["accuracy"] == 3 / 4  # "1" is not 1
    assert m["recall"] == 1.0  # three labels are the positive class, all predicted


def test_undefined_metrics_are_none() -> None:
    kpis = ClassificationKPIs()
    empty = kpis.metrics()
    assert empty["n"] == 0.0
    assert all(v is None for k, v in empty.items() if k not in ("n", "n_scored"))
    kpis.update([0, 0, 0], [0, 0, 0], np.full(3, np.nan), np.arange(3))
    m = kpis.metrics()
    assert m["accuracy"] == 1.0
    assert m["precision"] is None  # no positive prediction
    assert m["recall"] is None  # no positive label
    assert m["f1"] is None
    assert m["roc_auc"] is None and m["log_loss"] is None and m["brier"] is None
    kpis.update([0], [0], np.array([0.1]), np.array([3]))
    m = kpis.metrics()
    assert m["roc_auc"] is None  # one class only
    assert m["brier"] == pytest.approx(0.01)


def test_f1_is_zero_when_nothing_positive_is_predicted() -> None:
    kpis = ClassificationKPIs()
    kpis.update([1, 0], [0, 0], np.array([0.2, 0.1]), np.arange(2))
    m = kpis.metrics()
    assert m["precision"] is None
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0


def test_log_loss_clips_certain_mistakes() -> None:
    kpis = ClassificationKPIs()
    kpis.update([1], [0], np.array([0.0]), np.array([0]))
    assert kpis.metrics()["log_loss"] == pytest.approx(-math.log(np.finfo(float).eps))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": "sliding"}, "window"),
        ({"size": 0}, "size"),
        ({"size": True}, "size"),
        ({"window": "time"}, "duration_ms"),
        ({"window": "time", "duration_ms": 0}, "duration_ms"),
        ({"window": "count", "duration_ms": 1000}, "duration_ms"),
        ({"positive_label": math.nan}, "positive_label"),
    ],
)
def test_classification_constructor_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ClassificationKPIs(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([1, 0], [1], np.array([0.5, 0.5]), np.arange(2)), "y_pred"),
        (([1, 0], [1, 0], np.array([0.5]), np.arange(2)), "score"),
        (([1, 0], [1, 0], np.array([0.5, 1.5]), np.arange(2)), "score"),
        (([1, 0], [1, 0], np.array([0.5, np.inf]), np.arange(2)), "score"),
        (([1, 0], [1, 0], np.array([0.5, 0.5]), np.array([0.5, 1.0])), "timestamps_ms"),
        (([1, 0], [1, 0], np.array([0.5, 0.5]), np.arange(3)), "timestamps_ms"),
    ],
)
def test_classification_update_validation_leaves_the_window_untouched(
    args: tuple[object, ...], field: str
) -> None:
    kpis = ClassificationKPIs()
    with pytest.raises(ValueError, match=f"^{field}"):
        kpis.update(*args)  # type: ignore[arg-type]
    assert kpis.n_seen == 0


def test_classification_pickles_and_continues_identically() -> None:
    rng = np.random.default_rng(5)
    a = ClassificationKPIs(window="time", duration_ms=50)
    y = list(rng.integers(0, 2, 300))
    s = rng.random(300)
    t = np.sort(rng.integers(0, 400, 300))
    a.update(y[:100], y[::-1][:100], s[:100], t[:100])
    b = pickle.loads(pickle.dumps(a))
    for kpis in (a, b):
        kpis.update(y[100:], y[::-1][100:], s[100:], t[100:])
    assert a.metrics() == b.metrics()


# --- regression -------------------------------------------------------------------------------


def test_regression_metrics_match_direct_formulas() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(10, 3, 1_000)
    y[::50] = 0.0
    pred = y + rng.normal(0, 1, 1_000)
    kpis = RegressionKPIs(size=800)
    for lo in range(0, 1_000, 64):  # cadence-sized slices
        kpis.update(y[lo : lo + 64], pred[lo : lo + 64], np.arange(lo, min(lo + 64, 1_000)))
    t, p = y[-800:], pred[-800:]
    nz = t != 0
    m = kpis.metrics()
    assert m["n"] == 800
    assert m["mae"] == pytest.approx(np.mean(np.abs(t - p)), rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((t - p) ** 2)), rel=1e-12)
    assert m["mape"] == pytest.approx(np.mean(np.abs((t[nz] - p[nz]) / t[nz])), rel=1e-12)
    r2 = 1 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2)
    assert m["r2"] == pytest.approx(r2, rel=1e-12)


def test_regression_undefined_metrics_are_none() -> None:
    kpis = RegressionKPIs()
    assert kpis.metrics() == {"n": 0.0, "mae": None, "rmse": None, "mape": None, "r2": None}
    kpis.update(np.array([0.0, 0.0]), np.array([1.0, -1.0]), np.arange(2))
    m = kpis.metrics()
    assert m["mae"] == 1.0
    assert m["mape"] is None  # every outcome is zero
    assert m["r2"] is None  # constant outcome


def test_regression_rejects_non_finite_values() -> None:
    kpis = RegressionKPIs()
    with pytest.raises(ValueError, match=r"^y_pred"):
        kpis.update(np.array([1.0]), np.array([np.nan]), np.arange(1))
    with pytest.raises(ValueError, match=r"^y_pred"):
        kpis.update(np.array([1.0, 2.0]), np.array([1.0]), np.arange(2))


# --- label tracker ----------------------------------------------------------------------------


def test_label_tracker_coverage_and_delay() -> None:
    tracker = LabelTracker(size=10)
    tracker.update_labeled(np.arange(1, 9) * 100.0, np.arange(8))
    tracker.update_expired(4, np.arange(8, 12))
    m = tracker.metrics()
    delays = np.arange(3, 9) * 100.0  # the first two labelled events left the window
    assert m["label_coverage"] == 6 / 10
    assert m["label_delay_p50_ms"] == np.quantile(delays, 0.5)
    assert m["label_delay_p95_ms"] == np.quantile(delays, 0.95)


def test_label_tracker_empty_and_validation() -> None:
    tracker = LabelTracker()
    assert tracker.metrics()["label_coverage"] is None
    with pytest.raises(ValueError, match=r"^n"):
        tracker.update_expired(-1, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match=r"^timestamps_ms"):
        tracker.update_expired(2, np.array([1]))
    with pytest.raises(ValueError, match=r"^delays_ms"):
        tracker.update_labeled(np.array([np.inf]), np.array([1]))
    tracker.update_expired(0, np.array([], dtype=np.int64))
    assert tracker.n_seen == 0
