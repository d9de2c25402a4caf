"""``CorrelationDrift``: Spearman matrices as scipy computes them, a false-alarm rate within the
stated bound on skewed and heavy-tailed features, and a correlation change with unchanged
marginals found at a fixed index of a seeded stream."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest
from scipy import stats

from driftline.detectors.columns import FeatureColumns
from driftline.detectors.data_drift import DataDriftMonitor, DriftEvaluation
from driftline.detectors.events import Prediction, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.multivariate import CorrelationDrift, FeatureCorrelation, spearman_matrix
from driftline.detectors.reference import FeatureReference, ModelProfile
from driftline.detectors.settings import MonitorSettings
from tests.schemas import ALERT_SCHEMA, INCIDENT_SCHEMA

NAMES = [f"x{i}" for i in range(20)]


def shapes(rng: np.random.Generator, n: int, d: int = 20) -> np.ndarray:
    """``d`` independent features of five shapes: normal, exponential, log-normal, uniform and
    Student's t with 3 degrees of freedom (heavy tails), some rounded to make ties."""
    makers = [
        lambda: rng.standard_normal(n),
        lambda: rng.exponential(1.0, n),
        lambda: rng.lognormal(0.0, 1.0, n),
        lambda: rng.uniform(0.0, 1.0, n),
        lambda: rng.standard_t(3, n),
    ]
    columns = [makers[j % 5]() for j in range(d)]
    columns[3] = np.round(columns[3], 1)  # ties
    return np.column_stack(columns)


def test_spearman_matrix_is_scipys_with_ties_and_missing_rows() -> None:
    rng = np.random.default_rng(3)
    x = shapes(rng, 500, 6)
    x[rng.random(500) < 0.05, 2] = np.nan
    got, n = spearman_matrix(x)
    complete = x[~np.isnan(x).any(axis=1)]
    expected = stats.spearmanr(complete).statistic
    assert n == complete.shape[0]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_a_constant_column_correlates_zero() -> None:
    x = np.column_stack([np.arange(50.0), np.ones(50), np.arange(50.0) ** 2])
    r, _ = spearman_matrix(x)
    assert r[0, 1] == r[1, 2] == 0.0 and r[0, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("correlated_reference", [False, True])
def test_false_alarms_stay_within_the_stated_rate(correlated_reference: bool) -> None:
    """2,000 stationary windows of 1,000 rows against a 5,000-row reference, 20 features of
    five shapes (190 pairs), at a stated rate of 2 %: the observed rate stays below 2 % plus
    three binomial standard errors (0.94 points). With a correlated reference pair (0.6) the
    bound holds too."""
    rng = np.random.default_rng(17)
    rate, windows = 0.02, 2000

    def draw(n: int) -> np.ndarray:
        x = shapes(rng, n)
        if correlated_reference:
            x[:, 5] = 0.6 * x[:, 0] + 0.8 * rng.standard_normal(n)
        return x

    detector = CorrelationDrift(NAMES, false_alarm_rate=rate)
    detector.fit(draw(5000))
    alarms = sum(detector.test(draw(1000)).drifted for _ in range(windows))
    bound = rate + 3 * np.sqrt(rate * (1 - rate) / windows)
    assert alarms / windows <= bound, alarms


def stream(n: int, change_at: int, rho: float, seed: int) -> np.ndarray:
    """20 features; from ``change_at`` on, x1 and x2 (normal) correlate at ``rho`` with both
    marginals still N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = shapes(rng, n)
    x[:, 1] = rng.standard_normal(n)
    x[:, 2] = rng.standard_normal(n)
    after = np.arange(n) >= change_at
    x[after, 2] = rho * x[after, 1] + np.sqrt(1 - rho * rho) * x[after, 2]
    return x


def first_detection(x: np.ndarray, reference_size: int, window: int, every: int) -> int | None:
    detector = CorrelationDrift(NAMES)
    detector.fit(x[:reference_size])
    for end in range(reference_size + window, x.shape[0] + 1, every):
        result = detector.test(x[end - window : end])
        if result.drifted:
            assert result.features[:2] == ["x1", "x2"], result.pairs[:2]
            return end - 1
    return None


def test_a_correlation_change_with_unchanged_marginals_is_found_at_a_fixed_index() -> None:
    """0 -> 0.9 at event 10,000 after a 5,000-event reference: rolling windows of 1,000
    evaluated every 100 events find it at event 10,299 (seeded; 300 changed rows in the
    window), far within the 3,000 events of issue 10's floor, while a KS test of either
    feature sees nothing."""
    x = stream(20_000, 10_000, 0.9, seed=5)
    assert first_detection(x, 5000, 1000, 100) == 10_299
    for j in (1, 2):
        assert stats.ks_2samp(x[:5000, j], x[10_000:11_000, j]).pvalue > 0.01


def test_no_detection_on_a_stationary_stream() -> None:
    assert first_detection(stream(30_000, 10**9, 0.0, seed=6), 5000, 1000, 100) is None


def test_a_mostly_missing_column_sits_out_and_missing_rows_are_dropped() -> None:
    rng = np.random.default_rng(9)
    detector = CorrelationDrift(["a", "b", "c"], min_samples=50)
    detector.fit(rng.standard_normal((2000, 3)))
    window = rng.standard_normal((500, 3))
    window[:400, 2] = np.nan  # 80 % missing: c sits out, the 500 rows stay
    result = detector.test(window)
    assert result.n_current == 500
    assert {p.feature_a for p in result.pairs} | {p.feature_b for p in result.pairs} == {"a", "b"}
    window[:480, 0] = np.nan  # a missing too: only b is left, no test
    assert detector.test(window).statistic == 0.0 and not detector.test(window).pairs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["a"]}, "at least two"),
        ({"features": ["a", "a"]}, "distinct"),
        ({"features": ["a", "b"], "false_alarm_rate": 0.0}, "false_alarm_rate"),
        ({"features": ["a", "b"], "false_alarm_rate": 1.5}, "false_alarm_rate"),
        ({"features": ["a", "b"], "min_samples": 5}, "min_samples"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorrelationDrift(**kwargs)  # type: ignore[arg-type]


def test_a_test_before_fit_or_of_the_wrong_shape_is_an_error() -> None:
    detector = CorrelationDrift(["a", "b"])
    with pytest.raises(ValueError, match="fit a reference"):
        detector.test(np.zeros((200, 2)))
    with pytest.raises(ValueError, match="complete rows"):
        detector.fit(np.zeros((20, 2)))
    detector.fit(np.random.default_rng(0).standard_normal((200, 2)))
    with pytest.raises(ValueError, match="rows of 2 features"):
        detector.test(np.zeros((200, 3)))


def test_pickling_round_trips() -> None:
    rng = np.random.default_rng(2)
    detector = CorrelationDrift(["a", "b", "c"])
    detector.fit(rng.standard_normal((1000, 3)))
    window = rng.standard_normal((300, 3))
    clone = pickle.loads(pickle.dumps(detector))
    assert clone.test(window) == detector.test(window)


def test_feature_major_input_and_a_given_matrix_decide_as_rows_do() -> None:
    """The service holds a model's reference and window one row per feature: fitting from
    that, or from the reference's matrix, and testing a feature-major window give the same
    test as rows."""
    rng = np.random.default_rng(4)
    reference = shapes(rng, 3000, 6)
    window = shapes(rng, 800, 6)
    window[:, 4] = 0.7 * window[:, 0] + rng.standard_normal(800)
    names = NAMES[:6]
    by_rows = CorrelationDrift(names)
    by_rows.fit(reference)
    by_features = CorrelationDrift(names)
    by_features.fit_features(reference.T.astype(np.float32).astype(np.float64))
    by_matrix = CorrelationDrift(names)
    by_matrix.fit_matrix(*spearman_matrix(reference))
    expected = by_rows.test(window)
    assert expected.drifted and expected.features[:2] == ["x0", "x4"]
    assert by_matrix.test_features(np.ascontiguousarray(window.T)) == expected
    assert by_features.test(window).pairs[0].feature_b == "x4"
    with pytest.raises(ValueError, match="6x6"):
        by_matrix.fit_matrix(np.eye(5), 3000)


# -- as part of a model's reference and data-drift monitor ----------------------------------------


def feature_columns(values: np.ndarray, names: list[str]) -> FeatureColumns:
    """Numeric columns (NaN = missing) of ``values``, one per name."""
    n = values.shape[0]
    missing = {name: np.isnan(values[:, j]) for j, name in enumerate(names)}
    no = {name: np.zeros(n, dtype=bool) for name in names}
    numeric = {name: values[:, j] for j, name in enumerate(names)}
    return FeatureColumns(n, numeric, {}, missing, no)


def coupled(rng: np.random.Generator, n: int, rho: float, d: int = 6) -> np.ndarray:
    """``shapes`` with its first two columns, both normal, correlated ``rho``: marginals
    unchanged."""
    x = shapes(rng, n, d)
    x[:, 5] = rng.standard_normal(n)
    x[:, 5] = rho * x[:, 0] + np.sqrt(1.0 - rho * rho) * x[:, 5]
    return x


def drift_monitor(**kwargs: object) -> DataDriftMonitor:
    options: dict[str, object] = {"reference_size": 2000, "joint_alpha": 1e-6, **kwargs}
    return DataDriftMonitor(**options)  # type: ignore[arg-type]


def feed(monitor: DataDriftMonitor, values: np.ndarray, names: list[str]) -> list[DriftEvaluation]:
    seen = monitor.n_seen
    ts = np.arange(seen, seen + values.shape[0], dtype=np.int64)
    return monitor.update(feature_columns(values, names), dict.fromkeys(names, "numeric"), ts)


def test_the_reference_keeps_the_correlation_of_its_numeric_features() -> None:
    """The first-N reference condenses into the Spearman matrix of its numeric features (as
    scipy computes it over the complete rows); a mostly-missing feature is left out; the
    profile of the reference carries the matrix through JSON unchanged."""
    rng = np.random.default_rng(5)
    names = [f"x{i}" for i in range(6)] + ["sparse"]
    x = np.column_stack([coupled(rng, 3000, 0.5), np.full(3000, np.nan)])
    x[rng.random(3000) < 0.1, 2] = np.nan
    x[:100, 6] = 1.0  # 97% missing
    reference = FeatureReference(size=2000)
    reference.observe(feature_columns(x, names), dict.fromkeys(names, "numeric"), 0)
    correlation = reference.correlation
    assert correlation is not None and correlation.features == tuple(names[:6])
    # As held: float32 values, rows with a missing value left out.
    rows = x[:2000, :6].astype(np.float32).astype(np.float64)
    complete = rows[~np.isnan(rows).any(axis=1)]
    expected = stats.spearmanr(complete).statistic
    np.testing.assert_allclose(correlation.matrix, expected, atol=1e-12)
    assert correlation.n == complete.shape[0] < 2000
    profile = reference.to_profile()
    assert profile is not None and profile.correlation is correlation
    again = ModelProfile.from_dict(orjson.loads(orjson.dumps(profile.to_dict())))
    assert again.correlation is not None
    assert again.correlation.matrix.tolist() == correlation.matrix.tolist()
    assert again.correlation.features == correlation.features


def test_a_profile_from_training_data_gives_the_same_decisions_as_a_first_n_reference() -> None:
    """``ModelProfile.from_columns`` (what ``driftline profile`` writes) holds the same matrix
    as a first-N reference of the same rows, so a profile-mode monitor tests joint drift
    exactly as a first-N one does."""
    rng = np.random.default_rng(6)
    names = [f"x{i}" for i in range(6)]
    training, later = coupled(rng, 2000, 0.0), coupled(rng, 3000, 0.6)
    profile = ModelProfile.from_columns(
        feature_columns(training, names), dict.fromkeys(names, "numeric")
    )
    first_n = drift_monitor()
    feed(first_n, training, names)
    from_profile = drift_monitor(reference="profile", profile=profile)
    a, b = feed(first_n, later, names), feed(from_profile, later, names)
    assert [e.joint for e in a] == [e.joint for e in b]
    assert a and all(e.joint is not None and e.joint.drifted for e in a)


def test_an_older_profile_without_a_correlation_runs_no_joint_test() -> None:
    rng = np.random.default_rng(7)
    names = [f"x{i}" for i in range(6)]
    training = coupled(rng, 2000, 0.0)
    profile = ModelProfile.from_columns(
        feature_columns(training, names), dict.fromkeys(names, "numeric")
    )
    data = profile.to_dict()
    del data["correlation"]
    older = ModelProfile.from_dict(data)
    assert older.correlation is None
    monitor = drift_monitor(reference="profile", profile=older)
    evaluations = feed(monitor, coupled(rng, 1000, 0.9), names)
    assert evaluations and all(e.joint is None for e in evaluations)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"features": ["a", "b"], "matrix": [[1.0]], "n": 10}, "2 features has a"),
        ({"features": ["a", "a"], "matrix": [[1, 0], [0, 1]], "n": 10}, "2 features has a"),
        ({"features": ["a", "b"], "n": 10}, "correlation"),
    ],
)
def test_a_malformed_correlation_in_a_profile_is_named(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureCorrelation.from_dict(data)


def test_the_monitor_finds_a_joint_change_at_a_fixed_evaluation_and_nothing_univariate() -> None:
    """Six features of five shapes; after 2,000 reference and 5,000 quiet events two of them
    become correlated 0.9 with unchanged marginals. The joint test flags the first evaluation
    after the change, whose window holds 250 changed rows of 1,000 (index 249 of the changed
    batch), and every one after it; it names the pair, and no univariate test flags anything."""
    rng = np.random.default_rng(8)
    names = [f"x{i}" for i in range(6)]
    monitor = drift_monitor()
    quiet = feed(monitor, coupled(rng, 7000, 0.0), names)
    assert quiet and not any(e.joint is not None and e.joint.drifted for e in quiet)
    changed = feed(monitor, coupled(rng, 2000, 0.9), names)
    flagged = [e.index for e in changed if e.joint is not None and e.joint.drifted]
    assert flagged[0] == 249
    assert flagged == [e.index for e in changed][: len(flagged)]  # and every evaluation after
    first = next(e for e in changed if e.index == flagged[0])
    assert first.joint is not None and first.joint.features == ["x0", "x5"]
    assert not any(e.drifted for e in changed)


def test_a_sliding_reference_flags_the_change_then_adapts_to_it() -> None:
    rng = np.random.default_rng(9)
    names = [f"x{i}" for i in range(6)]
    monitor = drift_monitor(reference="sliding")
    feed(monitor, coupled(rng, 3000, 0.0), names)
    changed = feed(monitor, coupled(rng, 4000, 0.9), names)
    flags = [e.joint is not None and e.joint.drifted for e in changed]
    assert any(flags[:8]) and not any(flags[-4:])  # both windows changed: nothing to see


def test_without_joint_alpha_no_joint_test_runs() -> None:
    rng = np.random.default_rng(10)
    names = [f"x{i}" for i in range(6)]
    monitor = drift_monitor(joint_alpha=None)
    feed(monitor, coupled(rng, 2000, 0.0), names)
    evaluations = feed(monitor, coupled(rng, 1000, 0.9), names)
    assert evaluations and all(e.joint is None for e in evaluations)


def test_the_joint_alert_names_no_feature_and_its_incident_lists_the_pair() -> None:
    """Through a model's monitor at the default settings: the joint alert is a data_drift
    alert of detector spearman_correlation without a feature, valid against the alert schema,
    and the incident it opens lists the two features."""
    rng = np.random.default_rng(11)
    names = [f"x{i}" for i in range(6)]
    values = np.vstack([coupled(rng, 10_000, 0.0), coupled(rng, 2000, 0.9)])
    events = [
        Prediction(
            str(i),
            "m",
            "v1",
            i * 100,
            dict(zip(names, row.tolist(), strict=True)),
            1,
            None,
            None,
            Source("predictions", 0, i),
        )
        for i, row in enumerate(values)
    ]
    monitor = ModelMonitor("m", MonitorSettings())
    out = monitor.observe_predictions(events)
    alerts = [a for a in out if a["kind"] == "data_drift"]
    assert [(a["detector"], a["status"]) for a in alerts] == [("spearman_correlation", "firing")]
    alert = alerts[0]
    assert "feature" not in alert and alert["evidence"]["features"] == ["x0", "x5"]
    assert alert["evidence"]["pairs"][0]["features"] == ["x0", "x5"]
    assert alert["threshold"] == pytest.approx(1e-6 / 15)  # 15 pairs of 6 features
    ALERT_SCHEMA.validate(alert)
    opened = [e for e in out if e["kind"] == "incident"]
    assert [e["status"] for e in opened] == ["opened"]
    INCIDENT_SCHEMA.validate(opened[0])
    assert [f["feature"] for f in opened[0]["features"]] == ["x0", "x5"]
