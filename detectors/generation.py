"""``Generation``: every signal driftline keeps for one version of one model, composed.

A generation lives as long as its model version: a new ``model_version`` starts a new one (see
``detectors.monitor.ModelMonitor``), with fresh references, baselines and detectors.

Prediction side (no labels needed): data drift per feature, prediction drift, data quality.
Label side (predictions joined with outcomes): concept drift on the error stream, rolling KPIs with
thresholds, label coverage and delay. Each signal feeds its own alert state machines, one per
(kind, detector, feature or metric); a transition becomes an alert event with its evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property, lru_cache
from statistics import NormalDist
from typing import Any, Literal, NamedTuple

import numpy as np

from detectors.alerting import AlertRule, Transition
from detectors.alerts import AlertKind, iso_ms
from detectors.batch import ExpiredBatch, LabeledBatch, PredictionBatch
from detectors.book import AlertBook
from detectors.columns import FeatureColumns, FeatureKind, column_of, columnarize, infer_kinds
from detectors.concept import ConceptDriftDetector
from detectors.data_drift import DataDriftMonitor, DriftEvaluation
from detectors.events import FeatureValue, Source
from detectors.kpi import ClassificationKPIs, LabelTracker, Metrics, RegressionKPIs
from detectors.labels import label_key
from detectors.quality import QualityMonitor
from detectors.recovery import ChangePointAlertState, ChangeSignal, DriftedSample
from detectors.reference import ModelProfile, NumericProfile
from detectors.settings import (
    HIGHER_IS_WORSE,
    DriftSettings,
    MonitorSettings,
    QualityLevels,
    Threshold,
)

Task = Literal["classification", "regression"]
_EVIDENCE_FEATURES = 10
# Exact types a score list may hold to go straight into a float array (None becomes NaN).
_FLOAT_OR_NONE = frozenset({float, type(None)})


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
    >>> from detectors.events import Labeled, Source
    >>> from detectors.settings import MonitorSettings
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
        self._model_version: str | None = model_version
        self._task: Task | None = None if settings.task == "auto" else settings.task
        self._positive = label_key(settings.positive_label)
        self._n_predictions = 0
        self._n_labeled = 0
        # Prediction side.
        self._kinds: dict[str, FeatureKind] = {}
        self._data_drift = _drift_monitor(settings.data_drift, profile)
        self._prediction_kind: dict[str, FeatureKind] | None = None
        output_reference = self._output_reference(profile)
        self._prediction_drift = _drift_monitor(settings.prediction_drift, output_reference)
        q = settings.data_quality
        # Quality reads the data-drift reference (one per model, filled once); only without
        # one (data drift disabled or sliding) does it make its own, of the same size.
        shared = None if self._data_drift is None else self._data_drift.feature_reference
        self._quality = (
            QualityMonitor(
                window_size=q.window_size,
                every=q.every,
                profile=profile
                if settings.data_drift.reference == "profile" and shared is None
                else None,
                reference_size=settings.data_drift.reference_size,
                shared_reference=shared,
            )
            if q.enabled
            else None
        )
        # Label side, created when the task kind is known.
        self._concept: ConceptDriftDetector | None = None
        self._concept_alerts: ChangePointAlertState | None = None
        self._kpis: ClassificationKPIs | RegressionKPIs | None = None
        self._reference_kpis: ClassificationKPIs | RegressionKPIs | None = None
        self._reference_values: dict[str, float | None] | None = None
        self._reference_errors: dict[str, float | None] = {}
        self._kpi_rules: dict[int, AlertRule | None] = {}
        self._labels = LabelTracker(size=settings.kpis.size)
        self._book = AlertBook(model_id)
        self._rules: dict[tuple[Any, ...], AlertRule] = {}
        # What each firing drift alert's feature looked like, to test a recovery against.
        self._drifted: dict[tuple[str, str], DriftedSample] = {}

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
        return self._book.firing

    @property
    def model_version(self) -> str | None:
        return self._model_version

    @model_version.setter
    def model_version(self, version: str | None) -> None:
        self._model_version = version

    # -- prediction side -----------------------------------------------------------------------

    def observe_predictions(self, predictions: PredictionBatch) -> list[dict[str, Any]]:
        if not predictions.n:
            return []
        self._n_predictions += predictions.n
        rows = predictions.rows
        self._learn_kinds(rows)
        columns = columnarize(rows, self._kinds)
        timestamps = predictions.timestamps
        alerts: list[dict[str, Any]] = []
        if self._data_drift is not None:
            for evaluation in self._data_drift.update(columns, self._kinds, timestamps):
                alerts.extend(self._on_drift("data_drift", evaluation, predictions))
        if self._prediction_drift is not None:
            pcolumns, pkinds = self._prediction_columns(predictions)
            if pcolumns is not None:
                for evaluation in self._prediction_drift.update(pcolumns, pkinds, timestamps):
                    alerts.extend(self._on_drift("prediction_drift", evaluation, predictions))
        if self._quality is not None:
            alerts.extend(self._on_quality(columns, timestamps, predictions))
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

    def _output_reference(self, profile: ModelProfile | None) -> ModelProfile | None:
        """The prediction-drift baseline from a training profile: its score, else its
        prediction column. Without one, prediction drift falls back to the first N events."""
        if profile is None or self.settings.prediction_drift.reference != "profile":
            return None
        if profile.score is not None:
            self._prediction_kind = {"score": "numeric"}
            return ModelProfile(features={"score": profile.score}, n_rows=profile.n_rows)
        if profile.prediction is not None:
            kind: FeatureKind = (
                "numeric" if isinstance(profile.prediction, NumericProfile) else "categorical"
            )
            self._prediction_kind = {"prediction": kind}
            return ModelProfile(features={"prediction": profile.prediction}, n_rows=profile.n_rows)
        return None

    def _prediction_columns(
        self, predictions: PredictionBatch
    ) -> tuple[FeatureColumns | None, dict[str, FeatureKind]]:
        if self._prediction_kind is None:
            first_score, first = predictions.scores[0], predictions.predictions[0]
            if isinstance(first_score, float):
                self._prediction_kind = {"score": "numeric"}
            elif (
                isinstance(first, int | float)
                and not isinstance(first, bool)
                and not float(first).is_integer()
            ):
                self._prediction_kind = {"prediction": "numeric"}
            else:
                self._prediction_kind = {"prediction": "categorical"}
        kinds = self._prediction_kind
        # The one column built directly: no row dict per prediction.
        if "score" in kinds:
            scores: Sequence[object] = predictions.scores
            if not _FLOAT_OR_NONE.issuperset(map(type, scores)):
                scores = [s if isinstance(s, float) else None for s in scores]
            return column_of("score", scores, "numeric"), kinds
        return column_of("prediction", predictions.predictions, kinds["prediction"]), kinds

    def _on_drift(
        self, kind: AlertKind, evaluation: DriftEvaluation, batch: PredictionBatch
    ) -> list[dict[str, Any]]:
        settings = (
            self.settings.data_drift if kind == "data_drift" else self.settings.prediction_drift
        )
        trigger_ms = int(batch.timestamps[evaluation.index])
        # Evidence is built only when an alert changes state, and once per evaluation.
        ranked: list[dict[str, Any]] | None = None
        alerts = []
        for drift in evaluation.features:
            # The state machine runs on -log10(p) and fires at the corrected threshold. It
            # resolves only on evaluations that look like the reference (p >= resolve_p_value)
            # and whose data differ from the drifted state (DriftedSample), not on ones that
            # merely miss significance.
            level = -math.log10(max(drift.threshold, 1e-300))
            rule = self._rule((kind, level), settings=settings, level=level)
            score = -math.log10(max(drift.p_value, 1e-300))
            key = (kind, drift.feature)
            window = evaluation.windows.get(drift.feature)
            recovery_p: float | None = None
            fired_rule = self._book.firing_rule((kind, drift.test, drift.feature))
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
                # The state machine resolves on `resolve_evaluations` clear updates in a row:
                # only a recovered evaluation is clear, anything else restarts the run. A firing
                # state keeps the level it fired at (Holm's and BH's levels move with the other
                # features' p-values), so both are judged against that level too.
                fired_at = fired_rule.warning
                assert fired_at is not None
                score = (
                    min(score, level, fired_at)
                    if recovered
                    else math.nextafter(max(level, fired_at), math.inf)
                )
            transitions = self._book.transitions(
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
                    self._alert(
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

    def _on_quality(
        self, columns: FeatureColumns, timestamps: np.ndarray, batch: PredictionBatch
    ) -> list[dict[str, Any]]:
        assert self._quality is not None
        q = self.settings.data_quality
        lowest = self._quality_lowest
        book = self._book
        alerts = []
        for measure in self._quality.update(columns, self._kinds, timestamps):
            level = lowest.get(measure.metric)
            if level is None:
                continue
            if q.relative and measure.reference_value is None:
                continue  # relative levels: nothing to be relative to before the reference
            base = (measure.reference_value or 0.0) if q.relative else 0.0
            if (
                measure.value <= base + level
                and ("data_quality", measure.metric, measure.feature) not in book
            ):
                # At or below its lowest level a rate cannot breach it (its bound lies lower
                # still), and without a state there is nothing to resolve: most measures.
                continue
            levels = getattr(q, measure.metric)
            rule = self._rule(("data_quality", measure.metric, base), levels=levels, base=base)
            rate = measure.value
            se = math.sqrt(max(rate * (1.0 - rate), 0.0) / measure.n) if measure.n else math.nan
            transitions = self._book.transitions(
                ("data_quality", measure.metric, measure.feature), rule, rate, measure.n, se
            )
            if not transitions:
                continue
            trigger_ms = int(batch.timestamps[measure.index])
            for transition in transitions:
                alerts.append(
                    self._alert(
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
                        source=batch.sources.at(measure.index),
                    )
                )
        return alerts

    # -- label side ------------------------------------------------------------------------------

    def observe_labeled(self, labeled: LabeledBatch) -> list[dict[str, Any]]:
        if not labeled.n:
            return []
        if self._task is None:
            self._task = _infer_task(labeled.labels[0], labeled.predictions[0])
        if self._kpis is None:
            self._start_label_side()
        timestamps = labeled.labeled_at
        delays = timestamps - labeled.predicted_at
        self._labels.update_labeled(np.maximum(delays, 0), timestamps)
        errors = self._errors(labeled)
        alerts: list[dict[str, Any]] = []
        if self._concept is not None:
            alerts.extend(self._on_concept(errors, labeled))
        alerts.extend(self._on_kpis(labeled, timestamps))
        self._n_labeled += labeled.n
        return alerts

    def observe_expired(self, predictions: ExpiredBatch) -> list[dict[str, Any]]:
        """Predictions whose outcome never came: they lower label coverage."""
        if predictions.n:
            self._labels.update_expired(predictions.n, predictions.timestamps)
        return []

    def _start_label_side(self) -> None:
        s = self.settings
        binary = self._task == "classification"
        if s.concept_drift.enabled:
            self._concept = ConceptDriftDetector(
                s.concept_drift.detector, dict(s.concept_drift.params), binary_input=binary
            )
            self._concept_alerts = ChangePointAlertState(
                s.concept_drift.false_resolve_rate, binary=binary
            )
        duration = (
            int(s.kpis.duration_s * 1000)
            if s.kpis.window == "time" and s.kpis.duration_s is not None
            else None
        )
        if binary:
            self._kpis = ClassificationKPIs(s.kpis.window, s.kpis.size, duration, self._positive)
            self._reference_kpis = ClassificationKPIs(
                "count", s.kpis.reference_size, None, self._positive
            )
        else:
            self._kpis = RegressionKPIs(s.kpis.window, s.kpis.size, duration)
            self._reference_kpis = RegressionKPIs("count", s.kpis.reference_size, None)

    def _errors(self, labeled: LabeledBatch) -> np.ndarray:
        if self._task == "classification":
            return (~labeled.correct).astype(np.float64)
        diff = _numbers(labeled.predictions) - _numbers(labeled.labels)
        loss: np.ndarray = (
            np.abs(diff) if self.settings.concept_drift.loss == "absolute" else diff**2
        )
        return loss

    def _on_concept(self, errors: np.ndarray, batch: LabeledBatch) -> list[dict[str, Any]]:
        assert self._concept is not None and self._concept_alerts is not None
        finite = np.isfinite(errors)
        kept = errors[finite]
        signals = self._concept.update(kept)
        positions = np.flatnonzero(finite)
        by_index = {s.index: s for s in signals}
        transitions = self._concept_alerts.update(
            kept, [ChangeSignal(s.index, s.severity, s.error_before) for s in signals]
        )
        alerts = []
        name = self.settings.concept_drift.detector
        for index, transition in transitions:
            at = int(positions[index])
            trigger_ms = int(batch.labeled_at[at])
            evidence: dict[str, Any] = {
                "detector": name,
                "params": dict(self.settings.concept_drift.params),
            }
            signal = by_index.get(index) if transition.status == "firing" else None
            recovery = (
                None
                if transition.status == "firing"
                else self._concept_alerts.resolved_by(transition.severity)
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
                    false_resolve_rate=self.settings.concept_drift.false_resolve_rate,
                    labeled_since_firing=recovery.n_since_firing,
                )
            value = (
                signal.error_recent
                if signal is not None
                else (recovery.rate_recent if recovery is not None else None)
            )
            alerts.append(
                self._alert(
                    "concept_drift",
                    transition,
                    detector=name,
                    metric="error_rate",
                    value=value,
                    threshold=transition.threshold,
                    window=(self._n_labeled + at + 1, None, trigger_ms),
                    reference={"error_rate": transition.threshold},
                    evidence=evidence,
                    trigger_ms=trigger_ms,
                    source=batch.sources.at(at),
                )
            )
        return alerts

    def _on_kpis(self, batch: LabeledBatch, timestamps: np.ndarray) -> list[dict[str, Any]]:
        if not self.settings.kpis.enabled:
            # No KPI window, reference or threshold (label metrics' included). Label coverage
            # and delay are still tracked, by observe_labeled and observe_expired, for the
            # snapshot: they describe the outcome feed rather than the model.
            return []
        assert self._kpis is not None
        every = self.settings.kpis.every
        # Validated and encoded once; the slices fed at each cadence point are views of it.
        if isinstance(self._kpis, RegressionKPIs):
            events = self._kpis.prepare(
                _numbers(batch.labels), _numbers(batch.predictions), timestamps
            )
        else:
            events = self._kpis.prepare(
                batch.labels, batch.predictions, self._scores(batch), timestamps
            )
        alerts: list[dict[str, Any]] = []
        start = 0
        seen = self._n_labeled
        reference_size = self.settings.kpis.reference_size
        while start < batch.n:
            # Cut the batch at the next cadence point so thresholds see the window as it stood.
            stop = min(batch.n, start + every - (seen + start) % every)
            self._kpis.update_prepared(events.take(start, stop))
            if self._reference_values is None:
                assert self._reference_kpis is not None
                needed = reference_size - (seen + start)
                if needed > 0:
                    # Same task and positive label: the reference takes the same encoding.
                    self._reference_kpis.update_prepared(
                        events.take(start, min(stop, start + needed))
                    )
                if seen + stop >= reference_size:
                    self._reference_values, self._reference_errors = (
                        self._reference_kpis.measure()
                    )
                    self._reference_kpis = None  # measured once; its window is not needed
                    self._kpi_rules.clear()
            if (seen + stop) % every == 0:
                alerts.extend(self._evaluate_kpis(_Trigger.of(batch, stop - 1)))
            start = stop
        return alerts

    @cached_property
    def _quality_lowest(self) -> dict[str, float]:
        """The lowest level of each quality rate that has one: settings never change."""
        q = self.settings.data_quality
        return {
            metric: min(v for v in (levels.warning, levels.critical) if v is not None)
            for metric in _QUALITY_METRICS
            if (levels := getattr(q, metric)).warning is not None or levels.critical is not None
        }

    @cached_property
    def _thresholded_metrics(self) -> tuple[frozenset[str], frozenset[str]]:
        """The KPI and the label metrics that this task's thresholds read: what an evaluation
        measures (the task is known by the first evaluation)."""
        assert self._kpis is not None
        thresholds = self.settings.kpis.thresholds
        metrics = {t.metric for t in thresholds if _applies(t.metric, self._task)}
        return (
            frozenset(metrics.intersection(self._kpis.METRICS)),
            frozenset(metrics.intersection(LabelTracker.METRICS)),
        )

    def _measure_kpis(self, complete: bool) -> tuple[Metrics, Metrics]:
        """KPI and label metrics with their standard errors: those the thresholds read, from
        running sums, or (``complete``) all of them, from the windows, for an alert's evidence."""
        assert self._kpis is not None
        kpi_metrics, label_metrics = (None, None) if complete else self._thresholded_metrics
        values, errors = self._kpis.measure(kpi_metrics)
        if label_metrics is None or label_metrics:
            label_values, label_errors = self._labels.measure(label_metrics)
            values, errors = {**values, **label_values}, {**errors, **label_errors}
        return values, errors

    def _kpi_error(self, errors: Metrics, threshold: Threshold) -> float | None:
        se = errors.get(threshold.metric)
        if se is not None and threshold.relative:
            # The reference is an estimate too: its error moves every level it sets.
            se = math.hypot(se, self._reference_errors.get(threshold.metric) or 0.0)
        return se

    def _evaluate_kpis(self, trigger: _Trigger) -> list[dict[str, Any]]:
        complete = False
        values, errors = self._measure_kpis(complete)
        n = int(values.get("n") or 0)
        alerts = []
        for position, threshold in enumerate(self.settings.kpis.thresholds):
            if not _applies(threshold.metric, self._task):
                continue
            value = values.get(threshold.metric)
            if position not in self._kpi_rules:
                self._kpi_rules[position] = self._kpi_rule(threshold)
            rule = self._kpi_rules[position]
            se = self._kpi_error(errors, threshold)
            if value is None or rule is None or se is None:
                continue
            reference = (
                None
                if self._reference_values is None
                else self._reference_values.get(threshold.metric)
            )
            identity = ("kpi_threshold", _rule_name(threshold), threshold.metric)
            transitions = self._book.transitions(identity, rule, float(value), n, se)
            if transitions and not complete:
                # An alert changes state: its value, error and evidence come from the complete
                # measure (the running sums agree with it to about 1e-12).
                complete = True
                values, errors = self._measure_kpis(complete)
                value = _or(values.get(threshold.metric), value)
                se = _or(self._kpi_error(errors, threshold), se)
            for transition in transitions:
                alerts.append(
                    self._alert(
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
                            "size": self.settings.kpis.reference_size,
                            "kpis": None
                            if self._reference_values is None
                            else _rounded(self._reference_values),
                        },
                        evidence={
                            "kpis": _rounded(values),
                            "standard_error": se,
                            "confidence": threshold.confidence,
                            "bound": float(value) + (1 if rule.direction == "below" else -1)
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

    def _kpi_rule(self, threshold: Threshold) -> AlertRule | None:
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
            z=_z(threshold.confidence),
            min_samples=threshold.min_samples,
            for_updates=threshold.for_updates,
            resolve_updates=threshold.resolve_evaluations,
            cooldown=threshold.cooldown,
        )

    def _scores(self, batch: LabeledBatch) -> np.ndarray:
        scores = batch.scores
        if _FLOAT_OR_NONE.issuperset(map(type, scores)):
            return np.array(scores, dtype=np.float64)  # None becomes NaN
        positive = str(self._positive)
        out = np.full(batch.n, np.nan)
        for i, score in enumerate(scores):
            if isinstance(score, float):
                out[i] = score
            elif isinstance(score, dict):
                value = score.get(positive)
                if value is not None:
                    out[i] = value
        return out

    # -- shared ----------------------------------------------------------------------------------

    def _rule(
        self,
        key: tuple[Any, ...],
        *,
        settings: DriftSettings | None = None,
        level: float = 0.0,
        levels: QualityLevels | None = None,
        base: float = 0.0,
    ) -> AlertRule:
        """The alert rule of a drift level or a quality rate, built once and then shared."""
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        if settings is not None:  # drift: fires on -log10(p) above the corrected level
            rule = AlertRule(
                direction="above",
                warning=level,
                for_updates=settings.for_evaluations,
                resolve_updates=settings.resolve_evaluations,
            )
        else:
            assert levels is not None
            q = self.settings.data_quality
            rule = AlertRule(
                direction="above",
                warning=None if levels.warning is None else base + levels.warning,
                critical=None if levels.critical is None else base + levels.critical,
                z=_z(q.confidence),
                min_samples=q.min_samples,
                resolve_updates=q.resolve_evaluations,
            )
        self._rules[key] = rule
        return rule

    def _alert(
        self, kind: AlertKind, transition: Transition, **fields: Any
    ) -> dict[str, Any]:
        return self._book.alert(kind, transition, model_version=self._model_version, **fields)

    def close(self, trigger_ms: int, source: Source, successor: str | None) -> list[dict[str, Any]]:
        """Resolve every firing alert as superseded: a new model version took over.

        Each resolve says which version superseded it; the generation is not judged again.
        """
        if self._concept_alerts is not None:
            self._concept_alerts.close()
        self._drifted.clear()
        return self._book.supersede(trigger_ms, source, successor, self._model_version)

    def kpi_snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self._kpis is not None:
            values.update(self._kpis.metrics())
        values.update(self._labels.metrics())
        span = None if self._kpis is None else self._kpis.window_span_ms
        return {
            "schema_version": 1,
            "model_id": self.model_id,
            "model_version": self._model_version,
            "task": self._task,
            "predictions": self._n_predictions,
            "labeled": self._n_labeled,
            "window": {
                "size": int(values.get("n") or 0),
                "first_event_time": None if span is None else iso_ms(span[0]),
                "last_event_time": None if span is None else iso_ms(span[1]),
            },
            "kpis": _rounded(values),
            "reference": None
            if self._reference_values is None
            else _rounded(self._reference_values),
            "firing": sorted("/".join(k) for k in self._book.firing),
        }


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    """The one-sided normal quantile of a confidence level."""
    return NormalDist().inv_cdf(confidence)


def _drift_monitor(
    settings: DriftSettings, profile: ModelProfile | None
) -> DataDriftMonitor | None:
    if not settings.enabled:
        return None
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
    )


def _infer_task(label: object, prediction: object) -> Task:
    for value in (label, prediction):
        if isinstance(value, float) and not value.is_integer():
            return "regression"
    return "classification"


_QUALITY_METRICS = ("null_rate", "type_mismatch_rate", "out_of_range_rate", "unseen_category_rate")


class _Trigger(NamedTuple):
    """The labelled event at which a KPI evaluation happened."""

    labeled_at_ms: int
    source: Source

    @classmethod
    def of(cls, batch: LabeledBatch, index: int) -> _Trigger:
        return cls(int(batch.labeled_at[index]), batch.sources.at(index))


def _first_ms(kpis: ClassificationKPIs | RegressionKPIs | None) -> int | None:
    span = None if kpis is None else kpis.window_span_ms
    return None if span is None else span[0]


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _numbers(values: Sequence[object]) -> np.ndarray:
    if _PLAIN_NUMBERS.issuperset(map(type, values)):
        try:
            return np.array(values, dtype=np.float64)  # float(v) of each, in one C loop
        except OverflowError:
            pass
    return np.fromiter((_number(v) for v in values), np.float64, len(values))


_PLAIN_NUMBERS = frozenset({float, int, bool})


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan


_CLASSIFICATION_ONLY = frozenset(
    {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "positive_rate"}
)
_REGRESSION_ONLY = frozenset({"mae", "rmse", "mape", "r2"})


def _applies(metric: str, task: Task | None) -> bool:
    if metric in _CLASSIFICATION_ONLY:
        return task == "classification"
    if metric in _REGRESSION_ONLY:
        return task == "regression"
    return True


def _rule_name(threshold: Threshold) -> str:
    return "relative_threshold" if threshold.relative else "threshold"


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            round(v, 6)
            if isinstance(v, float) and math.isfinite(v)
            else (None if isinstance(v, float) else v)
        )
        for k, v in values.items()
    }


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
