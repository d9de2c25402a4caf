"""``Generation``: every signal driftline keeps for one version of one model, composed.

A generation lives as long as its model version: a new ``model_version`` starts a new one (see
``detectors.monitor.ModelMonitor``), with fresh references, baselines and detectors.

Prediction side (no labels needed): data drift per feature, prediction drift, data quality.
Label side (predictions joined with outcomes): concept drift on the error stream, rolling KPIs with
thresholds, label coverage and delay. Each signal feeds its own alert state machines, one per
(kind, detector, feature or metric); a transition becomes an alert event with its evidence.

Each signal is a class of ``detectors.signals`` that observes one kind of batch; a generation
learns the feature kinds, columnarizes each batch of predictions once for all prediction-side
signals, and calls every signal in a fixed order (the order of its alerts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from driftline.detectors.alerts import iso_ms
from driftline.detectors.batch import ExpiredBatch, LabeledBatch, PredictionBatch
from driftline.detectors.columns import FeatureKind, columnarize, infer_kinds
from driftline.detectors.events import FeatureValue, Source
from driftline.detectors.kpi import LabelTracker
from driftline.detectors.labels import label_key
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings
from driftline.detectors.signals import (
    ConceptSignal,
    DriftSignal,
    EstimatedPerformanceSignal,
    FeatureBatch,
    KpiSignal,
    OutputColumns,
    QualitySignal,
    Signal,
    SignalContext,
    Task,
    feature_columns,
)
from driftline.detectors.signals.base import rounded
from driftline.detectors.signals.kpis import record_coverage
from driftline.detectors.signals.segments import SegmentSignals
from driftline.detectors.trace import recorder

__all__ = ["Generation", "Task"]

NO_REGRESSION_ESTIMATE = (
    "not available for regression: direct loss estimation is not implemented, so a regression "
    "model's performance is known only where labels have arrived (kpis)"
)


class Generation:
    """All monitoring state of one version of one model.

    Parameters
    ----------
    model_id
        The model this monitor watches.
    settings
        Its effective settings (``defaults`` merged with its own block).
    profile
        Baseline profile when ``data_drift.reference`` is ``"profile"``.
    model_version
        The version this generation judges (None until a version is seen).

    Examples
    --------
    >>> from driftline.detectors.events import Labeled, Source
    >>> from driftline.detectors.settings import MonitorSettings
    >>> import random
    >>> rng = random.Random(7)
    >>> monitor = Generation("m", MonitorSettings())
    >>> def labeled(start, stop, accuracy):
    ...     events = []
    ...     for i in range(start, stop):
    ...         y = rng.random() < 0.5
    ...         pred = y if rng.random() < accuracy else not y
    ...         source = Source("o", 0, i)
    ...         events.append(Labeled(str(i), "m", None, int(pred), None, int(y), i, i, source))
    ...     return LabeledBatch.from_events(events)
    >>> alerts = monitor.observe_labeled(labeled(0, 4000, 0.95))
    >>> alerts
    []
    >>> alerts = monitor.observe_labeled(labeled(4000, 6000, 0.70))
    >>> sorted({(a["kind"], a["severity"], a["status"]) for a in alerts})[:2]
    [('concept_drift', 'critical', 'firing'), ('kpi_threshold', 'critical', 'firing')]
    """

    def __init__(
        self,
        model_id: str,
        settings: MonitorSettings,
        profile: ModelProfile | None = None,
        model_version: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.settings = settings
        self.profile = profile
        self._context = SignalContext(model_id, settings, model_version)
        self._task: Task | None = None if settings.task == "auto" else settings.task
        self._n_predictions = 0
        self._n_labeled = 0
        # Prediction side.
        self._kinds: dict[str, FeatureKind] = {}
        self._data_drift = (
            DriftSignal(
                self._context,
                "data_drift",
                settings.data_drift,
                profile,
                feature_columns,
                joint=settings.multivariate_drift if settings.multivariate_drift.enabled else None,
            )
            if settings.data_drift.enabled
            else None
        )
        self._prediction_drift: DriftSignal | None = None
        if settings.prediction_drift.enabled:
            output, output_reference = OutputColumns.from_profile(
                profile if settings.prediction_drift.reference == "profile" else None
            )
            self._prediction_drift = DriftSignal(
                self._context,
                "prediction_drift",
                settings.prediction_drift,
                output_reference,
                output,
            )
        # Quality reads the data-drift reference (one per model, filled once); only without
        # one (data drift disabled or sliding) does it make its own, of the same size.
        shared = None if self._data_drift is None else self._data_drift.monitor.feature_reference
        self._quality = (
            QualitySignal(self._context, profile, shared) if settings.data_quality.enabled else None
        )
        self._estimated = (
            _estimated_signal(self._context, profile)
            if settings.estimated_performance.enabled and settings.task != "regression"
            else None
        )
        # In the order their alerts are reported.
        self._prediction_signals: tuple[Signal[FeatureBatch], ...] = tuple(
            signal
            for signal in (self._data_drift, self._prediction_drift, self._quality, self._estimated)
            if signal is not None
        )
        # Label side, started when the task kind is known. Label coverage and delay describe
        # the outcome feed: tracked from the start (expiries), for the snapshot and the KPIs.
        self._labels = LabelTracker(size=settings.kpis.size)
        self._concept: ConceptSignal | None = None
        self._kpis: KpiSignal | None = None
        self._segments: SegmentSignals | None = None
        self._label_signals: tuple[Signal[LabeledBatch], ...] = ()

    # -- properties --------------------------------------------------------------------------

    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def n_predictions(self) -> int:
        return self._n_predictions

    @property
    def n_labeled(self) -> int:
        return self._n_labeled

    @property
    def firing(self) -> frozenset[tuple[str, str, str, str]]:
        """(kind, detector, feature or metric, severity) of every alert now firing."""
        return self._context.book.firing

    @property
    def model_version(self) -> str | None:
        return self._context.model_version

    @model_version.setter
    def model_version(self, version: str | None) -> None:
        self._context.model_version = version

    # -- prediction side -----------------------------------------------------------------------

    def observe_predictions(self, predictions: PredictionBatch) -> list[dict[str, Any]]:
        if not predictions.n:
            return []
        self._n_predictions += predictions.n
        rows = predictions.rows
        self._learn_kinds(rows)
        batch = FeatureBatch(predictions, columnarize(rows, self._kinds), self._kinds)
        alerts: list[dict[str, Any]] = []
        for signal in self._prediction_signals:
            alerts.extend(signal.observe(batch))
        return alerts

    def _learn_kinds(self, rows: Sequence[dict[str, FeatureValue]]) -> None:
        # A feature's kind is fixed by the first batch it appears in; later type changes show up
        # as type mismatches (data quality), not as a silently re-typed feature.
        if self.profile is not None and not self._kinds:
            self._kinds.update(self.profile.kinds())
        unknown = set().union(*rows).difference(self._kinds)
        if unknown:
            inferred = infer_kinds(rows, names=unknown)
            for name in sorted(inferred):
                self._kinds[name] = inferred[name]

    # -- label side ------------------------------------------------------------------------------

    def observe_labeled(self, labeled: LabeledBatch) -> list[dict[str, Any]]:
        if not labeled.n:
            return []
        if self._task is None:
            self._task = _infer_task(labeled.labels[0], labeled.predictions[0])
        if self._kpis is None:
            self._start_label_side(self._task)
        # The KPI signal feeds the label tracker, in step with its cadence.
        alerts: list[dict[str, Any]] = []
        for signal in self._label_signals:
            alerts.extend(signal.observe(labeled))
        if self._estimated is not None and self._task == "classification":
            self._estimated.observe_labeled(labeled)
        self._n_labeled += labeled.n
        return alerts

    def observe_expired(self, predictions: ExpiredBatch) -> list[dict[str, Any]]:
        """Predictions whose outcome never came: they lower label coverage."""
        if predictions.n:
            self._labels.update_expired(predictions.n, predictions.timestamps)
            record = recorder()
            if record is not None:
                last_ms = int(predictions.timestamps[-1])
                record_coverage(record, self._context, self._labels, last_ms)
        return []

    def _start_label_side(self, task: Task) -> None:
        if self.settings.concept_drift.enabled:
            self._concept = ConceptSignal(self._context, task)
        self._kpis = KpiSignal(self._context, task, self._labels)
        if self.settings.segments:
            self._segments = SegmentSignals(self._context, task)
        # In the order their alerts are reported.
        self._label_signals = tuple(
            signal for signal in (self._concept, self._kpis, self._segments) if signal is not None
        )

    # -- shared ----------------------------------------------------------------------------------

    def _estimated_snapshot(self) -> dict[str, Any] | None:
        if self._task == "regression" and self.settings.estimated_performance.enabled:
            return {"available": False, "reason": NO_REGRESSION_ESTIMATE}
        return None if self._estimated is None else self._estimated.snapshot()

    def close(self, trigger_ms: int, source: Source, successor: str | None) -> list[dict[str, Any]]:
        """Resolve every firing alert as superseded: a new model version took over.

        Each resolve says which version superseded it; the generation is not judged again.
        """
        if self._concept is not None:
            self._concept.close()
        if self._segments is not None:
            self._segments.close()
        for drift in (self._data_drift, self._prediction_drift):
            if drift is not None:
                drift.close()
        return self._context.book.supersede(trigger_ms, source, successor, self.model_version)

    def kpi_snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self._kpis is not None:
            values.update(self._kpis.metrics())
        values.update(self._labels.metrics())
        span = None if self._kpis is None else self._kpis.window_span_ms
        reference = None if self._kpis is None else self._kpis.reference_values
        return {
            "schema_version": 1,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "task": self._task,
            "predictions": self._n_predictions,
            "labeled": self._n_labeled,
            "window": {
                "size": int(values.get("n") or 0),
                "first_event_time": None if span is None else iso_ms(span[0]),
                "last_event_time": None if span is None else iso_ms(span[1]),
            },
            "kpis": rounded(values),
            "reference": None if reference is None else rounded(reference),
            "estimated": self._estimated_snapshot(),
            "segments": None if self._segments is None else self._segments.snapshot(),
            "firing": sorted("/".join(k) for k in self._context.book.firing),
        }


def _infer_task(label: object, prediction: object) -> Task:
    for value in (label, prediction):
        if isinstance(value, float) and not value.is_integer():
            return "regression"
    return "classification"


def _estimated_signal(
    context: SignalContext, profile: ModelProfile | None
) -> EstimatedPerformanceSignal:
    """Estimated performance, with the profile's calibration when it is for the model's
    positive class."""
    calibration = None if profile is None else profile.calibration
    if calibration is None:
        return EstimatedPerformanceSignal(context, None)
    positive = context.settings.positive_label
    if label_key(calibration.positive_label) != label_key(positive):
        return EstimatedPerformanceSignal(
            context,
            None,
            note=f"the profile's calibration is for positive label "
            f"{calibration.positive_label!r}, not {positive!r}: scores taken as calibrated",
        )
    return EstimatedPerformanceSignal(context, calibration)
