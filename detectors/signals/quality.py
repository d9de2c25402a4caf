"""``QualitySignal``: data-quality rates of every feature against their levels.

Null, type-mismatch, out-of-range and unseen-category rates over a rolling window, from the
generation's :class:`~detectors.quality.QualityMonitor`; an alert per (rate, feature) fires
when a rate's confidence bound passes its level (absolute, or above the reference's rate).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

from driftline.detectors.quality import QualityMeasure, QualityMonitor
from driftline.detectors.reference import FeatureReference, ModelProfile
from driftline.detectors.signals.base import FeatureBatch, SignalContext
from driftline.detectors.trace import TracePoint, recorder

__all__ = ["QualitySignal"]

_QUALITY_METRICS = ("null_rate", "type_mismatch_rate", "out_of_range_rate", "unseen_category_rate")


class QualitySignal:
    """Data-quality rates of the features, one alert per (rate, feature).

    Parameters
    ----------
    context
        The generation's shared context (``data_quality`` enabled in its settings).
    profile
        The training profile, if any: the reference when data drift's is ``"profile"`` and
        there is no shared reference.
    shared_reference
        Data drift's feature reference, read rather than kept twice (None: make one of the
        same size).
    """

    def __init__(
        self,
        context: SignalContext,
        profile: ModelProfile | None = None,
        shared_reference: FeatureReference | None = None,
    ) -> None:
        self.context = context
        self.profile = profile
        self.shared_reference = shared_reference
        settings = context.settings
        q = settings.data_quality
        self._monitor = QualityMonitor(
            window_size=q.window_size,
            every=q.every,
            profile=profile
            if settings.data_drift.reference == "profile" and shared_reference is None
            else None,
            reference_size=settings.data_drift.reference_size,
            shared_reference=shared_reference,
        )

    @property
    def monitor(self) -> QualityMonitor:
        """The monitor that measures the rates."""
        return self._monitor

    @cached_property
    def _lowest(self) -> dict[str, float]:
        """The lowest level of each quality rate that has one: settings never change."""
        q = self.context.settings.data_quality
        return {
            metric: min(v for v in (levels.warning, levels.critical) if v is not None)
            for metric in _QUALITY_METRICS
            if (levels := getattr(q, metric)).warning is not None or levels.critical is not None
        }

    def _point(self, measure: QualityMeasure, time_ms: int, base: float) -> TracePoint:
        levels = getattr(self.context.settings.data_quality, measure.metric)
        return self.context.point(
            time_ms,
            "data_quality",
            measure.feature,
            measure.value,
            warning=None if levels.warning is None else base + levels.warning,
            critical=None if levels.critical is None else base + levels.critical,
            reference=measure.reference_value,
            metric=measure.metric,
        )

    def observe(self, batch: FeatureBatch) -> list[dict[str, Any]]:
        q = self.context.settings.data_quality
        lowest = self._lowest
        book = self.context.book
        predictions = batch.predictions
        alerts = []
        record = recorder()
        for measure in self._monitor.update(batch.columns, batch.kinds, predictions.timestamps):
            level = lowest.get(measure.metric)
            if level is None:
                continue
            if q.relative and measure.reference_value is None:
                continue  # relative levels: nothing to be relative to before the reference
            base = (measure.reference_value or 0.0) if q.relative else 0.0
            if record is not None:
                record(self._point(measure, int(predictions.timestamps[measure.index]), base))
            if (
                measure.value <= base + level
                and ("data_quality", measure.metric, measure.feature) not in book
            ):
                # At or below its lowest level a rate cannot breach it (its bound lies lower
                # still), and without a state there is nothing to resolve: most measures.
                continue
            levels = getattr(q, measure.metric)
            rule = self.context.rule(
                ("data_quality", measure.metric, base), levels=levels, base=base
            )
            rate = measure.value
            se = math.sqrt(max(rate * (1.0 - rate), 0.0) / measure.n) if measure.n else math.nan
            transitions = book.transitions(
                ("data_quality", measure.metric, measure.feature), rule, rate, measure.n, se
            )
            if not transitions:
                continue
            trigger_ms = int(predictions.timestamps[measure.index])
            for transition in transitions:
                alerts.append(
                    self.context.alert(
                        "data_quality",
                        transition,
                        detector=measure.metric,
                        feature=measure.feature,
                        value=measure.value,
                        threshold=transition.threshold,
                        window=(measure.n, None, trigger_ms),
                        reference={"rate": measure.reference_value, "relative": q.relative},
                        evidence={
                            "metric": measure.metric,
                            "rate": measure.value,
                            "standard_error": se,
                            "confidence": q.confidence,
                            "window_events": measure.n,
                        },
                        trigger_ms=trigger_ms,
                        source=predictions.sources.at(measure.index),
                    )
                )
        return alerts
