"""IncidentBook: grouping a model's alerts into incidents, interleaving incident events."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.alerts import iso_ms
from driftline.detectors.incidents import IncidentBook

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "incident.v1.json"


def _validator() -> jsonschema.Draft202012Validator | None:
    # The schema is written alongside this module; while it does not exist, only the schema
    # assertion is skipped (every other assertion of the tests below still runs).
    if not SCHEMA_PATH.exists():
        return None
    doc = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc, format_checker=jsonschema.FormatChecker())


INCIDENT_SCHEMA = _validator()


def check_schema(events: list[dict[str, Any]]) -> None:
    """Every incident event is valid against schemas/incident.v1.json (when it exists)."""
    if INCIDENT_SCHEMA is None:
        return
    for event in events:
        if event["kind"] == "incident":
            INCIDENT_SCHEMA.validate(event)


# --- alert factory ----------------------------------------------------------------------------

# (kind, detector, subject field, subject)
SUBJECTS: list[tuple[str, str, str, str]] = [
    ("kpi_threshold", "relative_threshold", "metric", "accuracy"),
    ("concept_drift", "adwin", "metric", "error_rate"),
    ("data_drift", "ks", "feature", "age"),
    ("data_drift", "chi2", "feature", "country"),
    ("prediction_drift", "ks", "feature", "score"),
    ("data_quality", "null_rate", "feature", "age"),
]


def alert(
    subject: int,
    status: str,
    severity: str,
    offset: int,
    *,
    model_id: str = "m",
    p_value: float | None = None,
    resolution: str | None = None,
    kpis: dict[str, Any] | None = None,
    reference_kpis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    kind, detector, field, name = SUBJECTS[subject]
    text = f"{model_id}/{kind}/{detector}/{name}/{severity}/{status}/{offset}"
    evidence: dict[str, Any] = {} if p_value is None else {"p_value": p_value}
    reference: dict[str, Any] = {"summary": {"mean": 1.0}} if field == "feature" else {}
    if kind == "kpi_threshold":
        # As generation writes them: the KPIs measured now, and those of the reference.
        evidence["kpis"] = {"accuracy": 0.8, "n": offset} if kpis is None else kpis
        reference["kpis"] = reference_kpis
    out: dict[str, Any] = {
        "schema_version": 1,
        "alert_id": hashlib.blake2b(text.encode(), digest_size=16).hexdigest(),
        "model_id": model_id,
        "model_version": "v1",
        "kind": kind,
        "status": status,
        "severity": severity,
        "detector": detector,
        field: name,
        "value": 0.5,
        "threshold": 0.6,
        "reference": reference,
        "evidence": evidence,
        "detected_at": iso_ms(1_767_225_600_000 + offset * 1000),
        "source": {"topic": "outcomes", "partition": 0, "offset": offset},
    }
    if resolution is not None:
        out["resolution"] = resolution
    return out


def incident_events(out: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["status"], e["incident_id"]) for e in out if e["kind"] == "incident"]


def shape(out: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["status"]) for e in out]


# --- examples ---------------------------------------------------------------------------------


def test_alerts_that_fire_together_form_one_incident() -> None:
    book = IncidentBook("m")
    out = book.record([alert(0, "firing", "warning", 1), alert(2, "firing", "warning", 1)])
    out += book.record([alert(3, "firing", "warning", 2)])
    ids = {e["incident_id"] for e in out}
    assert len(ids) == 1
    assert book.open_incident == ids.pop()
    assert book.n_opened == 1
    assert [s for s, _ in incident_events(out)] == ["opened"]
    check_schema(out)


def test_ids_are_deterministic_and_differ_between_models() -> None:
    def replay(model_id: str) -> list[dict[str, Any]]:
        book = IncidentBook(model_id)
        seq = [
            [alert(0, "firing", "warning", 1, model_id=model_id)],
            [alert(0, "resolved", "warning", 2, model_id=model_id)],
            [alert(1, "firing", "critical", 3, model_id=model_id)],
        ]
        return [e for batch in seq for e in book.record(batch)]

    first, again, other = replay("m"), replay("m"), replay("other")
    assert first == again
    ids = {e["incident_id"] for e in first}
    assert len(ids) == 2
    assert ids.isdisjoint({e["incident_id"] for e in other})
    events = [e["event_id"] for e in first if e["kind"] == "incident"]
    assert len(set(events)) == len(events) == 3
    assert events == [e["event_id"] for e in again if e["kind"] == "incident"]


def test_opened_right_before_the_first_firing_and_closed_right_after_the_last_resolve() -> None:
    book = IncidentBook("m")
    out = book.record([alert(0, "firing", "warning", 1), alert(2, "firing", "warning", 2)])
    assert shape(out) == [
        ("incident", "opened"),
        ("kpi_threshold", "firing"),
        ("data_drift", "firing"),
    ]
    assert out[0]["detected_at"] == out[0]["opened_at"] == out[1]["detected_at"]
    assert out[0]["source"] == out[1]["source"]
    assert out[0]["firing"] == 1
    out = book.record([alert(0, "resolved", "warning", 3)])
    assert shape(out) == [("kpi_threshold", "resolved")]  # one alert still firing
    out = book.record([alert(2, "resolved", "warning", 4), alert(1, "firing", "warning", 4)])
    assert shape(out) == [
        ("data_drift", "resolved"),
        ("incident", "closed"),
        ("incident", "opened"),
        ("concept_drift", "firing"),
    ]
    closed = out[1]
    assert closed["firing"] == 0
    assert closed["closed_at"] == closed["detected_at"] == out[0]["detected_at"]
    assert closed["resolution"] == "recovered"
    assert closed["incident_id"] == out[0]["incident_id"]
    assert {a["status"] for a in closed["alerts"]} == {"resolved"}
    assert closed["kinds"] == ["data_drift", "kpi_threshold"]
    check_schema(out)


def test_a_critical_in_a_warning_incident_escalates_it_once() -> None:
    book = IncidentBook("m")
    out = book.record([alert(0, "firing", "warning", 1)])
    out += book.record([alert(0, "firing", "critical", 2), alert(1, "firing", "critical", 2)])
    assert shape(out) == [
        ("incident", "opened"),
        ("kpi_threshold", "firing"),
        ("kpi_threshold", "firing"),
        ("incident", "escalated"),
        ("concept_drift", "firing"),
    ]
    assert (out[0]["severity"], out[3]["severity"]) == ("warning", "critical")
    assert len({e["incident_id"] for e in out}) == 1
    check_schema(out)


def test_an_incident_opened_by_a_critical_does_not_escalate() -> None:
    book = IncidentBook("m")
    out = book.record([alert(0, "firing", "critical", 1), alert(0, "firing", "warning", 1)])
    assert shape(out) == [
        ("incident", "opened"),
        ("kpi_threshold", "firing"),
        ("kpi_threshold", "firing"),
    ]
    assert out[0]["severity"] == "critical"


def test_an_incident_after_the_first_closed_has_a_new_id() -> None:
    book = IncidentBook("m")
    first = book.record([alert(0, "firing", "warning", 1), alert(0, "resolved", "warning", 2)])
    assert book.open_incident is None
    second = book.record([alert(0, "firing", "warning", 3)])
    assert incident_events(first)[0][1] != incident_events(second)[0][1]
    assert book.open_incident == incident_events(second)[0][1]
    assert book.n_opened == 2


def test_a_superseded_last_resolve_closes_the_incident_as_superseded() -> None:
    book = IncidentBook("m")
    book.record([alert(0, "firing", "warning", 1), alert(1, "firing", "warning", 1)])
    out = book.record(
        [
            alert(0, "resolved", "warning", 2),
            alert(1, "resolved", "warning", 2, resolution="superseded"),
        ]
    )
    assert shape(out)[-1] == ("incident", "closed")
    assert out[-1]["resolution"] == "superseded"
    check_schema(out)


def test_features_are_ranked_by_drift_evidence_then_quality() -> None:
    book = IncidentBook("m")
    out = book.record(
        [
            alert(5, "firing", "warning", 1),  # data quality on "age": no p-value
            alert(2, "firing", "warning", 1, p_value=1e-3),  # "age" drift
            alert(3, "firing", "warning", 1, p_value=1e-9),  # "country" drift
            alert(4, "firing", "warning", 1, p_value=0.02),  # prediction drift on "score"
            alert(0, "firing", "critical", 1),  # a KPI names no feature
        ]
    )
    escalated = out[-1]
    assert escalated["status"] == "escalated"
    ranked = [(f["kind"], f["feature"]) for f in escalated["features"]]
    assert ranked == [
        ("data_drift", "country"),
        ("data_drift", "age"),
        ("prediction_drift", "score"),
        ("data_quality", "age"),
    ]
    scores = [f["score"] for f in escalated["features"]]
    assert scores[:3] == pytest.approx([9.0, 3.0, -math.log10(0.02)])
    assert scores[3] is None
    # The opened event knew only the alert that opened it.
    assert [(f["kind"], f["feature"]) for f in out[0]["features"]] == [("data_quality", "age")]
    check_schema(out)


def test_a_feature_keeps_its_strongest_evidence_and_the_list_is_capped() -> None:
    book = IncidentBook("m")
    # The KPI warning keeps the incident open while "age" drifts, recovers, drifts again less.
    alerts = [alert(0, "firing", "warning", 0), alert(2, "firing", "warning", 1, p_value=1e-4)]
    alerts += [alert(2, "resolved", "warning", 2), alert(2, "firing", "warning", 3, p_value=0.01)]
    assert [s for s, _ in incident_events(book.record(alerts))] == ["opened"]
    # Twelve more drifted features, named f00 .. f11, with p = 1e-1 .. 1e-12.
    more = []
    for i in range(12):
        a = alert(3, "firing", "warning", 10 + i, p_value=10.0 ** -(i + 1))
        a["feature"] = f"f{i:02d}"
        more.append(a)
    more.append(alert(0, "firing", "critical", 30))
    event = book.record(more)[-1]
    assert event["status"] == "escalated"
    ranked = [(f["feature"], f["score"]) for f in event["features"]]
    # "age" keeps its score of 4 (p = 1e-4, not the later 0.01) and ties with f03, ahead by name;
    # the cap of 10 leaves out the three weakest, f02 .. f00.
    expected = [(f"f{i:02d}", i + 1.0) for i in range(11, 3, -1)] + [("age", 4.0), ("f03", 4.0)]
    assert [name for name, _ in ranked] == [name for name, _ in expected]
    assert [score for _, score in ranked] == pytest.approx([score for _, score in expected])
    check_schema([event])


def test_kpis_carry_reference_at_open_and_now_from_the_kpi_alerts() -> None:
    """The KPIs come from the incident's KPI-threshold alerts: ``at_open`` from the first,
    ``now`` from the latest, ``reference`` from their reference."""
    book = IncidentBook("m")
    reference = {"accuracy": 0.9, "n": 5000}
    opened = book.record(
        [
            alert(
                0,
                "firing",
                "warning",
                1,
                kpis={"accuracy": 0.84, "auc": None},
                reference_kpis=reference,
            )
        ]
    )[0]
    assert opened["kpis"] == {
        "reference": reference,
        "at_open": {"accuracy": 0.84, "auc": None},
        "now": {"accuracy": 0.84, "auc": None},
    }
    out = book.record(
        [
            alert(2, "firing", "critical", 2, p_value=1e-6),  # a drift alert carries no KPIs
            alert(0, "resolved", "warning", 3, kpis={"accuracy": 0.89}, reference_kpis=reference),
            alert(2, "resolved", "critical", 4),
        ]
    )
    escalated, closed = out[1], out[-1]
    assert (escalated["status"], closed["status"]) == ("escalated", "closed")
    assert escalated["kpis"] == opened["kpis"]
    assert closed["kpis"] == {
        "reference": reference,
        "at_open": {"accuracy": 0.84, "auc": None},
        "now": {"accuracy": 0.89},
    }
    check_schema([opened, *out])


def test_an_incident_without_kpi_alerts_has_no_kpis() -> None:
    book = IncidentBook("m")
    out = book.record([alert(2, "firing", "warning", 1, p_value=1e-4)])
    assert out[0]["kpis"] == {"reference": None, "at_open": None, "now": None}
    check_schema(out)


def test_a_kpi_alert_without_a_reference_leaves_the_reference_null() -> None:
    book = IncidentBook("m")
    opened = book.record([alert(0, "firing", "warning", 1, kpis={"mae": 1.25})])[0]
    assert opened["kpis"] == {
        "reference": None,
        "at_open": {"mae": 1.25},
        "now": {"mae": 1.25},
    }
    check_schema([opened])


def test_a_resolve_without_an_open_incident_still_gets_an_incident_id() -> None:
    book = IncidentBook("m")
    out = book.record([alert(0, "resolved", "critical", 1)])
    assert shape(out) == [("kpi_threshold", "resolved")]
    assert isinstance(out[0]["incident_id"], str) and len(out[0]["incident_id"]) == 32
    assert book.open_incident is None
    assert book.n_opened == 0
    again = IncidentBook("m").record([alert(0, "resolved", "critical", 1)])
    assert again[0]["incident_id"] == out[0]["incident_id"]


def test_no_alerts_no_events() -> None:
    book = IncidentBook("m")
    assert book.record([]) == []
    assert book.open_incident is None


# --- property ---------------------------------------------------------------------------------

IDENTITIES = [
    (subject, severity) for subject in range(len(SUBJECTS)) for severity in ("warning", "critical")
]


@st.composite
def alert_batches(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Alerts whose statuses alternate firing/resolved per identity, cut into batches."""
    # A few identities per example, so that incidents close (and reopen) often.
    pool = draw(
        st.lists(st.sampled_from(range(len(IDENTITIES))), min_size=1, max_size=4, unique=True)
    )
    picks = draw(st.lists(st.sampled_from(pool), max_size=60))
    firing: set[int] = set()
    alerts = []
    for offset, pick in enumerate(picks):
        subject, severity = IDENTITIES[pick]
        status = "resolved" if pick in firing else "firing"
        firing ^= {pick}
        p_value = draw(st.sampled_from([None, 1e-12, 1e-3, 0.04, 0.0]))
        superseded = status == "resolved" and draw(st.booleans())
        alerts.append(
            alert(
                subject,
                status,
                severity,
                offset,
                p_value=p_value,
                resolution="superseded" if superseded else None,
            )
        )
    sizes = draw(st.lists(st.integers(1, 8), max_size=60))
    batches, at = [], 0
    for size in sizes:
        if at >= len(alerts):
            break
        batches.append(alerts[at : at + size])
        at += size
    if at < len(alerts):
        batches.append(alerts[at:])
    return batches


ATTRIBUTED = ("kpi_threshold", "concept_drift")


def as_given(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert the book recorded, without what the book adds to it."""
    out = {k: copy.deepcopy(v) for k, v in alert.items() if k != "incident_id"}
    attribution = out.get("evidence", {}).get("attribution")
    if attribution is not None:
        attribution.pop("features", None)
        attribution.pop("segments", None)
        if not attribution:
            del out["evidence"]["attribution"]
    return out


@settings(max_examples=300, deadline=None)
@given(alert_batches())
def test_incidents_alternate_and_every_alert_carries_the_open_incident(
    batches: list[list[dict[str, Any]]],
) -> None:
    book = IncidentBook("m")
    open_id: str | None = None
    severity = "warning"  # the highest severity of the open incident
    escalated = False
    seen: set[str] = set()
    firing: set[tuple[str, str, str, str]] = set()
    for batch in batches:
        inputs = copy.deepcopy(batch)
        out = book.record(batch)
        check_schema(out)
        # The alerts go out unchanged but for their incident_id and, on a firing KPI or
        # concept-drift alert, the features and segments of its attribution, in their order.
        alerts_out = [e for e in out if e["kind"] != "incident"]
        assert [as_given(a) for a in alerts_out] == inputs
        for alert in alerts_out:
            attributed = alert["status"] == "firing" and alert["kind"] in ATTRIBUTED
            attribution = alert.get("evidence", {}).get("attribution", {})
            assert attributed == ("features" in attribution and "segments" in attribution)
        for i, event in enumerate(out):
            if event["kind"] == "incident":
                if event["status"] == "opened":
                    assert open_id is None  # never two open incidents
                    assert event["incident_id"] not in seen
                    open_id, escalated, severity = event["incident_id"], False, event["severity"]
                    seen.add(open_id)
                    following = out[i + 1]
                    assert following["status"] == "firing"
                    assert following["incident_id"] == open_id
                    assert following["severity"] == severity
                elif event["status"] == "escalated":
                    assert event["incident_id"] == open_id and not escalated
                    escalated = True
                    assert (out[i - 1]["status"], out[i - 1]["severity"]) == (
                        "firing",
                        "critical",
                    )
                else:
                    assert event["incident_id"] == open_id
                    assert event["firing"] == 0 and not firing
                    assert out[i - 1]["status"] == "resolved"
                    assert event["resolution"] == out[i - 1].get("resolution", "recovered")
                    open_id = None
                assert event["severity"] == severity
                continue
            subject = event.get("feature") or event.get("metric")
            identity = (event["kind"], event["detector"], subject, event["severity"])
            assert open_id is not None
            assert event["incident_id"] == open_id
            if event["status"] == "firing":
                firing.add(identity)
                opener = i > 0 and out[i - 1]["status"] == "opened"
                if event["severity"] == "critical" and severity == "warning" and not opener:
                    # A critical joins a warning incident: escalated comes next.
                    assert (out[i + 1]["kind"], out[i + 1]["status"]) == ("incident", "escalated")
                    severity = "critical"
            else:
                firing.discard(identity)
                if not firing:  # the incident's last alert resolved: closed comes next
                    assert (out[i + 1]["kind"], out[i + 1]["status"]) == ("incident", "closed")
        assert book.open_incident == open_id
        assert (open_id is None) == (not firing)
    assert book.n_opened == len(seen)
