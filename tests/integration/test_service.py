"""``driftline run`` against the real broker: alerts, no false alarms, restarts, clean shutdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.service.synthetic import ModelStream, generate
from tests.schemas import KPI_SCHEMA, validate_output

from .conftest import (
    ServiceProcess,
    Topics,
    essentials,
    produce_events,
    read_all,
    read_until,
    replay_alerts,
    scrape,
    wait_for,
    wait_processed,
)

DEGRADED = ModelStream("credit", seed=11, change_at=3000, accuracy_after=0.70)
HEALTHY = ModelStream("fraud", seed=12)


def published(
    bootstrap: str,
    topics: Topics,
    service: ServiceProcess,
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    done: Callable[[list[dict[str, Any]]], bool],
) -> list[dict[str, Any]]:
    """Produce the events, run the service through them, and read what it published once
    ``done`` holds for it (each event checked against its schema)."""
    produce_events(bootstrap, topics, pairs)
    service.start()
    wait_processed(bootstrap, topics)

    def values(messages: list[Any]) -> list[dict[str, Any]]:
        return [orjson.loads(m.value()) for m in messages]

    events = values(read_until(bootstrap, topics.alerts, lambda found: done(values(found))))
    for event in events:
        validate_output(event)
    return events


def test_degraded_model_alerts_healthy_model_does_not(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    pairs = [*generate(DEGRADED, 6000), *generate(HEALTHY, 6000)]
    # Kafka and replay decide the same: same alerts, same values (ids differ by source offset).
    replayed = sorted(map(essentials, (a for a in replay_alerts(pairs) if a["kind"] != "incident")))

    def decided(messages: list[Any]) -> list[tuple[Any, ...]]:
        found = (orjson.loads(m.value()) for m in messages)
        return sorted(essentials(a) for a in found if a["kind"] != "incident")

    produce_events(bootstrap, topics, pairs)
    service.start()
    wait_processed(bootstrap, topics)
    messages = read_until(bootstrap, topics.alerts, lambda found: decided(found) == replayed)
    alerts = [orjson.loads(m.value()) for m in messages]
    for message, alert in zip(messages, alerts, strict=True):
        validate_output(alert)
        assert message.key() == alert["model_id"].encode()
    assert all(a["model_id"] == "credit" for a in alerts), "the healthy model must not alert"
    alerts = [a for a in alerts if a["kind"] != "incident"]
    kpi = [a for a in alerts if a["kind"] == "kpi_threshold" and a["status"] == "firing"]
    assert {(a["metric"], a["severity"]) for a in kpi} == {
        ("accuracy", "warning"),
        ("accuracy", "critical"),
    }
    for alert in kpi:
        # Fired at the first evaluation whose confidence bound is below the level: the bound is
        # at most one cadence step past it, the value further by the sampling error.
        bound = alert["evidence"]["bound"]
        assert alert["threshold"] - 0.03 < bound < alert["threshold"]
        assert alert["value"] < bound
        assert alert["reference"]["value"] > 0.9
        assert alert["source"]["topic"] == topics.outcomes
    assert sorted(map(essentials, alerts)) == replayed
    assert service.stop() == 0


def identity(alert: dict[str, Any]) -> tuple[str, ...]:
    subject = alert.get("feature") or alert.get("metric") or ""
    return (alert["kind"], alert["detector"], subject, alert["severity"])


def test_a_degradation_is_one_incident_closed_as_superseded_by_a_new_version(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    """credit v1 degrades for good; then v2, healthy and with its own feature distribution,
    takes over. Subscribers see one incident: opened once, exactly one firing per alert
    identity, no resolve while v1 is degraded, and every v1 alert closed as superseded at v2's
    first prediction. v2 is never judged against v1's reference: it raises nothing."""
    v1 = ModelStream("credit", seed=41, change_at=3000, accuracy_after=0.70)
    v2 = replace(
        ModelStream("credit", seed=42, accuracy=0.95, change_at=0, numeric_shift={"x0": 1.0}),
        model_version="v2",
    )
    pairs = [*generate(v1, 7000), *generate(v2, 5000, offset=7000)]

    def closed(found: list[dict[str, Any]]) -> bool:
        return any(e["kind"] == "incident" and e["status"] == "closed" for e in found)

    events = published(bootstrap, topics, service, pairs, closed)
    incidents = [e for e in events if e["kind"] == "incident"]
    alerts = [e for e in events if e["kind"] != "incident"]
    assert [e["status"] for e in incidents if e["status"] != "escalated"] == ["opened", "closed"]
    assert incidents[-1]["resolution"] == "superseded"
    assert {e["incident_id"] for e in events} == {incidents[0]["incident_id"]}
    fired = Counter(identity(a) for a in alerts if a["status"] == "firing")
    assert fired and set(fired.values()) == {1}
    assert {a["model_version"] for a in alerts} == {"v1"}
    resolved = [a for a in alerts if a["status"] == "resolved"]
    assert all(a["resolution"] == "superseded" for a in resolved)
    assert Counter(identity(a) for a in resolved) == fired
    first_v2 = {a["source"]["offset"] for a in resolved}
    assert len(first_v2) == 1 and {a["source"]["topic"] for a in resolved} == {topics.predictions}
    assert service.stop() == 0


def test_restart_resumes_from_committed_offsets(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    first = list(generate(HEALTHY, 1500))
    second = list(generate(HEALTHY, 1000, offset=1500))
    produce_events(bootstrap, topics, first)
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    stopped = service.log_lines()
    assert any(line.get("event") == "stopped" for line in stopped)

    produce_events(bootstrap, topics, second)
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    # The second run read only what came after the committed offsets: nothing twice.
    consumed = [line for line in service.log_lines() if line.get("event") == "stopped"]
    assert consumed and consumed[-1]["consumed"] == 2 * len(second)


def test_kpi_snapshots_are_published(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    produce_events(bootstrap, topics, generate(HEALTHY, 1200))
    service.config = {"processing": {"kpi_interval_s": 0.5}}
    service.start()
    wait_processed(bootstrap, topics)

    def snapshot_with_all_labels() -> dict[str, Any] | None:
        for message in read_all(bootstrap, topics.kpis):
            snapshot = orjson.loads(message.value())
            if snapshot["labeled"] == 1200:
                return snapshot
        return None

    snapshot = wait_for(snapshot_with_all_labels, 30, "a KPI snapshot covering all 1200 labels")
    KPI_SCHEMA.validate(snapshot)
    assert snapshot["model_id"] == "fraud" and snapshot["predictions"] == 1200
    assert abs(snapshot["kpis"]["accuracy"] - 0.92) < 0.03
    assert snapshot["kpis"]["label_coverage"] == 1.0
    assert service.stop() == 0


def test_missing_input_topic_is_a_clear_error(
    bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    topics.predictions = topics.prefix + ".does-not-exist"
    proc = ServiceProcess(bootstrap, topics, tmp_path).start()
    assert proc.process is not None
    code = proc.process.wait(timeout=60)
    assert code == 1
    assert "does-not-exist" in (proc.log_path.read_text() if proc.log_path else "")


def catch_up(bootstrap: str, topics: Topics, service: ServiceProcess, max_skew_s: float) -> dict:
    """A backlog of 20,000 wide predictions and 20,000 small outcomes, read from scratch with a
    join cap of 2,000: the outcomes topic is fetched far ahead of the predictions."""
    wide = ModelStream("backlog", seed=71, numeric_features=15, categorical_features=5)
    produce_events(bootstrap, topics, generate(wide, 20_000))
    service.config = {
        "limits": {"join_max_entries": 2000},
        "processing": {"batch_size": 250, "max_skew_s": max_skew_s},
    }
    service.start()
    wait_processed(bootstrap, topics)
    metrics = scrape(service.url)
    assert service.stop() == 0
    return metrics


@pytest.mark.parametrize("max_skew_s", [10, 1e6])
def test_backlog_is_read_in_step_so_the_join_loses_nothing(
    bootstrap: str, topics: Topics, service: ServiceProcess, max_skew_s: float
) -> None:
    """With a skew of 10 s the side ahead is paused once it fills half the join; with a skew
    the backlog never reaches (many models in a short span of event time), once it fills three
    quarters."""
    metrics = catch_up(bootstrap, topics, service, max_skew_s=max_skew_s)
    assert metrics["driftline_join_evictions_total"] == 0
    assert metrics["driftline_labeled_events_total"] == 20_000
    assert metrics["driftline_predictions_expired_total"] == 0


def test_a_segmented_model_names_the_region_that_degrades(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    """credit is sliced by region (``segments: [region]``): r0 carries every 10th prediction
    and its accuracy falls from 0.92 to 0.5 at event 12,000; the seven other regions stay
    healthy. Through the broker, an alert names r0, none names another region, every event
    follows its schema, and the KPI snapshot lists the eight regions; a replay of the same
    events decides the same."""
    healthy = ModelStream("credit", seed=21)
    degraded = replace(healthy, change_at=12_000, accuracy_after=0.5)
    pairs = []
    both = zip(generate(healthy, 14_000), generate(degraded, 14_000), strict=True)
    for i, (ok, bad) in enumerate(both):
        region = "r0" if i % 10 == 0 else f"r{1 + i % 7}"
        prediction, outcome = bad if region == "r0" else ok
        pairs.append(({**prediction, "segment": {"region": region}}, outcome))
    segmented = {"segments": ["region"]}

    def decided(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (*essentials(a), tuple(sorted((a.get("segment") or {}).items())))
            for a in found
            if a["kind"] != "incident"
        )

    # Kafka and replay decide the same.
    replayed = decided(replay_alerts(pairs, segmented))
    service.config = {"defaults": segmented, "processing": {"kpi_interval_s": 0.5}}
    events = published(bootstrap, topics, service, pairs, lambda found: decided(found) == replayed)
    alerts = [e for e in events if e["kind"] != "incident"]
    named = [a for a in alerts if "segment" in a]
    assert named and all(a["segment"] == {"region": "r0"} for a in named)
    assert any(a["status"] == "firing" and a["kind"] == "concept_drift" for a in named)
    assert all(a["source"]["offset"] >= 0 for a in named)
    incidents = [e for e in events if e["kind"] == "incident"]
    assert any({"region": "r0"} in e["segments"] for e in incidents)

    def listed() -> dict[str, Any] | None:
        for message in reversed(read_all(bootstrap, topics.kpis)):
            snapshot = orjson.loads(message.value())
            segments = snapshot.get("segments")
            if segments and len(segments["values"]["region"]) == 8:
                return dict(snapshot)
        return None

    snapshot = wait_for(listed, 30, "a KPI snapshot listing the eight regions")
    KPI_SCHEMA.validate(snapshot)
    assert snapshot["segments"]["pooled_events"] == 0
    assert service.stop() == 0
    assert decided(alerts) == replayed
