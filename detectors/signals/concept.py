"""``ConceptSignal``: concept drift, a change point in the model's error stream.

The errors of labelled predictions (misclassified or not; absolute or squared error) feed a
:class:`~detectors.concept.ConceptDriftDetector`; its change points fire a
:class:`~detectors.recovery.ChangePointAlertState`, which resolves when a CUSUM test finds the
error rate back at its level before the change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.detectors.batch import LabeledBatch
from driftline.detectors.concept import ConceptDriftDetector
from driftline.detectors.recovery import ChangePointAlertState, ChangeSignal
from driftline.detectors.signals.base import SignalContext, Task, numbers

__all__ = ["ConceptSignal"]


class ConceptSignal:
    """Concept drift on the error stream of labelled predictions: one alert.

    Parameters
    ----------
    context
        The generation's shared context (``concept_drift`` enabled in its settings).
    task
        The model's task: its errors are 0/1 for a classifier, losses for a regressor.
    """

    def __init__(self, context: SignalContext, task: Task) -> None:
        self.context = context
        self.task = task
        s = context.settings.concept_drift
        binary = task == "classification"
        self._detector = ConceptDriftDetector(s.detector, dict(s.params), binary_input=binary)
        self._alerts = ChangePointAlertState(s.false_resolve_rate, binary=binary)
        self._n_seen = 0  # labelled events observed before this batch

    def observe(self, batch: LabeledBatch) -> list[dict[str, Any]]:
        alerts = self._on_errors(self._errors(batch), batch)
        self._n_seen += batch.n
        return alerts

    def close(self) -> None:
        """Stop judging recoveries: the generation is superseded."""
        self._alerts.close()

    def _errors(self, labeled: LabeledBatch) -> np.ndarray:
        if self.task == "classification":
            return (~labeled.correct).astype(np.float64)
        diff = numbers(labeled.predictions) - numbers(labeled.labels)
        loss: np.ndarray = (
            np.abs(diff) if self.context.settings.concept_drift.loss == "absolute" else diff**2
        )
        return loss

    def _on_errors(self, errors: np.ndarray, batch: LabeledBatch) -> list[dict[str, Any]]:
        settings = self.context.settings.concept_drift
        finite = np.isfinite(errors)
        kept = errors[finite]
        signals = self._detector.update(kept)
        positions = np.flatnonzero(finite)
        by_index = {s.index: s for s in signals}
        transitions = self._alerts.update(
            kept, [ChangeSignal(s.index, s.severity, s.error_before) for s in signals]
        )
        alerts = []
        name = settings.detector
        for index, transition in transitions:
            at = int(positions[index])
            trigger_ms = int(batch.labeled_at[at])
            evidence: dict[str, Any] = {
                "detector": name,
                "params": dict(settings.params),
            }
            signal = by_index.get(index) if transition.status == "firing" else None
            recovery = (
                None
                if transition.status == "firing"
                else self._alerts.resolved_by(transition.severity)
            )
            if signal is not None:
                evidence.update(
                    error_rate_before=signal.error_before,
                    error_rate_recent=signal.error_recent,
                    n_before=signal.n_before,
                )
            if recovery is not None:
                evidence.update(
                    recovery_test="cusum",
                    error_rate_before=recovery.rate_before,
                    error_rate_degraded=recovery.rate_degraded,
                    error_rate_recent=recovery.rate_recent,
                    statistic=recovery.statistic,
                    statistic_threshold=recovery.threshold,
                    false_resolve_rate=settings.false_resolve_rate,
                    labeled_since_firing=recovery.n_since_firing,
                )
            value = (
                signal.error_recent
                if signal is not None
                else (recovery.rate_recent if recovery is not None else None)
            )
            alerts.append(
                self.context.alert(
                    "concept_drift",
                    transition,
                    detector=name,
                    metric="error_rate",
                    value=value,
                    threshold=transition.threshold,
                    window=(self._n_seen + at + 1, None, trigger_ms),
                    reference={"error_rate": transition.threshold},
                    evidence=evidence,
                    trigger_ms=trigger_ms,
                    source=batch.sources.at(at),
                )
            )
        return alerts
