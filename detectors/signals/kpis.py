"""``KpiSignal``: rolling KPIs of labelled predictions against their thresholds.

The KPIs (accuracy, F1, ROC AUC, … or MAE, RMSE, …) and the label metrics (coverage, delay) are
measured at a fixed cadence of labelled events; each threshold of ``kpis.thresholds`` is an
alert that fires when the metric's confidence bound passes its level. A relative threshold is a
level around the same KPI over the first ``kpis.reference_size`` labelled events.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np

from driftline.detectors.alerting import AlertRule
from driftline.detectors.batch import LabeledBatch
from driftline.detectors.events import Source
from driftline.detectors.kpi import ClassificationKPIs, LabelTracker, Metrics, RegressionKPIs
from driftline.detectors.labels import label_key
from driftline.detectors.settings import HIGHER_IS_WORSE, Threshold
from driftline.detectors.signals.base import (
    SignalContext,
    Task,
    numbers,
    positive_scores,
    rounded,
    z_quantile,
)
from driftline.detectors.trace import Recorder, recorder

__all__ = ["KpiSignal", "applies", "record_coverage"]

_SCORE_BINS = 10  # equal bins of the score, for where errors concentrate
_ATTRIBUTION_BINS = 3


class KpiSignal:
    """KPI and label-metric thresholds of labelled predictions: one alert per threshold.

    Parameters
    ----------
    context
        The generation's shared context.
    task
        The model's task: which KPIs there are, and which thresholds apply.
    labels
        The generation's label coverage and delay (it feeds them; this signal reads them).
    """

    def __init__(self, context: SignalContext, task: Task, labels: LabelTracker) -> None:
        self.context = context
        self.task = task
        self.labels = labels
        s = context.settings.kpis
        self._positive = label_key(context.settings.positive_label)
        duration = (
            int(s.duration_s * 1000) if s.window == "time" and s.duration_s is not None else None
        )
        self._kpis: ClassificationKPIs | RegressionKPIs
        self._reference_kpis: ClassificationKPIs | RegressionKPIs | None
        if task == "classification":
            self._kpis = ClassificationKPIs(s.window, s.size, duration, self._positive)
            self._reference_kpis = ClassificationKPIs(
                "count", s.reference_size, None, self._positive
            )
        else:
            self._kpis = RegressionKPIs(s.window, s.size, duration)
            self._reference_kpis = RegressionKPIs("count", s.reference_size, None)
        self._reference_values: dict[str, float | None] | None = None
        # The reference's error rate per score bin (classification), for an alert's attribution.
        self._reference_bins: np.ndarray | None = None
        self._reference_errors: dict[str, float | None] = {}
        self._rules: dict[int, AlertRule | None] = {}
        self._n_seen = 0  # labelled events observed before this batch

    # -- what the snapshot reads ---------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The KPIs of the window as it stands."""
        return self._kpis.metrics()

    @property
    def window_span_ms(self) -> tuple[int, int] | None:
        """Event times of the first and the last event of the window (None while empty)."""
        return self._kpis.window_span_ms

    @property
    def reference_values(self) -> dict[str, float | None] | None:
        """The reference KPIs (None until the reference is complete)."""
        return self._reference_values

    # -- events --------------------------------------------------------------------------------

    def observe(self, batch: LabeledBatch) -> list[dict[str, Any]]:
        alerts = self._on_kpis(batch, batch.labeled_at)
        self._n_seen += batch.n
        return alerts

    def _on_kpis(self, batch: LabeledBatch, timestamps: np.ndarray) -> list[dict[str, Any]]:
        settings = self.context.settings.kpis
        delays = np.maximum(timestamps - batch.predicted_at, 0)
        if not settings.enabled:
            # No KPI window, reference or threshold (label metrics' included). Label coverage
            # and delay are still tracked for the snapshot: they describe the outcome feed
            # rather than the model.
            self._track(batch, delays, timestamps, 0, batch.n)
            self._track_rest(batch)
            return []
        every = settings.every
        # Validated and encoded once; the slices fed at each cadence point are views of it.
        if isinstance(self._kpis, RegressionKPIs):
            events = self._kpis.prepare(
                numbers(batch.labels), numbers(batch.predictions), timestamps
            )
        else:
            events = self._kpis.prepare(
                batch.labels, batch.predictions, self._scores(batch), timestamps
            )
        alerts: list[dict[str, Any]] = []
        start = 0
        seen = self._n_seen
        reference_size = settings.reference_size
        while start < batch.n:
            # Cut the batch at the next cadence point so thresholds see the window as it stood.
            stop = min(batch.n, start + every - (seen + start) % every)
            self._kpis.update_prepared(events.take(start, stop))
            # The label tracker too, so that an evaluation (label-metric thresholds, an alert's
            # evidence) sees it as it stood, whatever the batch.
            self._track(batch, delays, timestamps, start, stop)
            if self._reference_values is None:
                assert self._reference_kpis is not None
                needed = reference_size - (seen + start)
                if needed > 0:
                    # Same task and positive label: the reference takes the same encoding.
                    self._reference_kpis.update_prepared(
                        events.take(start, min(stop, start + needed))
                    )
                if seen + stop >= reference_size:
                    self._reference_values, self._reference_errors = self._reference_kpis.measure()
                    if isinstance(self._reference_kpis, ClassificationKPIs):
                        n, wrong = self._reference_kpis.errors_by_score(_SCORE_BINS)
                        self._reference_bins = wrong / np.maximum(n, 1)
                    self._reference_kpis = None  # measured once; its window is not needed
                    self._rules.clear()
            if (seen + stop) % every == 0:
                alerts.extend(self._evaluate(_Trigger.of(batch, stop - 1)))
            start = stop
        self._track_rest(batch)
        return alerts

    def _track(
        self, batch: LabeledBatch, delays: np.ndarray, timestamps: np.ndarray, start: int, stop: int
    ) -> None:
        """Labelled events ``start:stop`` to the label tracker, with the predictions that
        expired among them in their places (those after the last one wait for
        :meth:`_track_rest`, after its evaluation)."""
        expired = batch.expired
        if expired is None or expired.positions is None:
            self.labels.update_labeled(delays[start:stop], timestamps[start:stop])
            return
        lo, hi = np.searchsorted(expired.positions, (start, stop), side="left")
        if lo == hi:
            self.labels.update_labeled(delays[start:stop], timestamps[start:stop])
            return
        at = expired.positions[lo:hi] - start
        self.labels.update(
            np.insert(delays[start:stop].astype(np.float64), at, np.nan),
            np.insert(timestamps[start:stop], at, expired.timestamps[lo:hi]),
        )

    def _track_rest(self, batch: LabeledBatch) -> None:
        """The predictions that expired after the last labelled event of ``batch``."""
        expired = batch.expired
        if expired is None or expired.positions is None:
            return
        rest = int(np.searchsorted(expired.positions, batch.n, side="left"))
        if rest < expired.n:
            self.labels.update_expired(expired.n - rest, expired.timestamps[rest:])

    @cached_property
    def _thresholded_metrics(self) -> tuple[frozenset[str], frozenset[str]]:
        """The KPI and the label metrics that this task's thresholds read: what an evaluation
        measures."""
        thresholds = self.context.settings.kpis.thresholds
        metrics = {t.metric for t in thresholds if applies(t.metric, self.task)}
        return (
            frozenset(metrics.intersection(self._kpis.METRICS)),
            frozenset(metrics.intersection(LabelTracker.METRICS)),
        )

    def _measure(self, complete: bool) -> tuple[Metrics, Metrics]:
        """KPI and label metrics with their standard errors: those the thresholds read, from
        running sums, or (``complete``) all of them, from the windows, for an alert's evidence."""
        kpi_metrics, label_metrics = (None, None) if complete else self._thresholded_metrics
        values, errors = self._kpis.measure(kpi_metrics)
        if label_metrics is None or label_metrics:
            label_values, label_errors = self.labels.measure(label_metrics)
            values, errors = {**values, **label_values}, {**errors, **label_errors}
        return values, errors

    def _error(self, errors: Metrics, threshold: Threshold) -> float | None:
        se = errors.get(threshold.metric)
        if se is not None and threshold.relative:
            # The reference is an estimate too: its error moves every level it sets.
            se = math.hypot(se, self._reference_errors.get(threshold.metric) or 0.0)
        return se

    def _evaluate(self, trigger: _Trigger) -> list[dict[str, Any]]:
        settings = self.context.settings.kpis
        complete = False
        values, errors = self._measure(complete)
        n = int(values.get("n") or 0)
        alerts = []
        attribution: dict[str, Any] | None = None  # of the window, once per evaluation
        record = recorder()
        if record is not None:
            record_coverage(record, self.context, self.labels, trigger.labeled_at_ms)
        for position, threshold in enumerate(settings.thresholds):
            if not applies(threshold.metric, self.task):
                continue
            value = values.get(threshold.metric)
            if position not in self._rules:
                self._rules[position] = self._rule(threshold)
            rule = self._rules[position]
            se = self._error(errors, threshold)
            if value is None or rule is None or se is None:
                continue
            reference = (
                None
                if self._reference_values is None
                else self._reference_values.get(threshold.metric)
            )
            if record is not None:
                record(
                    self.context.point(
                        trigger.labeled_at_ms,
                        "kpi",
                        threshold.metric,
                        float(value),
                        warning=rule.warning,
                        critical=rule.critical,
                        reference=reference,
                    )
                )
            identity = ("kpi_threshold", _rule_name(threshold), threshold.metric)
            transitions = self.context.book.transitions(identity, rule, float(value), n, se)
            if transitions and not complete:
                # An alert changes state: its value, error and evidence come from the complete
                # measure (the running sums agree with it to about 1e-12).
                complete = True
                values, errors = self._measure(complete)
                value = _or(values.get(threshold.metric), value)
                se = _or(self._error(errors, threshold), se)
            explained: dict[str, Any] = {}
            if any(t.status == "firing" for t in transitions):
                if attribution is None:
                    attribution = self._attribution()
                explained = attribution
            for transition in transitions:
                alerts.append(
                    self.context.alert(
                        "kpi_threshold",
                        transition,
                        detector=_rule_name(threshold),
                        metric=threshold.metric,
                        value=float(value),
                        threshold=transition.threshold,
                        window=(n, _first_ms(self._kpis), trigger.labeled_at_ms),
                        reference={
                            "value": reference,
                            "relative": threshold.relative,
                            "size": settings.reference_size,
                            "kpis": None
                            if self._reference_values is None
                            else rounded(self._reference_values),
                        },
                        evidence={
                            **(explained if transition.status == "firing" else {}),
                            "kpis": rounded(values),
                            "standard_error": se,
                            "confidence": threshold.confidence,
                            "bound": float(value)
                            + (1 if rule.direction == "below" else -1)
                            * (1 if transition.status == "firing" else -1)
                            * rule.z
                            * se,
                            "min_samples": threshold.min_samples,
                            "resolve_evaluations": threshold.resolve_evaluations,
                        },
                        trigger_ms=trigger.labeled_at_ms,
                        source=trigger.source,
                    )
                )
        return alerts

    def _attribution(self) -> dict[str, Any]:
        """Where the window's errors concentrate by score, for a firing alert: the score bins
        with the most wrong predictions beyond their reference error rate, most first."""
        if self._reference_bins is None:
            return {}
        assert isinstance(self._kpis, ClassificationKPIs)
        n, wrong = self._kpis.errors_by_score(_SCORE_BINS)
        excess = wrong - n * self._reference_bins
        total = float(excess[excess > 0].sum())
        if total <= 0:
            return {}
        ranked = [i for i in np.argsort(-excess, kind="stable").tolist() if excess[i] > 0]
        return {
            "attribution": {
                "scores": [
                    {
                        "score_range": [i / _SCORE_BINS, (i + 1) / _SCORE_BINS],
                        "n": int(n[i]),
                        "error_rate": round(float(wrong[i] / n[i]), 6),
                        "reference_error_rate": round(float(self._reference_bins[i]), 6),
                        "excess_errors": round(float(excess[i]), 3),
                        "share_of_excess": round(float(excess[i]) / total, 6),
                    }
                    for i in ranked[:_ATTRIBUTION_BINS]
                ]
            }
        }

    def _rule(self, threshold: Threshold) -> AlertRule | None:
        direction: Literal["below", "above"] = (
            "above" if threshold.metric in HIGHER_IS_WORSE else "below"
        )
        warning, critical = threshold.warning, threshold.critical
        if threshold.relative:
            if self._reference_values is None:
                return None
            reference = self._reference_values.get(threshold.metric)
            if reference is None:
                return None
            sign = 1.0 if direction == "above" else -1.0
            # Error metrics rise by a fraction of the reference; scores drop by absolute points.
            scale = abs(reference) if direction == "above" else 1.0
            warning = None if warning is None else reference + sign * warning * scale
            critical = None if critical is None else reference + sign * critical * scale
        return AlertRule(
            direction=direction,
            warning=warning,
            critical=critical,
            z=z_quantile(threshold.confidence),
            min_samples=threshold.min_samples,
            for_updates=threshold.for_updates,
            resolve_updates=threshold.resolve_evaluations,
            cooldown=threshold.cooldown,
        )

    def _scores(self, batch: LabeledBatch) -> np.ndarray:
        return positive_scores(batch.scores, self._positive)


class _Trigger(NamedTuple):
    """The labelled event at which a KPI evaluation happened."""

    labeled_at_ms: int
    source: Source

    @classmethod
    def of(cls, batch: LabeledBatch, index: int) -> _Trigger:
        return cls(int(batch.labeled_at[index]), batch.sources.at(index))


def _first_ms(kpis: ClassificationKPIs | RegressionKPIs) -> int | None:
    span = kpis.window_span_ms
    return None if span is None else span[0]


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


_CLASSIFICATION_ONLY = frozenset(
    {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "positive_rate"}
)
_REGRESSION_ONLY = frozenset({"mae", "rmse", "mape", "r2"})


def record_coverage(
    record: Recorder, context: SignalContext, labels: LabelTracker, time_ms: int
) -> None:
    """The label coverage as it stands, for a report: at KPI evaluations and when predictions
    expire unlabelled (when outcomes stop, only the latter happen)."""
    coverage = labels.measure(("label_coverage",))[0].get("label_coverage")  # running counts
    if coverage is not None:
        record(context.point(time_ms, "label_coverage", "label_coverage", float(coverage)))


def applies(metric: str, task: Task | None) -> bool:
    """Whether a threshold on ``metric`` applies to a model of ``task``."""
    if metric in _CLASSIFICATION_ONLY:
        return task == "classification"
    if metric in _REGRESSION_ONLY:
        return task == "regression"
    return True


def _rule_name(threshold: Threshold) -> str:
    return "relative_threshold" if threshold.relative else "threshold"
