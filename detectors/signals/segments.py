"""``SegmentSignals``: the label-side signals of every segment of a model, each on its own events.

A model with ``segments: [region]`` judges every value of ``region`` on its own: its own
concept-drift detector and KPI thresholds, fed the labelled events whose prediction carried that
value, with the alert contract of the whole model. A region that loses its accuracy while the
model as a whole barely moves is named on the alert (``segment: {"region": "eu"}``).

- **One book.** Segment alerts go to the generation's alert book under identities of their own
  (the segment is part of the identity and of the ``alert_id``), so they open, join and close the
  model's incidents like any other alert.
- **Bounded.** At most ``max_segments_per_key`` values per key are judged on their own, first
  come; later values are pooled as ``__other__`` (:attr:`SegmentSignals.n_pooled` counts their
  events).
- **No cry-wolf with many segments.** With ``m = len(segments) * (max_segments_per_key + 1)``
  segments that can be judged, each one's ADWIN ``delta`` is the model's divided by ``m`` and
  each KPI threshold's one-sided error ``1 - confidence`` is divided by ``m`` (Bonferroni): the
  chance that any segment false-alarms is at most the model's own.
- **Too few events are not judged.** A segment's KPI thresholds need their ``min_samples``
  labelled events of that segment in its window (200 by default), and its relative levels need
  its own reference (the first ``kpis.reference_size`` of its labelled events).
"""

from __future__ import annotations

from typing import Any

from driftline.detectors.alerting import AlertRule, Transition
from driftline.detectors.alerts import AlertKind, segment_subject
from driftline.detectors.batch import LabeledBatch
from driftline.detectors.book import AlertBook, Identity
from driftline.detectors.concept import default_params
from driftline.detectors.kpi import LabelTracker
from driftline.detectors.settings import MonitorSettings
from driftline.detectors.signals.base import SignalContext, Task
from driftline.detectors.signals.concept import ConceptSignal
from driftline.detectors.signals.kpis import KpiSignal

__all__ = ["OTHER", "SegmentSignals", "segment_settings"]

OTHER = "__other__"


def segment_settings(settings: MonitorSettings) -> MonitorSettings:
    """The settings a segment is judged with: the model's, with every false-alarm rate divided
    by the number of segments that can be judged."""
    m = len(settings.segments) * (settings.max_segments_per_key + 1)
    concept = settings.concept_drift
    params = dict(concept.params)
    if concept.detector == "adwin":
        delta = params.get("delta", default_params("adwin")["delta"])
        params["delta"] = float(delta) / m  # type: ignore[arg-type]  # a number, validated
    thresholds = [
        t.model_copy(update={"confidence": 1.0 - (1.0 - t.confidence) / m})
        for t in settings.kpis.thresholds
    ]
    return settings.model_copy(
        update={
            "concept_drift": concept.model_copy(update={"params": params}),
            "kpis": settings.kpis.model_copy(update={"thresholds": thresholds}),
        }
    )


class _SegmentBook:
    """The generation's alert book as one segment's signals see it: their identities and alerts
    carry the segment."""

    def __init__(self, book: AlertBook, segment: dict[str, str]) -> None:
        self._book = book
        self.segment = segment
        self._suffix = segment_subject(segment)

    def transitions(
        self, identity: Identity, rule: AlertRule, value: float, n_samples: int, se: float = 0.0
    ) -> list[Transition]:
        return self._book.transitions(self._scoped(identity), rule, value, n_samples, se)

    def firing_rule(self, identity: Identity) -> AlertRule | None:
        return self._book.firing_rule(self._scoped(identity))

    def _scoped(self, identity: Identity) -> Identity:
        kind, detector, subject = identity
        return (kind, detector, f"{subject}@{self._suffix}")

    def alert(self, kind: AlertKind, transition: Transition, **fields: Any) -> dict[str, Any]:
        return self._book.alert(kind, transition, segment=self.segment, **fields)


class _SegmentContext(SignalContext):
    """A generation's context for the signals of one segment: its settings, and the shared
    book seen through the segment."""

    def __init__(
        self, parent: SignalContext, settings: MonitorSettings, segment: dict[str, str]
    ) -> None:
        self._parent = parent
        self.model_id = parent.model_id
        self.settings = settings
        # The signals use the book's transitions, firing_rule and alert only: the segment's
        # view has exactly those.
        self.book = _SegmentBook(parent.book, segment)  # type: ignore[assignment]
        self._rules = {}

    @property
    def model_version(self) -> str | None:
        return self._parent.model_version

    @model_version.setter
    def model_version(self, version: str | None) -> None:
        self._parent.model_version = version


class _Segment:
    """The label-side signals of one segment value."""

    def __init__(self, context: _SegmentContext, task: Task) -> None:
        settings = context.settings
        self.concept = ConceptSignal(context, task) if settings.concept_drift.enabled else None
        self.kpis = (
            KpiSignal(context, task, LabelTracker(size=settings.kpis.size))
            if settings.kpis.enabled
            else None
        )

    def observe(self, batch: LabeledBatch) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        for signal in (self.concept, self.kpis):
            if signal is not None:
                alerts.extend(signal.observe(batch))
        return alerts

    def close(self) -> None:
        if self.concept is not None:
            self.concept.close()


class SegmentSignals:
    """Concept drift and KPI thresholds per segment value of a model's labelled events.

    Parameters
    ----------
    context
        The generation's shared context; ``context.settings.segments`` names the keys.
    task
        The model's task.
    """

    def __init__(self, context: SignalContext, task: Task) -> None:
        self.context = context
        self.task = task
        self._settings = segment_settings(context.settings)
        self._segments: dict[str, dict[str, _Segment]] = {k: {} for k in context.settings.segments}
        self._n_pooled = 0

    @property
    def n_pooled(self) -> int:
        """Labelled events of values beyond ``max_segments_per_key``, judged as ``__other__``."""
        return self._n_pooled

    @property
    def values(self) -> dict[str, list[str]]:
        """The values judged on their own, per key, in the order they came."""
        return {key: list(values) for key, values in self._segments.items()}

    def observe(self, batch: LabeledBatch) -> list[dict[str, Any]]:
        segments = batch.segments
        if segments is None:
            return []
        alerts: list[dict[str, Any]] = []
        for key, known in self._segments.items():
            rows: dict[str, list[int]] = {}
            for i, segment in enumerate(segments):
                value = None if segment is None else segment.get(key)
                if value is not None:
                    rows.setdefault(value, []).append(i)
            judged: dict[str, list[int]] = {}
            for value, at in rows.items():  # first come, first judged on its own
                target = value
                if value not in known and len(known) >= self.context.settings.max_segments_per_key:
                    self._n_pooled += len(at)
                    target = OTHER
                if target not in known:
                    known[target] = self._segment(key, target)
                judged.setdefault(target, []).extend(at)
            for value in sorted(judged):
                alerts.extend(known[value].observe(batch.select(sorted(judged[value]))))
        return alerts

    def snapshot(self) -> dict[str, Any]:
        """The values judged on their own per key, and the labelled events pooled."""
        return {"values": self.values, "pooled_events": self._n_pooled}

    def close(self) -> None:
        for known in self._segments.values():
            for segment in known.values():
                segment.close()

    def _segment(self, key: str, value: str) -> _Segment:
        return _Segment(_SegmentContext(self.context, self._settings, {key: value}), self.task)

