"""Alert events (``schemas/alert.v1.json``) with deterministic ids."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from driftline.detectors.events import Source

AlertKind = Literal[
    "concept_drift",
    "data_drift",
    "prediction_drift",
    "kpi_threshold",
    "data_quality",
    "estimated_performance",
]


def iso_ms(timestamp_ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds: the only time format driftline writes."""
    if timestamp_ms is None:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


AlertIdentity = tuple[str, str, str, str]
"""(kind, detector, feature or metric, severity): what alternates firing, resolved per model."""


def segment_subject(segment: Mapping[str, str] | None) -> str:
    """How a segment enters an alert's identity: ``"key=value"`` ("" for the whole model)."""
    if not segment:
        return ""
    return ",".join(f"{key}={value}" for key, value in sorted(segment.items()))


def subject_of(
    feature: str | None, metric: str | None, segment: Mapping[str, str] | None = None
) -> str:
    """The subject of an alert identity: its feature or metric, and its segment after ``@``."""
    subject = feature if feature is not None else (metric or "")
    return f"{subject}@{segment_subject(segment)}" if segment else subject


def alert_identity(alert: Mapping[str, Any]) -> AlertIdentity:
    """The identity of an alert event."""
    subject = subject_of(alert.get("feature"), alert.get("metric"), alert.get("segment"))
    return (alert["kind"], alert["detector"], subject, alert["severity"])


def alert_id(
    *,
    model_id: str,
    kind: str,
    detector: str,
    subject: str,
    severity: str,
    status: str,
    source: Source,
) -> str:
    """Same input, same id: the id hashes what changed and the event that changed it."""
    text = "\x1f".join(
        (
            model_id,
            kind,
            detector,
            subject,
            severity,
            status,
            source.topic,
            str(source.partition),
            str(source.offset),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def make_alert(
    *,
    model_id: str,
    model_version: str | None,
    kind: AlertKind,
    status: Literal["firing", "resolved"],
    severity: Literal["warning", "critical"],
    detector: str,
    feature: str | None = None,
    metric: str | None = None,
    value: float | None,
    threshold: float | None,
    window_size: int,
    first_ms: int | None,
    last_ms: int | None,
    reference: dict[str, Any],
    evidence: dict[str, Any],
    detected_ms: int,
    source: Source,
    resolution: Literal["recovered", "superseded"] | None = None,
    segment: dict[str, str] | None = None,
) -> dict[str, Any]:
    subject = subject_of(feature, metric, segment)
    alert: dict[str, Any] = {
        "schema_version": 1,
        "alert_id": alert_id(
            model_id=model_id,
            kind=kind,
            detector=detector,
            subject=subject,
            severity=severity,
            status=status,
            source=source,
        ),
        "model_id": model_id,
        "model_version": model_version,
        "kind": kind,
        "status": status,
        "severity": severity,
        "detector": detector,
    }
    if feature is not None:
        alert["feature"] = feature
    if metric is not None:
        alert["metric"] = metric
    if segment is not None:
        alert["segment"] = dict(segment)
    alert.update(
        value=finite_or_none(value),
        threshold=finite_or_none(threshold),
        window={
            "size": int(window_size),
            "first_event_time": iso_ms(first_ms),
            "last_event_time": iso_ms(last_ms),
        },
        reference=reference,
        evidence=evidence,
        detected_at=iso_ms(detected_ms),
        source={"topic": source.topic, "partition": source.partition, "offset": source.offset},
    )
    if resolution is not None:
        alert["resolution"] = resolution
    return alert
