"""``EstimatedPerformanceSignal``: a classifier's accuracy estimated from its scores, no label.

Each evaluation of its :class:`~detectors.estimated.PerformanceEstimator` compares the window's
expected accuracy with the reference's (the first ``reference_size`` scored predictions); an
``estimated_performance`` alert fires when the drop is past a level beyond its standard error,
and resolves when it is back past it by the same margin, like a KPI threshold. Its evidence has
every expected metric, the band the window's realized accuracy should fall in, and how the
scores were calibrated. Labelled predictions, when they come, check the estimate: the KPI
snapshot reports its error against the realized accuracy of the same predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.alerting import AlertRule
from driftline.detectors.batch import LabeledBatch
from driftline.detectors.estimated import (
    Estimate,
    EstimateCheck,
    IsotonicCalibrator,
    PerformanceEstimator,
    chance_right,
)
from driftline.detectors.labels import is_positive, label_key
from driftline.detectors.signals.base import (
    FeatureBatch,
    SignalContext,
    positive_scores,
    rounded,
    z_quantile,
)
from driftline.detectors.trace import recorder

__all__ = ["DETECTOR", "EstimatedPerformanceSignal"]

DETECTOR = "cbpe"
_IDENTITY = ("estimated_performance", DETECTOR, "accuracy")


class EstimatedPerformanceSignal:
    """Confidence-based performance estimation of a binary classifier, as alerts.

    Parameters
    ----------
    context
        The generation's shared context (settings ``estimated_performance``, ``positive_label``).
    calibrator
        The calibration of the scores learnt on labelled reference data (a profile's), or None:
        the scores are taken as calibrated, and the alerts say so.
    note
        Why there is no calibrator, when there is a reason to say (e.g. the profile's is for
        another positive class).
    """

    def __init__(
        self,
        context: SignalContext,
        calibrator: IsotonicCalibrator | None,
        note: str = "no labelled reference: scores taken as calibrated",
    ) -> None:
        self.context = context
        self.calibrator = calibrator
        self.note = note
        s = context.settings.estimated_performance
        self._positive = label_key(context.settings.positive_label)
        self._estimator = PerformanceEstimator(
            reference_size=s.reference_size,
            window_size=s.window_size,
            every=s.every,
            min_samples=s.min_samples,
            calibrator=calibrator,
        )
        self._rule: AlertRule | None = None  # levels below the reference, once it is known
        self._check = EstimateCheck(size=context.settings.kpis.size)

    @property
    def estimator(self) -> PerformanceEstimator:
        return self._estimator

    @property
    def calibration(self) -> dict[str, Any]:
        """How the scores become probabilities, as the alerts and snapshots state it."""
        if self.calibrator is None:
            return {"method": "assumed", "note": self.note}
        return {"method": "isotonic", "labelled_events": self.calibrator.n}

    def snapshot(self) -> dict[str, Any]:
        """The latest estimate, the reference, and the estimate's error against labels."""
        latest = self._estimator.latest
        reference = self._estimator.reference
        return {
            "available": True,
            "calibration": self.calibration,
            "window": None if latest is None else latest.n,
            "kpis": None if latest is None else rounded(latest.metrics),
            "reference": None if reference is None else rounded(reference),
            "against_labels": self._check.summary(),
        }

    def observe_labeled(self, batch: LabeledBatch) -> None:
        """Check the estimate on labelled predictions: each one's expected chance of being
        right against whether it was."""
        p = self._estimator.probabilities(positive_scores(batch.scores, self._positive))
        predicted = is_positive(batch.predictions, self._positive)
        self._check.update(chance_right(p, predicted), batch.correct)

    def observe(self, batch: FeatureBatch) -> list[dict[str, Any]]:
        predictions = batch.predictions
        scores = positive_scores(predictions.scores, self._positive)
        if np.isnan(scores).all():
            return []
        predicted = is_positive(predictions.predictions, self._positive)
        alerts: list[dict[str, Any]] = []
        for estimate in self._estimator.update(scores, predicted, predictions.timestamps):
            alerts.extend(self._on_estimate(estimate, batch))
        return alerts

    def _on_estimate(self, estimate: Estimate, batch: FeatureBatch) -> list[dict[str, Any]]:
        settings = self.context.settings.estimated_performance
        reference = estimate.reference["accuracy"]
        if self._rule is None:
            self._rule = AlertRule(
                direction="below",
                warning=None if settings.warning is None else reference - settings.warning,
                critical=None if settings.critical is None else reference - settings.critical,
                z=z_quantile(settings.confidence),
                min_samples=settings.min_samples,
                for_updates=settings.for_evaluations,
                resolve_updates=settings.resolve_evaluations,
            )
        rule = self._rule
        value, se = estimate.metrics["accuracy"], estimate.accuracy_se
        record = recorder()
        if record is not None:
            record(
                self.context.point(
                    int(batch.predictions.timestamps[estimate.index]),
                    "estimated",
                    "accuracy",
                    value,
                    warning=rule.warning,
                    critical=rule.critical,
                    reference=reference,
                )
            )
        transitions = self.context.book.transitions(_IDENTITY, rule, value, estimate.n, se)
        if not transitions:
            return []
        predictions = batch.predictions
        trigger_ms = int(predictions.timestamps[estimate.index])
        half = rule.z * estimate.realized_se
        alerts = []
        for transition in transitions:
            sign = 1 if transition.status == "firing" else -1
            alerts.append(
                self.context.alert(
                    "estimated_performance",
                    transition,
                    detector=DETECTOR,
                    metric="accuracy",
                    value=value,
                    threshold=transition.threshold,
                    window=(estimate.n, estimate.first_ms, estimate.last_ms),
                    reference={
                        "value": reference,
                        "size": estimate.n_reference,
                        "estimated": rounded(estimate.reference),
                    },
                    evidence={
                        "estimated": rounded(estimate.metrics),
                        "standard_error": se,
                        "confidence": settings.confidence,
                        "bound": value + sign * rule.z * se,
                        "band": [max(0.0, value - half), min(1.0, value + half)],
                        "calibration": self.calibration,
                        "min_samples": settings.min_samples,
                        "resolve_evaluations": settings.resolve_evaluations,
                    },
                    trigger_ms=trigger_ms,
                    source=predictions.sources.at(estimate.index),
                )
            )
        return alerts
