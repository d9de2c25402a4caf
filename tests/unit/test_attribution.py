"""Why did the KPI fall: a KPI or concept-drift alert, and its incident, name the drifted feature,
the degraded segment and the score range where the errors concentrate, from what the monitors
already hold."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.batch import LabeledBatch, PredictionBatch
from driftline.detectors.events import Labeled, Prediction, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.settings import MonitorSettings
from tests.schemas import validate_output

SMALL = {
    "segments": ["region"],
    "data_drift": {"reference_size": 1000, "window_size": 500, "every": 100},
    "prediction_drift": {"enabled": False},
    "estimated_performance": {"enabled": False},
    "kpis": {"reference_size": 1000, "size": 500, "every": 50},
}


def stream(n: int, change_at: int, seed: int = 1) -> tuple[PredictionBatch, LabeledBatch]:
    """Four regions; from ``change_at`` feature x0's mean moves by 2 standard deviations and
    region r0's predictions go wrong half the time, confidently (score 0.9-1.0 for the class
    predicted), so the model's accuracy falls by 12 points."""
    rng = np.random.default_rng(seed)
    after = np.arange(n) >= change_at
    x0 = rng.normal(0.0, 1.0, n) + 2.0 * after
    x1 = rng.normal(5.0, 2.0, n)
    region = rng.integers(0, 4, n)
    label = rng.random(n) < 0.4
    confident_miss = after & (region == 0) & (rng.random(n) < 0.5)
    wrong = (rng.random(n) < 0.08) | confident_miss
    predicted = np.where(wrong, ~label, label)
    confidence = np.where(confident_miss, rng.uniform(0.9, 1.0, n), rng.uniform(0.55, 1.0, n))
    score = np.where(predicted, confidence, 1.0 - confidence)
    predictions, labeled = [], []
    for i in range(n):
        segment = {"region": f"r{region[i]}"}
        predictions.append(
            Prediction(
                str(i),
                "m",
                "v1",
                i * 100,
                {"x0": float(x0[i]), "x1": float(x1[i])},
                int(predicted[i]),
                float(score[i]),
                segment,
                Source("predictions", 0, i),
            )
        )
        labeled.append(
            Labeled(
                str(i),
                "m",
                "v1",
                int(predicted[i]),
                float(score[i]),
                int(label[i]),
                i * 100,
                i * 100 + 500,
                Source("outcomes", 0, i),
                segment,
            )
        )
    return PredictionBatch.from_events(predictions), LabeledBatch.from_events(labeled)


def test_a_kpi_alert_names_the_drifted_feature_the_segment_and_the_score_range() -> None:
    predictions, labeled = stream(8000, change_at=4000)
    monitor = ModelMonitor("m", MonitorSettings.model_validate(SMALL))
    out: list[dict[str, Any]] = []
    for start in range(0, 8000, 250):
        out += monitor.observe(
            predictions.take(start, start + 250), labeled.take(start, start + 250)
        )
    for event in out:
        validate_output(event)
    kpi = [
        a
        for a in out
        if a["kind"] == "kpi_threshold" and a["status"] == "firing" and "segment" not in a
    ]
    assert kpi, "the model's accuracy fell 12 points: its KPI alert fires"
    attribution = kpi[0]["evidence"]["attribution"]
    assert attribution["features"][0]["feature"] == "x0"
    assert "x1" not in {f["feature"] for f in attribution["features"]}
    assert attribution["segments"][0]["segment"] == {"region": "r0"}
    assert {tuple(s["segment"].items()) for s in attribution["segments"]} == {(("region", "r0"),)}
    top = attribution["scores"][0]
    assert top["score_range"] == [0.9, 1.0] and top["error_rate"] > 3 * top["reference_error_rate"]
    assert top["share_of_excess"] > 0.5
    # The incident carries the attribution of its latest KPI or concept-drift alert.
    incidents = [e for e in out if e["kind"] == "incident"]
    assert incidents[-1]["attribution"]["features"][0]["feature"] == "x0"


def test_an_alert_without_an_explanation_says_so_with_empty_lists() -> None:
    """Accuracy falls everywhere alike, no feature moves, no score range stands out: the
    attribution is there, with nothing in it but what it found."""
    rng = np.random.default_rng(2)
    n = 6000
    events = [
        Labeled(
            str(i),
            "m",
            "v1",
            int(i % 2),
            None,
            int(i % 2) if rng.random() < (0.9 if i < 3000 else 0.6) else 1 - i % 2,
            i * 100,
            i * 100 + 500,
            Source("outcomes", 0, i),
        )
        for i in range(n)
    ]
    monitor = ModelMonitor("m", MonitorSettings.model_validate(SMALL))
    out = monitor.observe_labeled(events)
    fired = [a for a in out if a["kind"] in ("kpi_threshold", "concept_drift")]
    fired = [a for a in fired if a["status"] == "firing"]
    assert fired
    for alert in fired:
        attribution = alert["evidence"]["attribution"]
        assert attribution["features"] == [] and attribution["segments"] == []
        assert "scores" not in attribution  # no score to bin
