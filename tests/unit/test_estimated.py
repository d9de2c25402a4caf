"""Estimated performance (CBPE): the calibrator is scipy's isotonic regression, the expected
metrics are the expectations they claim (brute force), the estimate tracks the realized accuracy
within its stated band, and the alert fires at a fixed evaluation of a seeded stream, never on a
stationary one; a labelled training file calibrates the scores through ``driftline profile``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from scipy.optimize import isotonic_regression

from driftline.detectors.batch import LabeledBatch, PredictionBatch
from driftline.detectors.estimated import (
    EstimateCheck,
    IsotonicCalibrator,
    PerformanceEstimator,
    expected_metrics,
)
from driftline.detectors.events import Labeled, Prediction, Source
from driftline.detectors.generation import Generation
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings
from driftline.service.cli import main
from driftline.service.synthetic import ModelStream, generate
from tests.schemas import ALERT_SCHEMA, KPI_SCHEMA

# -- calibration -------------------------------------------------------------------------------


def test_the_calibrator_is_scipys_isotonic_regression_with_ties_pooled() -> None:
    rng = np.random.default_rng(1)
    score = np.round(rng.random(3000), 2)  # ties: 101 distinct scores
    label = rng.random(3000) < score**2
    calibrator = IsotonicCalibrator.fit(score, label)
    unique, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=label) / counts
    expected = isotonic_regression(means, weights=counts).x
    np.testing.assert_allclose(calibrator.predict(unique), expected, atol=1e-12)
    # Between and beyond the fitted scores: linear between them, clipped outside.
    between = (unique[:-1] + unique[1:]) / 2
    np.testing.assert_allclose(
        calibrator.predict(between), np.interp(between, unique, expected), atol=1e-12
    )
    assert calibrator.predict(np.array([-1.0, 2.0])).tolist() == [expected[0], expected[-1]]
    assert np.isnan(calibrator.predict(np.array([np.nan]))[0])
    assert calibrator.scores.size < unique.size  # kept as knots, not every score
    assert calibrator.n == 3000


def test_a_calibrator_round_trips_through_a_profile_and_pickle() -> None:
    rng = np.random.default_rng(2)
    score = rng.random(500)
    calibrator = IsotonicCalibrator.fit(score, rng.random(500) < score, positive_label="yes")
    again = IsotonicCalibrator.from_dict(orjson.loads(orjson.dumps(calibrator.to_dict())))
    assert again.scores.tolist() == calibrator.scores.tolist()
    assert again.probabilities.tolist() == calibrator.probabilities.tolist()
    assert (again.n, again.positive_label) == (500, "yes")
    clone = pickle.loads(pickle.dumps(calibrator))
    assert clone.predict(score).tolist() == calibrator.predict(score).tolist()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "platt"}, "calibration method 'platt'"),
        ({"method": "isotonic", "scores": [0.1, 0.2], "n": 5}, "calibration"),
        (
            {"method": "isotonic", "scores": [0.2, 0.1], "probabilities": [0, 1], "n": 5},
            "non-decreasing",
        ),
        (
            {"method": "isotonic", "scores": [0.1, 0.2], "probabilities": [0, 1.5], "n": 5},
            r"\[0, 1\]",
        ),
    ],
)
def test_a_malformed_calibration_is_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IsotonicCalibrator.from_dict(data)


# -- expected metrics -----------------------------------------------------------------------------


def test_expected_metrics_are_the_expectations_they_claim() -> None:
    """Accuracy is the mean chance of a right prediction; precision, recall and F1 are ratios of
    expected counts; ROC AUC is the expected share of correctly ordered (positive, negative)
    pairs of distinct events, ties one half: all checked by brute force."""
    rng = np.random.default_rng(3)
    p = np.round(rng.random(300), 1)  # ties
    predicted = rng.random(300) < 0.5
    m = expected_metrics(p, predicted)
    right = np.where(predicted, p, 1 - p)
    assert m["accuracy"] == pytest.approx(right.mean())
    tp, fp, fn = (p * predicted).sum(), ((1 - p) * predicted).sum(), (p * ~predicted).sum()
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    order = np.sign(p[:, None] - p[None, :]) / 2 + 0.5  # 1 above, 1/2 tied, 0 below
    weight = p[:, None] * (1 - p)[None, :]
    np.fill_diagonal(weight, 0.0)
    assert m["roc_auc"] == pytest.approx((weight * order).sum() / weight.sum())


def test_expected_metrics_of_nothing_are_undefined() -> None:
    m = expected_metrics(np.empty(0), np.empty(0, dtype=bool))
    assert all(np.isnan(v) for v in m.values())
    one_class = expected_metrics(np.array([0.2, 0.3]), np.array([False, False]))
    assert np.isnan(one_class["precision"]) and one_class["accuracy"] == pytest.approx(0.75)


def test_the_estimate_tracks_the_realized_accuracy_within_its_band() -> None:
    """Labels drawn from calibrated scores: over 400 windows of 1,000 the realized accuracy
    lies within the estimate +- 2.326 realized_se (98 % two-sided) in 98 % +- 2 % of them
    (binomial standard error 0.7 %, so the tolerance allows about 3 of it)."""
    rng = np.random.default_rng(4)
    estimator = PerformanceEstimator(reference_size=1000, window_size=1000, every=1000)
    inside = 0
    beta = rng.beta(2.0, 2.0, 1000)
    estimator.update(beta, beta > 0.5)
    for _ in range(400):
        p = rng.beta(2.0, 2.0, 1000)
        positive = rng.random(1000) < p
        estimate = estimator.update(p, p > 0.5)[0]
        realized = float(((p > 0.5) == positive).mean())
        error = abs(realized - estimate.metrics["accuracy"])
        inside += error <= 2.326 * estimate.realized_se
    assert 0.96 <= inside / 400 <= 1.0


def test_calibration_corrects_over_confident_scores() -> None:
    """Over-confident scores (the chance of a positive is ``0.5 + 0.3 (score - 0.5)``): taken
    as calibrated, the expected accuracy (0.75) is far above the realized one (0.575);
    calibrated on 5,000 labelled reference events it is within 3 standard errors of it."""
    rng = np.random.default_rng(5)

    def stream(n: int) -> tuple[np.ndarray, np.ndarray]:
        score = rng.random(n)
        return score, rng.random(n) < 0.5 + 0.3 * (score - 0.5)

    score, positive = stream(5000)
    calibrator = IsotonicCalibrator.fit(score, positive)
    score, positive = stream(7000)
    window = slice(2000, 7000)
    realized = float(((score[window] > 0.5) == positive[window]).mean())
    errors = []
    for calibrated in (None, calibrator):
        estimator = PerformanceEstimator(2000, window_size=5000, every=5000, calibrator=calibrated)
        estimator.update(score[:2000], score[:2000] > 0.5)
        estimate = estimator.update(score[window], score[window] > 0.5)[-1]
        errors.append(abs(estimate.metrics["accuracy"] - realized))
    # The realized accuracy of 5,000 labels has a standard error of 0.007.
    assert errors[0] > 0.15 and errors[1] < 0.021


def test_the_estimator_holds_a_fixed_size_and_round_trips() -> None:
    estimator = PerformanceEstimator(reference_size=100, window_size=50, every=10, min_samples=10)
    assert estimator.nbytes == 13 * 50
    estimator.update(np.full(30, 0.8), np.ones(30, dtype=bool))
    assert estimator.nbytes == 13 * 50 + 5 * 100  # the reference fills
    estimator.update(np.full(200, 0.8), np.ones(200, dtype=bool))
    assert estimator.nbytes == 13 * 50 and estimator.reference is not None
    clone = pickle.loads(pickle.dumps(estimator))
    more = np.linspace(0.5, 1.0, 40)
    assert clone.update(more, more > 0.7) == estimator.update(more, more > 0.7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reference_size": 5}, "reference_size"),
        ({"window_size": 0}, "window_size"),
        ({"every": 0}, "every"),
        ({"min_samples": True}, "min_samples"),
        ({"calibrator": "isotonic"}, "calibrator"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PerformanceEstimator(**kwargs)


def test_the_check_against_labels_keeps_the_last_window() -> None:
    check = EstimateCheck(size=4)
    check.update(np.array([0.5, 0.5, np.nan, 0.9]), np.array([True, False, True, True]))
    check.update(np.array([0.9, 0.9, 0.9]), np.array([True, True, False]))
    assert check.summary() == {
        "n": 4,
        "estimated_accuracy": 0.9,
        "realized_accuracy": 0.75,
        "error": 0.15,
    }


# -- as a signal of the model -------------------------------------------------------------------


def scored(n: int, beta: float, seed: int, start: int = 0) -> PredictionBatch:
    """Predictions of a model whose confidence is 0.5 + 0.5 * Beta(beta, 1), 30 % positive."""
    rng = np.random.default_rng(seed)
    confidence = 0.5 + 0.5 * rng.beta(beta, 1.0, n)
    positive = rng.random(n) < 0.3
    score = np.where(positive, confidence, 1.0 - confidence)
    events = [
        Prediction(
            str(start + i),
            "m",
            "v1",
            (start + i) * 100,
            {"x": float(i % 7)},
            int(positive[i]),
            float(score[i]),
            None,
            Source("predictions", 0, start + i),
        )
        for i in range(n)
    ]
    return PredictionBatch.from_events(events)


def only_estimated() -> MonitorSettings:
    return MonitorSettings.model_validate(
        {
            "data_drift": {"enabled": False},
            "prediction_drift": {"enabled": False},
            "data_quality": {"enabled": False},
        }
    )


def test_a_confidence_fall_fires_at_a_fixed_evaluation() -> None:
    """Default settings: 5,000 reference and 5,000 quiet predictions, then the expected
    accuracy falls from 0.83 to 0.78. The warning fires at offset 10,999, the fourth evaluation
    after the change (two in a row must breach), with the reference value, a band around the
    estimate and the calibration stated; no critical."""
    monitor = ModelMonitor("m", only_estimated())
    quiet = monitor.observe_predictions(scored(10_000, 2.0, seed=6))
    assert quiet == []
    out = monitor.observe_predictions(scored(3000, 1.3, seed=7, start=10_000))
    alerts = [a for a in out if a["kind"] != "incident"]
    assert [(a["status"], a["severity"]) for a in alerts] == [("firing", "warning")]
    alert = alerts[0]
    assert alert["source"]["offset"] == 10_999
    assert (alert["kind"], alert["detector"], alert["metric"]) == (
        "estimated_performance",
        "cbpe",
        "accuracy",
    )
    assert alert["reference"]["value"] == pytest.approx(0.833, abs=0.005)
    assert alert["threshold"] == pytest.approx(alert["reference"]["value"] - 0.03)
    low, high = alert["evidence"]["band"]
    assert low < alert["value"] < high and high - low < 0.06
    assert alert["evidence"]["calibration"]["method"] == "assumed"
    ALERT_SCHEMA.validate(alert)
    assert set(alert["evidence"]["estimated"]) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
    }


def test_no_estimated_performance_alert_on_a_stationary_model() -> None:
    """200,000 stationary predictions (800 evaluations): none fires. At the defaults a
    stationary window must sit about 9 standard errors below the reference to warn."""
    monitor = ModelMonitor("m", only_estimated())
    for k in range(20):
        assert (
            monitor.observe_predictions(scored(10_000, 2.0, seed=100 + k, start=k * 10_000)) == []
        )


def labelled_from(batch: PredictionBatch, seed: int) -> LabeledBatch:
    """Outcomes drawn from the scores, as if they were calibrated."""
    rng = np.random.default_rng(seed)
    scores = np.array(batch.scores, dtype=float)
    labels = (rng.random(batch.n) < scores).astype(int)
    events = [
        Labeled(
            str(i),
            "m",
            "v1",
            batch.predictions[i],
            batch.scores[i],
            int(labels[i]),
            int(batch.timestamps[i]),
            int(batch.timestamps[i]) + 500,
            Source("outcomes", 0, i),
        )
        for i in range(batch.n)
    ]
    return LabeledBatch.from_events(events)


def test_the_snapshot_reports_the_estimate_and_its_error_against_labels() -> None:
    generation = Generation("m", only_estimated())
    predictions = scored(8000, 2.0, seed=8)
    generation.observe_predictions(predictions)
    generation.observe_labeled(labelled_from(predictions, seed=9))
    estimated = generation.kpi_snapshot()["estimated"]
    assert estimated["calibration"]["method"] == "assumed"
    assert estimated["window"] == 1000
    assert estimated["kpis"]["accuracy"] == pytest.approx(0.833, abs=0.01)
    check = estimated["against_labels"]
    assert check["n"] == 1000  # kpis.size
    assert abs(check["error"]) < 0.035  # 3 standard errors of 1,000 labels
    assert check["realized_accuracy"] == generation.kpi_snapshot()["kpis"]["accuracy"]
    KPI_SCHEMA.validate(generation.kpi_snapshot())


# -- calibrated by a labelled training file ------------------------------------------------------


def test_a_labelled_training_file_calibrates_the_estimate(tmp_path: Path) -> None:
    """``driftline profile`` fits the calibration on the rows that carry a label; a replay with
    that profile states it on its estimated-performance alerts; a profile calibrated for
    another positive class is not used, and the alert says why."""
    training = tmp_path / "training.jsonl"
    with training.open("wb") as out:
        for prediction, outcome in generate(ModelStream("m", seed=3), 4000):
            out.write(orjson.dumps({**prediction, "label": outcome["label"]}) + b"\n")
    profile_path = tmp_path / "profile.json"
    assert main(["profile", "--input", str(training), "--output", str(profile_path)]) == 0
    profile = ModelProfile.from_dict(orjson.loads(profile_path.read_bytes()))
    assert profile.calibration is not None
    assert (profile.calibration.n, profile.calibration.positive_label) == (4000, 1)

    settings = only_estimated()
    generation = Generation("m", settings, profile)
    generation.observe_predictions(scored(6000, 2.0, seed=10))
    assert generation.kpi_snapshot()["estimated"]["calibration"] == {
        "method": "isotonic",
        "labelled_events": 4000,
    }
    other = MonitorSettings.model_validate({**settings.model_dump(), "positive_label": 0})
    note = Generation("m", other, profile).kpi_snapshot()["estimated"]["calibration"]
    assert note["method"] == "assumed" and "positive label 1, not 0" in note["note"]

    # Through a replay: the profile, named by data drift, serves estimated performance too.
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"defaults": {"data_drift": {"reference": "profile", "profile": str(profile_path)}}}
        )
    )
    records, out = tmp_path / "records.jsonl", tmp_path / "alerts.jsonl"
    with records.open("wb") as f:
        for prediction, _ in generate(ModelStream("m", seed=4), 7000):
            if int(prediction["event_id"].rsplit("-", 1)[1]) >= 6000:
                prediction["score"] = 0.5 + (prediction["score"] - 0.5) * 0.3  # unsure
            f.write(orjson.dumps({"topic": "predictions", "key": "m", "value": prediction}) + b"\n")
    assert (
        main(["replay", "--input", str(records), "--output", str(out), "--config", str(config)])
        == 0
    )
    estimated = [
        a
        for a in map(orjson.loads, out.read_bytes().splitlines())
        if a["kind"] == "estimated_performance"
    ]
    assert estimated and estimated[0]["status"] == "firing"
    assert estimated[0]["evidence"]["calibration"] == {
        "method": "isotonic",
        "labelled_events": 4000,
    }


def test_profile_refuses_a_label_that_is_not_json(tmp_path: Path) -> None:
    training = tmp_path / "training.jsonl"
    training.write_bytes(b'{"features": {"x": 1.0}, "score": 0.5, "label": 1}\n')
    with pytest.raises(SystemExit):
        main(
            [
                "profile",
                "--input",
                str(training),
                "--output",
                str(tmp_path / "p.json"),
                "--positive-label",
                "[1]",
            ]
        )


def test_a_regression_model_is_told_that_no_estimate_is_available() -> None:
    """Direct loss estimation is not implemented: once the labels show a regression model, its
    snapshot says that no estimate is available and why, and it raises no estimate."""
    settings = only_estimated()
    generation = Generation("m", settings)
    events = [
        Labeled(str(i), "m", "v1", 1.5 * i + 0.25, None, 1.4 * i + 0.5, i, i + 5, Source("o", 0, i))
        for i in range(300)
    ]
    generation.observe_labeled(LabeledBatch.from_events(events))
    snapshot = generation.kpi_snapshot()
    assert snapshot["task"] == "regression"
    assert snapshot["estimated"]["available"] is False
    assert "regression" in snapshot["estimated"]["reason"]
    KPI_SCHEMA.validate(snapshot)
    configured = Generation("m", settings.model_copy(update={"task": "regression"}))
    assert configured.kpi_snapshot()["estimated"]["available"] is False
    assert all(
        type(s).__name__ != "EstimatedPerformanceSignal" for s in configured._prediction_signals
    )
