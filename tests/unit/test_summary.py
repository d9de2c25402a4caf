"""`driftline replay --summary`: incidents, firings per alert identity and time to detect."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.detectors.alerts import iso_ms
from driftline.service.cli import main
from driftline.service.summary import parse_time_ms, render_text, summarize, with_inputs
from driftline.service.synthetic import ModelStream
from tests.unit.test_replay_cli import write_records

T0 = 1_790_000_000_000
INC1, INC2, INC3 = "a" * 32, "b" * 32, "c" * 32


def at(seconds: float) -> str:
    text = iso_ms(T0 + int(seconds * 1000))
    assert text is not None
    return text


def alert(
    status: str,
    seconds: float,
    *,
    kind: str = "data_drift",
    detector: str = "psi",
    feature: str | None = "x1",
    metric: str | None = None,
    severity: str = "warning",
    model_id: str = "credit",
    incident_id: str | None = None,
    resolution: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "model_id": model_id,
        "model_version": "v1",
        "kind": kind,
        "status": status,
        "severity": severity,
        "detector": detector,
        "detected_at": at(seconds),
    }
    if feature is not None:
        event["feature"] = feature
    if metric is not None:
        event["metric"] = metric
    if incident_id is not None:
        event["incident_id"] = incident_id
    if resolution is not None:
        event["resolution"] = resolution
    return event


def incident(
    incident_id: str,
    status: str,
    seconds: float,
    *,
    opened: float,
    severity: str = "warning",
    kinds: tuple[str, ...] = ("data_drift",),
    members: tuple[tuple[str, str, str, str], ...] = (),
    resolution: str | None = None,
    model_id: str = "credit",
    model_version: str = "v1",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "kind": "incident",
        "incident_id": incident_id,
        "model_id": model_id,
        "model_version": model_version,
        "status": status,
        "severity": severity,
        "opened_at": at(opened),
        "closed_at": at(seconds) if status == "closed" else None,
        "detected_at": at(seconds),
        "kinds": list(kinds),
        "alerts": [
            {"kind": k, "detector": d, "subject": s, "severity": sev, "status": "firing"}
            for k, d, s, sev in members
        ],
    }
    if resolution is not None:
        event["resolution"] = resolution
    return event


def table_row(text: str, label: str, severity: str) -> str:
    """The identity table line of ``label`` at ``severity``."""
    pattern = re.compile(rf"^\s+{re.escape(label)}\s+{severity}\s+\d+\s+\d+.*$", re.M)
    rows = pattern.findall(text)
    assert len(rows) == 1, text
    row: str = rows[0]
    return row


def test_flapping_identity_is_counted_and_marked_without_incident_events() -> None:
    events = [
        alert("firing", 10),
        alert("resolved", 20),
        alert("firing", 30),
        alert("resolved", 40),
        alert("firing", 50),
        alert(
            "firing",
            55,
            kind="kpi_threshold",
            detector="relative_threshold",
            feature=None,
            metric="accuracy",
            severity="critical",
        ),
        alert("resolved", 60),
    ]
    summary = summarize(events)
    (model,) = summary.models
    assert model.model_id == "credit" and model.incidents == () and model.detection is None
    psi, kpi = model.identities
    assert (psi.label, psi.severity, psi.firing, psi.resolved) == (
        "data_drift/psi/x1",
        "warning",
        3,
        3,
    )
    assert (
        psi.refired == 2 and psi.flapping and not psi.still_firing and psi.first_fired_at == at(10)
    )
    assert (kpi.label, kpi.firing, kpi.resolved) == (
        "kpi_threshold/relative_threshold/accuracy",
        1,
        0,
    )
    assert not kpi.flapping and kpi.still_firing
    assert summary.totals.firing == 4 and summary.totals.resolved == 3
    assert summary.totals.identities == 2 and summary.totals.flapping == 1

    text = render_text(summary)
    assert "no incident events" in text
    assert "flapping?" in table_row(text, "data_drift/psi/x1", "warning")
    kpi_row = table_row(text, "kpi_threshold/relative_threshold/accuracy", "critical")
    assert "flapping?" not in kpi_row and "still firing" in kpi_row
    assert re.search(r"data_drift/psi/x1\s+warning\s+3\s+3", text)


def escalated_then_superseded() -> list[dict[str, Any]]:
    """Incident 1 opens on a warning, escalates to critical, is closed as superseded when v2
    starts; incident 2 opens on v2 and stays open."""
    warn = ("data_drift", "psi", "x1", "warning")
    crit = ("data_drift", "psi", "x1", "critical")
    kpi = ("kpi_threshold", "relative_threshold", "accuracy", "critical")
    kpi_alert = {
        "kind": "kpi_threshold",
        "detector": "relative_threshold",
        "feature": None,
        "metric": "accuracy",
        "severity": "critical",
    }
    return [
        incident(INC1, "opened", 10, opened=10, members=(warn,)),
        alert("firing", 10, incident_id=INC1),
        alert("firing", 20, severity="critical", incident_id=INC1),
        incident(INC1, "escalated", 20, opened=10, severity="critical", members=(warn, crit)),
        alert("firing", 25, incident_id=INC1, **kpi_alert),
        incident(INC1, "escalated", 25, opened=10, severity="critical",
                 kinds=("data_drift", "kpi_threshold"), members=(warn, crit, kpi)),
        alert("resolved", 30, incident_id=INC1, resolution="superseded"),
        alert("resolved", 30, severity="critical", incident_id=INC1, resolution="superseded"),
        alert("resolved", 30, incident_id=INC1, resolution="superseded", **kpi_alert),
        incident(INC1, "closed", 30, opened=10, severity="critical",
                 kinds=("data_drift", "kpi_threshold"), members=(warn, crit, kpi),
                 resolution="superseded"),
        incident(INC2, "opened", 45, opened=45, model_version="v2", members=(warn,)),
        alert("firing", 45, incident_id=INC2),
    ]  # fmt: skip


def test_incident_opened_escalated_and_closed_as_superseded() -> None:
    summary = summarize(escalated_then_superseded())
    assert summary.incident_events
    (model,) = summary.models
    first, second = model.incidents
    assert first.incident_id == INC1
    assert (first.opened_at, first.closed_at, first.resolution) == (at(10), at(30), "superseded")
    assert first.severity == "critical"
    assert first.kinds == ("data_drift", "kpi_threshold")
    assert (first.alerts, first.identities) == (3, 3)
    assert first.first_alert == "data_drift/psi/x1 warning" and first.first_fired_at == at(10)
    assert second.incident_id == INC2 and second.model_version == "v2"
    assert (second.opened_at, second.closed_at, second.resolution) == (at(45), None, None)
    assert (second.severity, second.alerts) == ("warning", 1)

    warning = next(i for i in model.identities if i.label == "data_drift/psi/x1" and
                   i.severity == "warning")  # fmt: skip
    assert (warning.firing, warning.resolved, warning.superseded) == (2, 1, 1)
    # It fired again only because v2 started afresh: not a flap.
    assert (warning.refired, warning.flapping, warning.still_firing) == (0, False, True)
    assert summary.totals.incidents == 2 and summary.totals.open_incidents == 1

    text = render_text(summary)
    assert "incidents: 2 (1 open)" in text
    assert f"1. {INC1[:8]} v1  opened {at(10)}  closed {at(30)} (superseded)" in text
    assert f"2. {INC2[:8]} v2  opened {at(45)}  open" in text
    assert "critical; data_drift, kpi_threshold; 3 firing alerts, 3 identities" in text
    row = table_row(text, "data_drift/psi/x1", "warning")
    assert "1 superseded" in row and "still firing" in row and "flapping?" not in row


def test_change_at_reports_delay_to_first_incident_opened_at_or_after_it() -> None:
    events = [
        incident(INC1, "opened", 5, opened=5),
        alert("firing", 5, incident_id=INC1),
        alert("resolved", 8, incident_id=INC1, resolution="recovered"),
        incident(INC1, "closed", 8, opened=5, resolution="recovered"),
        incident(INC2, "opened", 115, opened=115),
        alert("firing", 115, incident_id=INC2),
        # Same batch, another detector, earlier event time: the incident's earliest firing.
        alert(
            "firing",
            112.5,
            kind="concept_drift",
            detector="adwin",
            feature=None,
            metric="error_rate",
            severity="critical",
            incident_id=INC2,
        ),
        incident(INC3, "opened", 7, opened=7, model_id="fraud"),
        alert("firing", 7, incident_id=INC3, model_id="fraud"),
    ]
    change = T0 + 100_000
    summary = summarize(events, change_at_ms=change)
    credit, fraud = summary.models
    assert credit.detection is not None and fraud.detection is not None
    assert credit.detection.delay_ms == 12_500
    assert credit.detection.incident_id == INC2 and credit.detection.detected_at == at(112.5)
    assert credit.detection.before_change == 1
    assert credit.incidents[1].opened_at == at(115)
    assert credit.incidents[1].first_alert == "concept_drift/adwin/error_rate critical"
    assert fraud.detection.delay_ms is None and fraud.detection.before_change == 1

    # One prediction per second per model; "quiet" emitted nothing but is still reported.
    lines = [
        orjson.dumps(
            {"topic": topic, "key": model, "value": {"model_id": model, "timestamp": T0 + s * 1000}}
        )
        for s in range(200)
        for model in ("credit", "fraud", "quiet")
        for topic in ("predictions", "outcomes")
    ] + [b"not json", b'{"topic": "predictions", "value": [1]}']
    summary = with_inputs(summary, lines)
    assert [m.model_id for m in summary.models] == ["credit", "fraud", "quiet"]
    credit, fraud, quiet = summary.models
    assert credit.detection is not None and credit.detection.predictions == 13  # 100 s .. 112 s
    assert quiet.detection is not None and quiet.detection.delay_ms is None

    text = render_text(summary)
    assert f"change at {at(100)}" in text
    assert (
        f"time to detect: 12.5 s, 13 predictions (incident {INC2[:8]} at {at(112.5)}); "
        "1 incident before the change" in text
    )
    fraud_block = text.split("model fraud")[1].split("model quiet")[0]
    assert "time to detect: not detected; 1 incident before the change" in fraud_block
    assert "model quiet" in text and summary.totals.models == 3


def test_change_at_without_incident_events_uses_the_first_firing_alert() -> None:
    events = [alert("firing", 3), alert("resolved", 4), alert("firing", 61), alert("firing", 70)]
    summary = summarize(events, change_at_ms=T0 + 60_000)
    (model,) = summary.models
    assert model.detection is not None
    assert (model.detection.delay_ms, model.detection.incident_id) == (1_000, None)
    assert model.detection.before_change == 1
    assert f"time to detect: 1 s (first firing alert at {at(61)})" in render_text(summary)


def test_times_parse_from_rfc3339_and_epoch_ms() -> None:
    assert parse_time_ms("1790000000123") == parse_time_ms("2026-09-21T14:13:20.123Z") == T0 + 123
    assert parse_time_ms("2026-09-21T16:13:20.123+02:00") == T0 + 123
    for bad in ("2026-09-21T14:13:20", "yesterday", ""):
        with pytest.raises(ValueError):
            parse_time_ms(bad)


def test_empty_output_renders_totals() -> None:
    summary = summarize([])
    assert summary.models == () and summary.totals.firing == 0
    assert "totals: 0 models" in render_text(summary)


def test_replay_summary_names_models_and_identities_with_counts_from_the_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records.jsonl"
    change_index = 3000
    specs = [
        ModelStream("credit", seed=1, change_at=change_index, accuracy_after=0.7),
        ModelStream("fraud", seed=2),
    ]
    write_records(records, specs, 5000)
    alerts_path, summary_json = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    change_ms = specs[0].start_ms + change_index * specs[0].step_ms
    argv = ["replay", "--input", str(records), "--output", str(alerts_path), "--summary",
            "--change-at", str(change_ms), "--summary-json", str(summary_json)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out

    alerts = [orjson.loads(line) for line in alerts_path.read_bytes().splitlines()]
    identities: dict[tuple[str, str], list[str]] = {}
    for event in alerts:
        if event["kind"] == "incident":
            continue
        label = f"{event['kind']}/{event['detector']}/{event.get('feature') or event['metric']}"
        # "superseded" resolves start a model_version afresh; others can be followed by a flap.
        status = "superseded" if event.get("resolution") == "superseded" else event["status"]
        identities.setdefault((label, event["severity"]), []).append(status)
    assert identities and {a["model_id"] for a in alerts} == {"credit"}
    assert "model credit" in text and "model fraud" in text
    for (label, severity), statuses in identities.items():
        row = table_row(text, label, severity)
        firing = statuses.count("firing")
        resolved = statuses.count("resolved") + statuses.count("superseded")
        assert re.search(rf"{severity}\s+{firing}\s+{resolved}(\s|$)", row), row
        flaps = any(a == "resolved" and b == "firing" for a, b in itertools.pairwise(statuses))
        assert ("flapping?" in row) == flaps

    # Detection is the earliest firing of the first incident that began at or after the change;
    # without incident events in the output, the first firing alert at or after it.
    firsts: dict[str | None, int] = {}
    for event in alerts:
        if event["kind"] == "incident":
            when, key = event["opened_at"], event["incident_id"]
        elif event["status"] == "firing":
            when, key = event["detected_at"], event.get("incident_id", event["detected_at"])
        else:
            continue
        firsts[key] = min(firsts.get(key, parse_time_ms(when)), parse_time_ms(when))
    delay = min(t for t in firsts.values() if t >= change_ms) - change_ms
    # One credit prediction every step_ms from the change up to and including the detection.
    predictions = delay // specs[0].step_ms + 1
    assert f"time to detect: {delay / 1000:g} s, {predictions} predictions" in text
    shown = orjson.loads(summary_json.read_bytes())
    assert [m["model_id"] for m in shown["models"]] == ["credit", "fraud"]
    assert shown["models"][0]["detection"]["delay_ms"] == delay


def test_replay_summary_goes_to_stderr_when_alerts_go_to_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records.jsonl"
    write_records(records, [ModelStream("m", seed=5, change_at=500, accuracy_after=0.5)], 1500)
    assert main(["replay", "--input", str(records), "--summary"]) == 0
    captured = capsys.readouterr()
    assert "model m" in captured.err and "totals:" in captured.err
    assert captured.out.strip() and "model m" not in captured.out
    assert all(orjson.loads(line)["model_id"] == "m" for line in captured.out.splitlines())
