"""Per-segment monitoring: one region's degradation is named on its alerts and no other region's,
a stationary model with 50 segments raises nothing, values beyond the limit are pooled, and
segment alerts follow the alert contract (own identity, incidents, superseded on a new version).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.detectors.alerts import alert_identity
from driftline.detectors.batch import LabeledBatch, Sources
from driftline.detectors.events import Labeled, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.settings import MonitorSettings
from driftline.detectors.signals.segments import OTHER, segment_settings
from tests.schemas import validate_output

LABEL_SIDE_ONLY = {
    "data_drift": {"enabled": False},
    "prediction_drift": {"enabled": False},
    "data_quality": {"enabled": False},
    "estimated_performance": {"enabled": False},
}


def settings(**fields: Any) -> MonitorSettings:
    return MonitorSettings.model_validate({**LABEL_SIDE_ONLY, "segments": ["region"], **fields})


def labelled(
    n: int,
    seed: int,
    *,
    start: int = 0,
    shares: tuple[float, ...] = (0.1, 0.15, 0.15, 0.15, 0.15, 0.1, 0.1, 0.1),
    accuracy: float = 0.9,
    r0_accuracy: float | None = None,
    version: str = "v1",
) -> LabeledBatch:
    """Labelled events of a binary classifier; region r0 (first share) may have its own
    accuracy."""
    rng = np.random.default_rng([seed, start])
    codes = rng.choice(len(shares), size=n, p=np.array(shares))
    label = rng.random(n) < 0.3
    acc = np.where(codes == 0, accuracy if r0_accuracy is None else r0_accuracy, accuracy)
    correct = rng.random(n) < acc
    predicted = np.where(correct, label, ~label)
    events = [
        Labeled(
            str(start + i),
            "m",
            version,
            int(predicted[i]),
            None,
            int(label[i]),
            (start + i) * 100,
            (start + i) * 100 + 500,
            Source("outcomes", 0, start + i),
            {"region": f"r{codes[i]}"},
        )
        for i in range(n)
    ]
    return LabeledBatch.from_events(events)


def alerts_of(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in out if a["kind"] != "incident"]


def test_one_region_of_eight_is_named_and_no_other() -> None:
    """30,000 stationary labelled events over 8 regions, then r0 (10 % of them) goes from an
    error rate of 10 % to 37 % (the model's moves 2.7 points). Its concept-drift alert fires at
    offset 31,570, 1,570 events after the change; every alert about a segment names r0; none
    fires before the change."""
    monitor = ModelMonitor("m", settings())
    before = []
    for k in range(3):
        before += monitor.observe_labeled(labelled(10_000, seed=1, start=k * 10_000))
    assert before == []
    after = alerts_of(monitor.observe_labeled(labelled(5000, 1, start=30_000, r0_accuracy=0.63)))
    named = [a for a in after if "segment" in a]
    assert named and {tuple(a["segment"].items()) for a in named} == {(("region", "r0"),)}
    first = named[0]
    assert (first["kind"], first["detector"], first["status"]) == (
        "concept_drift",
        "adwin",
        "firing",
    )
    assert first["source"]["offset"] == 31_570
    for alert in after:
        validate_output(alert)
    snapshot = monitor.kpi_snapshot()["segments"]
    assert sorted(snapshot["values"]["region"]) == [f"r{k}" for k in range(8)]
    assert snapshot["pooled_events"] == 0


def test_no_alert_on_a_stationary_model_with_fifty_segments() -> None:
    """100,000 stationary labelled events over 50 regions of 2 % each, at accuracy 0.8: each
    region is judged on 2,000 events, its own KPI reference is complete, and nothing fires
    (each region's false-alarm rates are the model's divided by 51)."""
    monitor = ModelMonitor("m", settings())
    shares = tuple([0.02] * 50)
    for k in range(10):
        out = monitor.observe_labeled(
            labelled(10_000, seed=2, start=k * 10_000, shares=shares, accuracy=0.8)
        )
        assert out == []
    values = monitor.kpi_snapshot()["segments"]["values"]["region"]
    assert sorted(values) == sorted(f"r{k}" for k in range(50))


def test_values_beyond_the_limit_are_pooled_as_other() -> None:
    monitor = ModelMonitor("m", settings(max_segments_per_key=3))
    batch = labelled(1000, seed=3, shares=(0.2,) * 5)
    monitor.observe_labeled(batch)
    snapshot = monitor.kpi_snapshot()["segments"]
    assert batch.segments is not None
    first_three = list(dict.fromkeys(s["region"] for s in batch.segments if s))[:3]
    assert snapshot["values"] == {"region": [*first_three, OTHER]}
    expected = sum(1 for s in batch.segments if s and s["region"] not in first_three)
    assert snapshot["pooled_events"] == expected > 0


def test_segment_alerts_have_their_own_identity_and_are_superseded_with_their_segment() -> None:
    monitor = ModelMonitor("m", settings())
    monitor.observe_labeled(labelled(30_000, seed=4))
    out = monitor.observe_labeled(labelled(5000, seed=4, start=30_000, r0_accuracy=0.5))
    firing = [a for a in alerts_of(out) if "segment" in a and a["status"] == "firing"]
    assert firing
    identity = alert_identity(firing[0])
    assert identity[2].endswith("@region=r0")
    opened = [e for e in out if e["kind"] == "incident" and e["status"] == "opened"]
    assert opened and {"region": "r0"} in opened[0]["segments"]
    # A new version supersedes every firing alert, the segment's included, with its segment.
    closed = monitor.observe_labeled(labelled(10, seed=5, start=35_000, version="v2"))
    superseded = [a for a in alerts_of(closed) if a.get("resolution") == "superseded"]
    assert {alert_identity(a)[2] for a in superseded} >= {identity[2]}
    assert all(a["segment"] == {"region": "r0"} for a in superseded if "@" in alert_identity(a)[2])
    for event in out + closed:
        validate_output(event)


def test_a_segment_is_judged_with_the_false_alarm_rates_divided_by_the_segments() -> None:
    base = settings(max_segments_per_key=9)
    judged = segment_settings(base)
    assert judged.concept_drift.params["delta"] == pytest.approx(1e-4 / 10)
    confidences = [t.confidence for t in judged.kpis.thresholds]
    assert confidences == pytest.approx([1 - 0.01 / 10] * len(base.kpis.thresholds))
    other = segment_settings(
        settings(segments=["region", "tier"], concept_drift={"params": {"delta": 1e-3}})
    )
    assert other.concept_drift.params["delta"] == pytest.approx(1e-3 / 102)


def test_selecting_rows_of_a_batch_keeps_their_sources_and_segments() -> None:
    batch = labelled(10, seed=6)
    mixed = LabeledBatch(
        batch.versions,
        batch.predictions,
        batch.labels,
        batch.scores,
        batch.predicted_at,
        batch.labeled_at,
        Sources(["a", "b"] * 5, list(range(10)), batch.sources.offsets),
        segments=batch.segments,
    )
    rows = [1, 4, 7]
    for source_batch in (batch, mixed):
        picked = source_batch.select(rows)
        assert [picked.sources.at(i) for i in range(3)] == [
            source_batch.sources.at(i) for i in rows
        ]
        assert picked.segments == [source_batch.segments[i] for i in rows]  # type: ignore[index]
        assert picked.labeled_at.tolist() == source_batch.labeled_at[rows].tolist()


@pytest.mark.parametrize("segments", [["region", "region"], [""]])
def test_segment_keys_must_be_distinct_and_named(segments: list[str]) -> None:
    with pytest.raises(ValueError, match="segments must be distinct non-empty keys"):
        MonitorSettings.model_validate({"segments": segments})
