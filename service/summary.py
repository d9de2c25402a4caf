"""``driftline replay --summary``: what fired, per model, in words a person tunes thresholds by.

Pure functions over the objects replay emitted: alerts and, under the incident contract, incident
events (``kind: "incident"``) on the same stream. Without incident events the incident section
says so and everything else still works. All times are event times.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from driftline.detectors.alerts import AlertIdentity as IdentityKey
from driftline.detectors.alerts import alert_identity, iso_ms

_SEVERITY_RANK = {"warning": 1, "critical": 2}



@dataclass(frozen=True, slots=True)
class IdentitySummary:
    """One alert identity of a model: kind/detector/feature-or-metric at one severity."""

    kind: str
    detector: str
    subject: str
    severity: str
    firing: int
    resolved: int
    # Resolved because a new model_version started, not because the condition cleared.
    superseded: int
    # Firings after an earlier firing of the same identity, except the first firing after a
    # superseded resolve (a new model_version starts afresh; that is not a tuning problem).
    refired: int
    first_fired_at: str | None
    still_firing: bool

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.detector}/{self.subject}"

    @property
    def flapping(self) -> bool:
        """Fired again after recovering: a threshold, hysteresis or resolve setting may want
        tuning."""
        return self.refired > 0


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    incident_id: str
    model_version: str | None
    opened_at: str | None
    closed_at: str | None
    resolution: str | None
    kinds: tuple[str, ...]
    severity: str | None
    alerts: int  # firing alert events of this incident
    identities: int  # distinct alert identities in it
    # The earliest firing of the incident in event time, and its alert ("label severity"). Alerts
    # of one batch are written grouped by detector, not in event-time order, so this can be
    # earlier than ``opened_at`` (the event time of the alert that opened it in output order).
    first_alert: str | None
    first_fired_at: str | None


@dataclass(frozen=True, slots=True)
class Detection:
    """How long after a known change (``--change-at``) the model was first flagged."""

    change_at: str
    detected_at: str | None  # None: not detected
    delay_ms: int | None
    incident_id: str | None
    # Prediction records of the model with change_at <= event time <= detected_at (see
    # ``with_inputs``); None until counted.
    predictions: int | None
    # Incidents (or, without incident events, firing alerts) that opened before the change.
    before_change: int


@dataclass(frozen=True, slots=True)
class ModelSummary:
    model_id: str
    incidents: tuple[IncidentSummary, ...]
    identities: tuple[IdentitySummary, ...]
    detection: Detection | None


@dataclass(frozen=True, slots=True)
class Totals:
    models: int
    incidents: int
    open_incidents: int
    firing: int
    resolved: int
    identities: int
    flapping: int


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    models: tuple[ModelSummary, ...]
    change_at: str | None
    # Whether the output carried incident events; without them incidents are not reported and
    # time to detect falls back to the first firing alert.
    incident_events: bool
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_time_ms(value: str | int) -> int:
    """Epoch milliseconds from epoch ms (int or digits) or an RFC 3339 date-time with offset."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return round(parsed.timestamp() * 1000)
    raise ValueError(f"{value!r} is neither epoch milliseconds nor an RFC 3339 date-time")


def summarize(
    events: Iterable[Mapping[str, Any]], change_at_ms: int | None = None
) -> ReplaySummary:
    """Summarise emitted alerts and incident events, in output order, per model."""
    alerts: dict[str, list[Mapping[str, Any]]] = {}
    incidents: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    incident_events = False
    for event in events:
        model_id = event.get("model_id")
        if not isinstance(model_id, str):
            continue
        if event.get("kind") == "incident":
            incident_events = True
            history = incidents.setdefault(model_id, {})
            history.setdefault(str(event.get("incident_id")), []).append(event)
        else:
            alerts.setdefault(model_id, []).append(event)
    models = []
    for model_id in sorted(alerts.keys() | incidents.keys()):
        model_alerts = alerts.get(model_id, [])
        by_incident: dict[object, list[Mapping[str, Any]]] = {}
        for alert in model_alerts:
            by_incident.setdefault(alert.get("incident_id"), []).append(alert)
        model_incidents = tuple(
            _incident(incident_id, history, by_incident.get(incident_id, []))
            for incident_id, history in incidents.get(model_id, {}).items()
        )
        detection = None
        if change_at_ms is not None:
            opened: list[tuple[str | None, str | None]]
            if incident_events:
                opened = [(i.first_fired_at, i.incident_id) for i in model_incidents]
            else:
                opened = [(_time(a), None) for a in model_alerts if a.get("status") == "firing"]
            detection = _detection(change_at_ms, opened)
        models.append(ModelSummary(model_id, model_incidents, _identities(model_alerts), detection))
    return _with_totals(
        ReplaySummary(
            models=tuple(models),
            change_at=iso_ms(change_at_ms),
            incident_events=incident_events,
            totals=Totals(0, 0, 0, 0, 0, 0, 0),
        )
    )


def with_inputs(summary: ReplaySummary, lines: Iterable[bytes]) -> ReplaySummary:
    """Add what only the replay input knows: models that emitted nothing, and the number of
    prediction records between the change and its detection. ``lines`` are replay input lines;
    lines that are not prediction records with a model_id and timestamp are skipped."""
    change_ms = None if summary.change_at is None else parse_time_ms(summary.change_at)
    spans: dict[str, tuple[int, int]] = {}
    for model in summary.models:
        if change_ms is not None and model.detection and model.detection.detected_at:
            spans[model.model_id] = (change_ms, parse_time_ms(model.detection.detected_at))
    counts = dict.fromkeys(spans, 0)
    seen: set[str] = set()
    for line in lines:
        found = _prediction_time(line)
        if found is None:
            continue
        model_id, timestamp = found
        seen.add(model_id)
        span = spans.get(model_id)
        if span is not None and span[0] <= timestamp <= span[1]:
            counts[model_id] += 1
    models = {model.model_id: model for model in summary.models}
    for model_id in seen - models.keys():
        detection = None
        if summary.change_at is not None:
            detection = Detection(summary.change_at, None, None, None, None, 0)
        models[model_id] = ModelSummary(model_id, (), (), detection)
    for model_id, count in counts.items():
        model = models[model_id]
        assert model.detection is not None
        models[model_id] = dataclasses.replace(
            model, detection=dataclasses.replace(model.detection, predictions=count)
        )
    return _with_totals(
        dataclasses.replace(summary, models=tuple(models[key] for key in sorted(models)))
    )


def render_text(summary: ReplaySummary) -> str:
    """The summary as plain text, one block per model, then totals."""
    out = ["replay summary (event times, UTC)"]
    if summary.change_at is not None:
        out.append(f"change at {summary.change_at}")
    for model in summary.models:
        out.append("")
        out.append(f"model {model.model_id}")
        out.extend(_render_incidents(model, summary.incident_events))
        if model.detection is not None:
            out.append(_render_detection(model.detection, summary.incident_events))
        out.extend(_render_identities(model.identities))
    totals = summary.totals
    out.append("")
    incidents = (
        f"{_plural(totals.incidents, 'incident')} ({totals.open_incidents} open)"
        if summary.incident_events
        else "no incident events"
    )
    out.append(
        f"totals: {_plural(totals.models, 'model')}, {incidents}, "
        f"{totals.firing} firing / {totals.resolved} resolved alerts, "
        f"{_plural(totals.identities, 'alert identity', 'alert identities')}, "
        f"{totals.flapping} flapping?"
    )
    return "\n".join(out) + "\n"


# --- helpers ----------------------------------------------------------------------------------


def _time(alert: Mapping[str, Any]) -> str | None:
    detected = alert.get("detected_at")
    return detected if isinstance(detected, str) else None


def _identities(alerts: list[Mapping[str, Any]]) -> tuple[IdentitySummary, ...]:
    firing: dict[IdentityKey, int] = {}
    resolved: dict[IdentityKey, int] = {}
    superseded: dict[IdentityKey, int] = {}
    refired: dict[IdentityKey, int] = {}
    first: dict[IdentityKey, str | None] = {}
    last_status: dict[IdentityKey, str] = {}
    last_superseded: set[IdentityKey] = set()
    for alert in alerts:
        key = alert_identity(alert)
        status = str(alert.get("status"))
        last_status[key] = status
        if status == "firing":
            if firing.get(key) and key not in last_superseded:
                refired[key] = refired.get(key, 0) + 1
            last_superseded.discard(key)
            firing[key] = firing.get(key, 0) + 1
            first[key] = _earlier(first.get(key), _time(alert))
        elif status == "resolved":
            resolved[key] = resolved.get(key, 0) + 1
            if alert.get("resolution") == "superseded":
                superseded[key] = superseded.get(key, 0) + 1
                last_superseded.add(key)
            else:
                last_superseded.discard(key)
    return tuple(
        IdentitySummary(
            *key,
            firing=firing.get(key, 0),
            resolved=resolved.get(key, 0),
            superseded=superseded.get(key, 0),
            refired=refired.get(key, 0),
            first_fired_at=first.get(key),
            still_firing=last_status[key] == "firing",
        )
        for key in sorted(last_status, key=_identity_order)
    )


def _identity_order(key: IdentityKey) -> tuple[str, str, str, int, str]:
    kind, detector, subject, severity = key
    return kind, detector, subject, _SEVERITY_RANK.get(severity, 0), severity


def _incident(
    incident_id: str, history: list[Mapping[str, Any]], mine: list[Mapping[str, Any]]
) -> IncidentSummary:
    """One incident from its events (``history``) and its alerts (``mine``), in output order."""
    firing = [a for a in mine if a.get("status") == "firing"]
    kinds: set[str] = {str(a.get("kind")) for a in mine}
    identities: set[IdentityKey] = {alert_identity(a) for a in mine}
    severity: str | None = None
    opened_at = closed_at = resolution = None
    for event in history:
        kinds.update(str(kind) for kind in event.get("kinds") or ())
        for member in event.get("alerts") or ():
            identities.add(
                (
                    str(member.get("kind")),
                    str(member.get("detector")),
                    str(member.get("subject") or ""),
                    str(member.get("severity")),
                )
            )
        severity = _higher(severity, event.get("severity"))
        opened_at = opened_at or event.get("opened_at")
        if event.get("status") == "closed":
            closed_at = event.get("closed_at") or event.get("detected_at")
            resolution = event.get("resolution")
    for alert in firing:
        severity = _higher(severity, alert.get("severity"))
    latest = history[-1]
    opener = min(firing, key=lambda a: _sortable_time(_time(a)), default=None)
    return IncidentSummary(
        incident_id=incident_id,
        model_version=latest.get("model_version"),
        opened_at=opened_at,
        closed_at=closed_at,
        resolution=resolution,
        kinds=tuple(sorted(kinds)),
        severity=severity,
        alerts=len(firing),
        identities=len(identities),
        first_alert=None if opener is None else _label(alert_identity(opener)),
        first_fired_at=opened_at if opener is None else _earlier(opened_at, _time(opener)),
    )


def _sortable_time(when: str | None) -> float:
    if when is None:
        return math.inf
    try:
        return parse_time_ms(when)
    except ValueError:
        return math.inf


def _earlier(first: str | None, second: str | None) -> str | None:
    return second if _sortable_time(second) < _sortable_time(first) else first


def _higher(severity: str | None, candidate: object) -> str | None:
    if _SEVERITY_RANK.get(str(candidate), 0) > _SEVERITY_RANK.get(str(severity), 0):
        return str(candidate)
    return severity


def _detection(change_at_ms: int, opened: Iterable[tuple[str | None, str | None]]) -> Detection:
    times = [(_sortable_time(when), incident_id) for when, incident_id in opened]
    known = [(int(ms), incident_id) for ms, incident_id in times if ms != math.inf]
    after = sorted((t for t in known if t[0] >= change_at_ms), key=lambda t: t[0])
    before = len(known) - len(after)
    change_at = iso_ms(change_at_ms)
    assert change_at is not None
    if not after:
        return Detection(change_at, None, None, None, None, before)
    ms, incident_id = after[0]
    return Detection(change_at, iso_ms(ms), ms - change_at_ms, incident_id, None, before)


def _with_totals(summary: ReplaySummary) -> ReplaySummary:
    identities = [i for m in summary.models for i in m.identities]
    incidents = [i for m in summary.models for i in m.incidents]
    totals = Totals(
        models=len(summary.models),
        incidents=len(incidents),
        open_incidents=sum(i.closed_at is None for i in incidents),
        firing=sum(i.firing for i in identities),
        resolved=sum(i.resolved for i in identities),
        identities=len(identities),
        flapping=sum(i.flapping for i in identities),
    )
    return dataclasses.replace(summary, totals=totals)


def _prediction_time(line: bytes) -> tuple[str, int] | None:
    try:
        record = orjson.loads(line)
        if record.get("topic") != "predictions":
            return None
        value = record["value"]
        model_id = value["model_id"]
        timestamp = parse_time_ms(value["timestamp"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return (model_id, timestamp) if isinstance(model_id, str) else None


def _label(key: IdentityKey) -> str:
    kind, detector, subject, severity = key
    return f"{kind}/{detector}/{subject} {severity}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _seconds(delay_ms: int) -> str:
    return f"{delay_ms / 1000:.3f}".rstrip("0").rstrip(".") + " s"


def _render_incidents(model: ModelSummary, incident_events: bool) -> list[str]:
    if not incident_events:
        return ["  incidents: not reported (the output has no incident events)"]
    still_open = sum(i.closed_at is None for i in model.incidents)
    lines = [f"  incidents: {len(model.incidents)} ({still_open} open)"]
    for number, incident in enumerate(model.incidents, 1):
        closed = (
            f"closed {incident.closed_at} ({incident.resolution or 'no resolution'})"
            if incident.closed_at is not None
            else "open"
        )
        version = f" {incident.model_version}" if incident.model_version else ""
        lines.append(
            f"    {number}. {incident.incident_id[:8]}{version}  "
            f"opened {incident.opened_at or '?'}  {closed}"
        )
        lines.append(
            f"       {incident.severity or '?'}; {', '.join(incident.kinds) or 'no kinds'}; "
            f"{_plural(incident.alerts, 'firing alert')}, "
            f"{_plural(incident.identities, 'identity', 'identities')}"
        )
        if incident.first_alert is not None:
            lines.append(f"       first alert: {incident.first_alert} at {incident.first_fired_at}")
    return lines


def _render_detection(detection: Detection, incident_events: bool) -> str:
    what = "incident" if incident_events else "firing alert"
    if detection.before_change:
        early = f"; {_plural(detection.before_change, what)} before the change"
    else:
        early = ""
    if detection.delay_ms is None:
        return f"  time to detect: not detected{early}"
    records = (
        "" if detection.predictions is None else f", {_plural(detection.predictions, 'prediction')}"
    )
    opened = f"incident {detection.incident_id[:8]}" if detection.incident_id else f"first {what}"
    return (
        f"  time to detect: {_seconds(detection.delay_ms)}{records} "
        f"({opened} at {detection.detected_at}){early}"
    )


def _render_identities(identities: tuple[IdentitySummary, ...]) -> list[str]:
    if not identities:
        return ["  alerts: none"]
    header = ("kind/detector/subject", "severity", "firing", "resolved", "")
    rows = [header]
    for identity in identities:
        notes = []
        if identity.flapping:
            notes.append("flapping?")
        if identity.still_firing:
            notes.append("still firing")
        if identity.superseded:
            notes.append(f"{identity.superseded} superseded")
        rows.append(
            (
                identity.label,
                identity.severity,
                str(identity.firing),
                str(identity.resolved),
                ", ".join(notes),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  alerts by identity:"]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].rjust(widths[3]),
        ]
        lines.append(("    " + "  ".join(cells) + "  " + row[4]).rstrip())
    return lines
