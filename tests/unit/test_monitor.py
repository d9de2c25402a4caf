"""ModelMonitor: the composed signals of one model, fed batches, alerting with evidence."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from driftline.detectors.events import Labeled, Prediction, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.settings import MonitorSettings
from driftline.service.synthetic import ModelStream, as_events, generate
from tests.schemas import validate_output


def events(spec: ModelStream, n: int, offset: int = 0) -> tuple[list[Prediction], list[Labeled]]:
    return as_events(generate(spec, n, offset), offset)


def feed(
    monitor: ModelMonitor, spec: ModelStream, n: int, batch: int = 500, offset: int = 0
) -> list[dict[str, Any]]:
    predictions, labeled = events(spec, n, offset)
    alerts: list[dict[str, Any]] = []
    for start in range(0, n, batch):
        alerts += monitor.observe_predictions(predictions[start : start + batch])
        alerts += monitor.observe_labeled(labeled[start : start + batch])
    return alerts


def test_healthy_model_raises_no_alert() -> None:
    """20,000 stationary events of a healthy model: no alert of any kind (seeded)."""
    monitor = ModelMonitor("m", MonitorSettings())
    assert feed(monitor, ModelStream("m", seed=3), 20_000) == []
    assert monitor.n_predictions == monitor.n_labeled == 20_000
    snapshot = monitor.kpi_snapshot()
    assert abs(snapshot["kpis"]["accuracy"] - 0.92) < 0.03
    assert snapshot["reference"]["accuracy"] > 0.9


def test_accuracy_drop_fires_with_evidence_and_resolves_on_recovery() -> None:
    spec = ModelStream("m", seed=4, change_at=8000, accuracy_after=0.75)
    monitor = ModelMonitor("m", MonitorSettings())
    alerts = feed(monitor, spec, 10_000)
    kpi = [a for a in alerts if a["kind"] == "kpi_threshold"]
    assert [(a["status"], a["severity"]) for a in kpi] == [
        ("firing", "warning"),
        ("firing", "critical"),
    ]
    for alert in alerts:
        validate_output(alert)
        assert alert["source"]["offset"] >= 8000
    for alert in kpi:
        assert alert["source"]["topic"] == "outcomes"
    critical = kpi[1]
    assert critical["value"] < critical["threshold"] == critical["reference"]["value"] - 0.10
    assert critical["evidence"]["kpis"]["n"] == 1000
    assert ("kpi_threshold", "relative_threshold", "accuracy", "critical") in monitor.firing
    # The model recovers: each firing alert resolves once, none fires again.
    recovered = ModelStream("m", seed=5)
    later = feed(monitor, recovered, 3000, offset=10_000)
    statuses = [(a["severity"], a["status"]) for a in later if a["kind"] == "kpi_threshold"]
    assert sorted(statuses) == [("critical", "resolved"), ("warning", "resolved")]
    assert not any(k[0] == "kpi_threshold" for k in monitor.firing)


def test_feature_shift_is_attributed_to_that_feature() -> None:
    spec = ModelStream("m", seed=6, change_at=6000, numeric_shift={"x2": 1.0})
    monitor = ModelMonitor("m", MonitorSettings())
    alerts = feed(monitor, spec, 9000)
    drift = [a for a in alerts if a["kind"] == "data_drift"]
    assert {a["feature"] for a in drift} == {"x2"}
    evidence = drift[0]["evidence"]
    assert evidence["ranked_features"][0]["feature"] == "x2"
    assert evidence["p_value"] < drift[0]["threshold"]
    assert drift[0]["reference"]["summary"] and evidence["current_summary"]
    validate_output(drift[0])


def test_null_rate_rise_is_a_data_quality_alert() -> None:
    spec = ModelStream("m", seed=7, change_at=6000, null_rate={"c1": 0.3})
    monitor = ModelMonitor("m", MonitorSettings())
    alerts = feed(monitor, spec, 7000)
    quality = [a for a in alerts if a["kind"] == "data_quality"]
    assert quality and {(a["feature"], a["detector"]) for a in quality} == {("c1", "null_rate")}
    assert all(a["value"] > a["threshold"] for a in quality if a["status"] == "firing")


def test_regression_model_alerts_on_rmse() -> None:
    rng = np.random.default_rng(8)
    monitor = ModelMonitor("r", MonitorSettings())
    alerts = []
    for start in range(0, 8000, 500):
        noise = 1.0 if start < 5000 else 2.0
        y = rng.normal(10, 3, 500)
        yhat = y + rng.normal(0, noise, 500)
        labeled = [
            Labeled(
                str(start + i),
                "r",
                None,
                float(yhat[i]),
                None,
                float(y[i]),
                start + i,
                start + i,
                Source("o", 0, start + i),
            )
            for i in range(500)
        ]
        alerts += monitor.observe_labeled(labeled)
    assert monitor.task == "regression"
    rmse = [a for a in alerts if a["kind"] == "kpi_threshold"]
    assert {a["metric"] for a in rmse} == {"rmse"}
    assert all(a["value"] > a["threshold"] for a in rmse)
    assert monitor.kpi_snapshot()["kpis"]["rmse"] > 1.5


def test_pickled_monitor_continues_identically() -> None:
    spec = ModelStream("m", seed=9, change_at=7000, accuracy_after=0.7, numeric_shift={"x0": 1})
    monitor = ModelMonitor("m", MonitorSettings())
    feed(monitor, spec, 6000)
    clone = pickle.loads(pickle.dumps(monitor))
    original = feed(monitor, spec, 4000, offset=6000)
    restored = feed(clone, spec, 4000, offset=6000)
    assert original and original == restored


def test_batch_boundaries_do_not_change_decisions() -> None:
    spec = ModelStream("m", seed=10, change_at=6000, accuracy_after=0.72, numeric_shift={"x1": 1})
    small = feed(ModelMonitor("m", MonitorSettings()), spec, 9000, batch=137)
    large = feed(ModelMonitor("m", MonitorSettings()), spec, 9000, batch=3000)

    def key(a: dict[str, Any]) -> tuple[Any, ...]:
        return (
            a["kind"],
            a["status"],
            a["severity"],
            a.get("feature"),
            a.get("metric"),
            a["source"]["offset"],
            a.get("alert_id") or a["event_id"],
        )

    def alerts(out: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(key(a) for a in out if a["kind"] != "incident")

    # Alerts are the same, whatever the batching. Which alert opens an incident can depend on
    # how predictions and outcomes of one batch interleave (event-time ordering across the two
    # topics is not done yet), so incident events are compared for a repeated batching only.
    assert small and alerts(small) == alerts(large)
    again = feed(ModelMonitor("m", MonitorSettings()), spec, 9000, batch=137)
    assert again == small


def resolve_offset(resolve_evaluations: int) -> tuple[list[str], list[dict[str, Any]]]:
    drift = {"resolve_evaluations": resolve_evaluations}
    monitor = ModelMonitor("m", MonitorSettings.model_validate({"data_drift": drift}))
    feed(monitor, ModelStream("m", seed=12), 6000)
    shifted = feed(
        monitor,
        ModelStream("m", seed=13, change_at=0, numeric_shift={"x0": 0.5}),
        12_000,
        offset=6000,
    )
    back = feed(monitor, ModelStream("m", seed=14), 6000, offset=18_000)
    statuses = [a["status"] for a in shifted if a["kind"] == "data_drift"]
    return statuses, [a for a in back if a["kind"] == "data_drift"]


def test_persistent_drift_fires_once_and_resolves_after_clean_evaluations() -> None:
    """A shift that lasts 12,000 events is one firing alert, not a flapping series; when the
    feature returns, it resolves only after `resolve_evaluations` clean evaluations in a row."""
    statuses, back = resolve_offset(4)
    assert statuses == ["firing"]
    assert [(a["feature"], a["status"]) for a in back] == [("x0", "resolved")]
    _, eager = resolve_offset(1)
    # At least three more consistent evaluations, 250 events apart, than with
    # resolve_evaluations=1 (more when an inconsistent one breaks the run).
    later = back[0]["source"]["offset"] - eager[0]["source"]["offset"]
    assert later >= 3 * 250 and later % 250 == 0
