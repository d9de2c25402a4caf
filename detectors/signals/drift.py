"""``DriftSignal``: data drift on the feature columns, or prediction drift on the model output.

Each evaluation of the signal's :class:`~detectors.data_drift.DataDriftMonitor` tests every
column against the reference; an alert per (test, column) fires on ``-log10(p)`` above the
corrected level, and resolves only on evaluations that look like the reference and whose data
differ from what the column looked like when it drifted (:class:`DriftedSample`). With
``multivariate_drift`` on, data drift also raises one joint alert (no ``feature``, detector
``spearman_correlation``) when the rank correlation of a pair of numeric features changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from driftline.detectors.alerting import AlertRule
from driftline.detectors.alerts import AlertKind
from driftline.detectors.batch import PredictionBatch
from driftline.detectors.columns import FeatureColumns, FeatureKind
from driftline.detectors.data_drift import DataDriftMonitor, DriftEvaluation
from driftline.detectors.multivariate import CorrelationTest
from driftline.detectors.recovery import DriftedSample
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import DriftSettings, MultivariateDriftSettings
from driftline.detectors.signals.base import FeatureBatch, SignalContext
from driftline.detectors.trace import Series, TracePoint, recorder

__all__ = ["ColumnSource", "DriftSignal", "drift_monitor", "feature_columns"]

_EVIDENCE_FEATURES = 10
JOINT_DETECTOR = "spearman_correlation"


class ColumnSource(Protocol):
    """Which columns a drift signal tests."""

    def __call__(self, batch: FeatureBatch) -> tuple[FeatureColumns, Mapping[str, FeatureKind]]:
        """The columns to test in ``batch``, and their kinds."""


def feature_columns(batch: FeatureBatch) -> tuple[FeatureColumns, Mapping[str, FeatureKind]]:
    """The columns of data drift: every feature."""
    return batch.columns, batch.kinds


class DriftSignal:
    """Drift of a set of columns against their reference, one alert per (test, column).

    Parameters
    ----------
    context
        The generation's shared context.
    kind
        ``"data_drift"`` or ``"prediction_drift"``: the alert kind, and which settings apply.
    settings
        That signal's settings (enabled).
    profile
        The baseline profile of its columns when ``settings.reference`` is ``"profile"``.
    columns
        The columns it tests in each batch.
    joint
        The multivariate test's settings, or None for none (prediction drift).
    """

    def __init__(
        self,
        context: SignalContext,
        kind: AlertKind,
        settings: DriftSettings,
        profile: ModelProfile | None,
        columns: ColumnSource,
        *,
        joint: MultivariateDriftSettings | None = None,
    ) -> None:
        self.context = context
        self.kind = kind
        self.settings = settings
        self.profile = profile
        self.columns = columns
        self.joint = joint
        self._monitor = drift_monitor(settings, profile, joint)
        # What each firing alert's column looked like, to test a recovery against.
        self._drifted: dict[tuple[str, str], DriftedSample] = {}

    @property
    def monitor(self) -> DataDriftMonitor:
        """The drift monitor that evaluates the columns."""
        return self._monitor

    def observe(self, batch: FeatureBatch) -> list[dict[str, Any]]:
        columns, kinds = self.columns(batch)
        predictions = batch.predictions
        alerts: list[dict[str, Any]] = []
        for evaluation in self._monitor.update(columns, kinds, predictions.timestamps):
            alerts.extend(self._on_evaluation(evaluation, predictions))
            if evaluation.joint is not None:
                alerts.extend(self._on_joint(evaluation, evaluation.joint, predictions))
        return alerts

    def close(self) -> None:
        """Forget the drifted states: the generation is superseded."""
        self._drifted.clear()

    def _point(self, time_ms: int, name: str, score: float, level: float) -> TracePoint:
        series: Series = "data_drift" if self.kind == "data_drift" else "prediction_drift"
        return self.context.point(time_ms, series, name, score, warning=level)

    def _on_evaluation(
        self, evaluation: DriftEvaluation, batch: PredictionBatch
    ) -> list[dict[str, Any]]:
        kind, settings, book = self.kind, self.settings, self.context.book
        trigger_ms = int(batch.timestamps[evaluation.index])
        # Evidence is built only when an alert changes state, and once per evaluation.
        ranked: list[dict[str, Any]] | None = None
        alerts = []
        record = recorder()
        for drift in evaluation.features:
            # The state machine runs on -log10(p) and fires at the corrected threshold. It
            # resolves only on evaluations that look like the reference (p >= resolve_p_value)
            # and whose data differ from the drifted state (DriftedSample), not on ones that
            # merely miss significance.
            level = -math.log10(max(drift.threshold, 1e-300))
            rule = self.context.rule((kind, level), settings=settings, level=level)
            score = -math.log10(max(drift.p_value, 1e-300))
            if record is not None:
                record(self._point(trigger_ms, drift.feature, score, level))
            key = (kind, drift.feature)
            window = evaluation.windows.get(drift.feature)
            recovery_p: float | None = None
            fired_rule = book.firing_rule((kind, drift.test, drift.feature))
            if fired_rule is not None:
                drifted = self._drifted.get(key)
                consistent = drift.p_value >= max(settings.resolve_p_value, drift.threshold)
                if not consistent:
                    if drifted is not None and window is not None:
                        drifted.absorb(window, evaluation.n_seen, evaluation.n_current)
                    recovered = False
                elif drifted is None or window is None:
                    recovered = True
                else:
                    recovery_p = drifted.recovery_p_value(
                        window, evaluation.n_seen, evaluation.n_current
                    )
                    recovered = recovery_p < drift.threshold
                score = _firing_score(score, level, fired_rule, recovered)
            transitions = book.transitions(
                (kind, drift.test, drift.feature), rule, score, evaluation.n_current
            )
            if transitions and ranked is None:
                ranked = [_feature_evidence(f) for f in evaluation.features[:_EVIDENCE_FEATURES]]
            for transition in transitions:
                if transition.status == "firing" and window is not None:
                    self._drifted[key] = DriftedSample(
                        window,
                        categorical=drift.kind == "categorical",
                        fresh_from=evaluation.n_seen + evaluation.n_current,
                        capacity=settings.reference_size,
                    )
                else:
                    self._drifted.pop(key, None)
                alerts.append(
                    self.context.alert(
                        kind,
                        transition,
                        detector=drift.test,
                        feature=drift.feature,
                        value=drift.p_value,
                        threshold=drift.threshold,
                        window=(
                            evaluation.n_current,
                            evaluation.first_ts_ms,
                            evaluation.last_ts_ms,
                        ),
                        reference={
                            "type": settings.reference,
                            "size": evaluation.reference_size,
                            "summary": drift.reference_summary,
                        },
                        evidence={
                            "test": drift.test,
                            "statistic": drift.statistic,
                            "p_value": drift.p_value,
                            "alpha": settings.alpha,
                            "correction": settings.correction,
                            "features_tested": len(evaluation.features),
                            "current_summary": drift.current_summary,
                            "ranked_features": ranked,
                            "resolve_p_value": settings.resolve_p_value,
                            "recovery_p_value": recovery_p,
                        },
                        trigger_ms=trigger_ms,
                        source=batch.sources.at(evaluation.index),
                    )
                )
        return alerts

    def _on_joint(
        self, evaluation: DriftEvaluation, test: CorrelationTest, batch: PredictionBatch
    ) -> list[dict[str, Any]]:
        if not test.pairs_tested or not test.n_current:
            return []  # too few complete rows to test: no evidence either way
        kind, settings, book = self.kind, self.settings, self.context.book
        level, score = test.threshold, test.statistic
        rule = self.context.rule((kind, JOINT_DETECTOR, level), settings=settings, level=level)
        identity = (kind, JOINT_DETECTOR, "")
        # The smallest p of the pairs, Bonferroni-adjusted: consistent with the reference when
        # even that is above resolve_p_value (the smallest raw p of 100 unchanged pairs is below
        # 0.05 almost always).
        p_value = 10.0**-score
        adjusted = min(1.0, p_value * test.pairs_tested)
        record = recorder()
        if record is not None:
            trigger_ms = int(batch.timestamps[evaluation.index])
            record(self._point(trigger_ms, JOINT_DETECTOR, score, level))
        fired_rule = book.firing_rule(identity)
        if fired_rule is not None:
            recovered = adjusted >= settings.resolve_p_value and score <= level
            score = _firing_score(score, level, fired_rule, recovered)
        alerts = []
        for transition in book.transitions(identity, rule, score, evaluation.n_current):
            pairs = [
                {
                    "features": [pair.feature_a, pair.feature_b],
                    "reference": round(pair.reference, 6),
                    "current": round(pair.current, 6),
                    "p_value": 10.0**-pair.neg_log10_p,
                }
                for pair in test.pairs
            ]
            alerts.append(
                self.context.alert(
                    kind,
                    transition,
                    detector=JOINT_DETECTOR,
                    value=p_value,
                    threshold=10.0**-level,
                    window=(evaluation.n_current, evaluation.first_ts_ms, evaluation.last_ts_ms),
                    reference={"type": settings.reference, "size": test.n_reference},
                    evidence={
                        "test": JOINT_DETECTOR,
                        "statistic": test.statistic,
                        "p_value": p_value,
                        "adjusted_p_value": adjusted,
                        "false_alarm_rate": 10.0**-level * test.pairs_tested,
                        "correction": "bonferroni",
                        "pairs_tested": test.pairs_tested,
                        "complete_rows": test.n_current,
                        "features": test.features,
                        "pairs": pairs,
                        "resolve_p_value": settings.resolve_p_value,
                    },
                    trigger_ms=int(batch.timestamps[evaluation.index]),
                    source=batch.sources.at(evaluation.index),
                )
            )
        return alerts


def _firing_score(score: float, level: float, fired_rule: AlertRule, recovered: bool) -> float:
    """The score a firing drift alert's state machine is fed. It resolves on
    ``resolve_evaluations`` clear updates in a row: only a recovered evaluation is clear (below
    both levels), anything else restarts the run (just above both). A firing state keeps the
    level it fired at (Holm's and BH's levels move with the other features' p-values), so it is
    judged against that level too."""
    fired_at = fired_rule.warning
    assert fired_at is not None
    if recovered:
        return min(score, level, fired_at)
    return math.nextafter(max(level, fired_at), math.inf)


def drift_monitor(
    settings: DriftSettings,
    profile: ModelProfile | None,
    joint: MultivariateDriftSettings | None = None,
) -> DataDriftMonitor:
    """The drift monitor of ``settings``, with ``profile`` as its baseline if it has one, and
    the joint test of ``joint``."""
    # A profile without this signal's columns cannot be the baseline: learn it from the stream.
    reference = settings.reference
    if reference == "profile" and profile is None:
        reference = "first_n"
    return DataDriftMonitor(
        reference=reference,
        reference_size=settings.reference_size,
        profile=profile if reference == "profile" else None,
        window=settings.window,
        window_size=settings.window_size,
        window_duration_ms=None
        if settings.window_duration_s is None
        else int(settings.window_duration_s * 1000),
        every=settings.every,
        alpha=settings.alpha,
        correction=settings.correction,
        joint_alpha=None if joint is None else joint.false_alarm_rate,
        joint_min_samples=200 if joint is None else joint.min_samples,
    )


def _feature_evidence(drift: Any) -> dict[str, Any]:
    return {
        "feature": drift.feature,
        "kind": drift.kind,
        "test": drift.test,
        "score": drift.score,
        "statistic": drift.statistic,
        "p_value": drift.p_value,
        "drifted": drift.drifted,
        "psi": drift.psi,
        "js_distance": drift.js_distance,
        "wasserstein": drift.wasserstein,
        "unseen_share": drift.unseen_share,
        "reference": drift.reference_summary,
        "current": drift.current_summary,
    }
