"""Incidents: the alerts of one model that fire together, opened and closed as one problem.

An incident opens with a model's first firing alert while none of its incidents is open, takes
in every alert of that model that fires while it is open (an escalation from warning to critical
is the same incident) and closes when its last firing alert resolves. Every alert carries the
``incident_id``; incident events (``kind: "incident"``, ``schemas/incident.v1.json``) go out on the
alerts topic in order with the alerts: ``opened`` right before the alert that opened it,
``escalated`` right after the first critical alert of a warning incident, ``closed`` right after
the alert that closed it. Ids are deterministic: the same input gives the same ids.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from driftline.detectors.alerts import AlertIdentity as Identity
from driftline.detectors.alerts import alert_identity, segment_subject

__all__ = ["IncidentBook"]

_FEATURE_LIMIT = 10


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@dataclass
class _Incident:
    incident_id: str
    model_version: str | None
    opened_at: str
    severity: str = "warning"
    # KPIs as the incident's KPI-threshold alerts measured them: deterministic, unlike a
    # read of the live window, which depends on how the input was batched.
    kpis_reference: dict[str, Any] | None = None
    kpis_at_open: dict[str, Any] | None = None
    kpis_now: dict[str, Any] | None = None
    alerts: dict[Identity, dict[str, Any]] = field(default_factory=dict)
    features: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # "key=value" -> segment, of the alerts about one segment.
    segments: dict[str, dict[str, str]] = field(default_factory=dict)
    # "key=value" -> the largest error rise its firing alerts measured.
    segment_rises: dict[str, float] = field(default_factory=dict)
    # The attribution of the latest KPI or concept-drift alert that fired.
    attribution: dict[str, Any] | None = None

    @property
    def firing(self) -> int:
        return sum(a["status"] == "firing" for a in self.alerts.values())


class IncidentBook:
    """The incidents of one model.

    Parameters
    ----------
    model_id
        The model whose alerts are booked.

    Examples
    --------
    >>> book = IncidentBook("m")
    >>> def alert(status, severity, offset):
    ...     return {"alert_id": f"{offset:032x}", "model_id": "m", "model_version": "v1",
    ...             "kind": "kpi_threshold", "detector": "relative_threshold",
    ...             "metric": "accuracy", "status": status, "severity": severity,
    ...             "detected_at": "2026-01-01T00:00:00.000Z",
    ...             "source": {"topic": "outcomes", "partition": 0, "offset": offset}}
    >>> out = book.record([alert("firing", "warning", 1), alert("firing", "critical", 2)])
    >>> [(e["kind"], e["status"]) for e in out]  # doctest: +NORMALIZE_WHITESPACE
    [('incident', 'opened'), ('kpi_threshold', 'firing'), ('kpi_threshold', 'firing'),
     ('incident', 'escalated')]
    >>> out = book.record([alert("resolved", "critical", 3), alert("resolved", "warning", 4)])
    >>> [(e["kind"], e["status"]) for e in out]
    [('kpi_threshold', 'resolved'), ('kpi_threshold', 'resolved'), ('incident', 'closed')]
    >>> len({e["incident_id"] for e in out})
    1

    """

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._open: _Incident | None = None
        self._n_opened = 0

    @property
    def open_incident(self) -> str | None:
        """The id of the open incident, if any."""
        return None if self._open is None else self._open.incident_id

    @property
    def n_opened(self) -> int:
        """Incidents opened so far."""
        return self._n_opened

    def record(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give each alert its ``incident_id``; return the alerts with the incident events."""
        if not alerts:
            return alerts
        out: list[dict[str, Any]] = []
        for alert in alerts:
            identity = alert_identity(alert)
            incident = self._open
            if alert["status"] == "firing":
                if incident is None:
                    incident = self._open = _Incident(
                        incident_id=_digest("incident", self.model_id, alert["alert_id"]),
                        model_version=alert.get("model_version"),
                        opened_at=alert["detected_at"],
                        severity=alert["severity"],
                    )
                    self._n_opened += 1
                    self._note(incident, identity, alert)
                    out.append(self._event(incident, "opened", alert))
                    out.append(alert)
                    continue
                escalates = alert["severity"] == "critical" and incident.severity != "critical"
                self._note(incident, identity, alert)
                out.append(alert)
                if escalates:
                    incident.severity = "critical"
                    out.append(self._event(incident, "escalated", alert))
                continue
            # A resolve: of the open incident's alert, or of one opened before a restart that
            # lost the book (it still gets an id derived from the model).
            if incident is None or identity not in incident.alerts:
                alert["incident_id"] = _digest("incident", self.model_id, "unbooked")
                out.append(alert)
                continue
            self._note(incident, identity, alert)
            out.append(alert)
            if incident.firing == 0:
                out.append(self._event(incident, "closed", alert))
                self._open = None
        return out

    def _note(self, incident: _Incident, identity: Identity, alert: dict[str, Any]) -> None:
        alert["incident_id"] = incident.incident_id
        if alert["status"] == "firing" and alert["kind"] in _ATTRIBUTED:
            self._attribute(incident, alert)
        entry = incident.alerts[identity] = {
            "kind": alert["kind"],
            "detector": alert["detector"],
            "subject": identity[2],
            "severity": alert["severity"],
            "status": alert["status"],
            "alert_id": alert["alert_id"],
        }
        segment = alert.get("segment")
        if segment:
            entry["segment"] = segment
            named = segment_subject(segment)
            incident.segments[named] = segment
            rise = _error_rise(alert)
            if rise is not None and alert["status"] == "firing":
                incident.segment_rises[named] = max(rise, incident.segment_rises.get(named, rise))
        evidence = alert.get("evidence") or {}
        # The model's KPIs: a segment's KPI alerts measure only the segment.
        if (
            alert["kind"] == "kpi_threshold"
            and not segment
            and isinstance(evidence.get("kpis"), dict)
        ):
            incident.kpis_now = evidence["kpis"]
            if incident.kpis_at_open is None:
                incident.kpis_at_open = evidence["kpis"]
            reference = (alert.get("reference") or {}).get("kpis")
            if isinstance(reference, dict):
                incident.kpis_reference = reference
        if alert["status"] != "firing" or alert["kind"] not in (
            "data_drift",
            "prediction_drift",
            "data_quality",
        ):
            return
        p_value = evidence.get("p_value")
        score = (
            -math.log10(max(float(p_value), 1e-300)) if isinstance(p_value, float | int) else None
        )
        # A joint (multivariate) drift alert names no feature: its evidence lists them.
        names = [identity[2]] if alert.get("feature") is not None else evidence.get("features")
        for name in names if isinstance(names, list) else ():
            key = (alert["kind"], name)
            known = incident.features.get(key)
            if known is None or (score or 0.0) > (known.get("score") or 0.0):
                incident.features[key] = {
                    "feature": name,
                    "kind": alert["kind"],
                    "detector": alert["detector"],
                    "score": score,
                    "value": alert.get("value"),
                    "threshold": alert.get("threshold"),
                    "current": evidence.get("current_summary"),
                    "reference": (alert.get("reference") or {}).get("summary"),
                }

    def _attribute(self, incident: _Incident, alert: dict[str, Any]) -> None:
        """Why the KPI fell, on a firing KPI or concept-drift alert: the features whose drift
        alerts of the incident are firing now, ranked by evidence; the segments whose alerts are
        firing, by how far their error rose; and (from the KPI signal) the score range where
        the errors concentrate. Booked in event time, so it does not depend on how the input
        was read."""
        firing = {i for i, a in incident.alerts.items() if a["status"] == "firing"}
        joint = any(i[0] == "data_drift" and i[2] == "" for i in firing)
        features = [
            {k: f[k] for k in ("feature", "kind", "detector", "score")}
            for f in self._ranked_features(incident)
            if f["kind"] != "data_quality"
            and (
                any(i[0] == f["kind"] and i[2] == f["feature"] for i in firing)
                or (joint and f["detector"] == "spearman_correlation")
            )
        ]
        live = {i[2].partition("@")[2] for i in firing if "@" in i[2] and i[0] in _ATTRIBUTED}
        rises = sorted(
            ((rise, named) for named, rise in incident.segment_rises.items() if named in live),
            key=lambda item: (-item[0], item[1]),
        )
        segments = [
            {"segment": incident.segments[named], "error_rise": round(rise, 6)}
            for rise, named in rises
        ]
        evidence = alert.setdefault("evidence", {})
        attribution = {
            **(evidence.get("attribution") or {}),
            "features": features[:_ATTRIBUTION_LIMIT],
            "segments": segments[:_ATTRIBUTION_LIMIT],
        }
        evidence["attribution"] = attribution
        incident.attribution = attribution

    @staticmethod
    def _ranked_features(incident: _Incident) -> list[dict[str, Any]]:
        return sorted(
            incident.features.values(),
            # Drift features by their -log10 p first, then data-quality findings.
            key=lambda f: (f["score"] is None, -(f["score"] or 0.0), f["kind"], f["feature"]),
        )

    def _event(self, incident: _Incident, status: str, alert: dict[str, Any]) -> dict[str, Any]:
        features = self._ranked_features(incident)
        event: dict[str, Any] = {
            "schema_version": 1,
            "kind": "incident",
            "event_id": _digest(incident.incident_id, status, alert["alert_id"]),
            "incident_id": incident.incident_id,
            "model_id": self.model_id,
            "model_version": incident.model_version,
            "status": status,
            "severity": incident.severity,
            "opened_at": incident.opened_at,
            "closed_at": alert["detected_at"] if status == "closed" else None,
            "detected_at": alert["detected_at"],
            "kinds": sorted({identity[0] for identity in incident.alerts}),
            "alerts": [incident.alerts[i] for i in sorted(incident.alerts)],
            "firing": incident.firing,
            "features": features[:_FEATURE_LIMIT],
            "segments": [incident.segments[k] for k in sorted(incident.segments)],
            "attribution": incident.attribution,
            "kpis": {
                "reference": incident.kpis_reference,
                "at_open": incident.kpis_at_open,
                "now": incident.kpis_now,
            },
            "source": alert["source"],
        }
        if status == "closed":
            event["resolution"] = alert.get("resolution", "recovered")
        return event

    def __repr__(self) -> str:
        return f"IncidentBook(model_id={self.model_id!r}, open={self.open_incident!r})"


_ATTRIBUTED = ("kpi_threshold", "concept_drift")
_ATTRIBUTION_LIMIT = 5


def _error_rise(alert: dict[str, Any]) -> float | None:
    """How far a segment's error rose, as its alert measured it: the error rate over its rate
    before the change (concept drift), or the KPI's fall below its reference."""
    evidence = alert.get("evidence") or {}
    if alert["kind"] == "concept_drift":
        before, recent = evidence.get("error_rate_before"), evidence.get("error_rate_recent")
        if isinstance(before, float | int) and isinstance(recent, float | int):
            return float(recent) - float(before)
        return None
    reference = (alert.get("reference") or {}).get("value")
    value = alert.get("value")
    numbers = isinstance(reference, float | int) and isinstance(value, float | int)
    if alert["kind"] == "kpi_threshold" and numbers:
        return abs(float(reference) - float(value))  # type: ignore[arg-type]  # checked above
    return None
