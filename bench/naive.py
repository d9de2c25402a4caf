"""The naive per-event implementation ``make bench`` compares ``Pipeline.process`` with.

The job of driftline's default monitor settings, done the straightforward way: one event at a
time, plain Python loops per event and per feature over dicts and ``deque`` s with running counts,
numpy and scipy for the tests, river's ADWIN for concept drift. Per model:

* every message ``orjson.loads``; the join: a prediction waits in a dict keyed (model_id,
  event_id) for its outcome; the features are those seen in the reference, categorical if
  their first non-null value is a string, else numeric;
* data drift, per feature: the first 5,000 predictions are the reference, then a rolling window
  of the last 1,000 usable values; every 250 predictions past the reference each feature with at
  least 200 in its window is tested against its reference, numeric ones with
  ``scipy.stats.ks_2samp`` (asymptotic), categorical ones with ``scipy.stats.chi2_contingency``
  of the reference's and the window's counts (no continuity correction); alpha 1e-5, Bonferroni
  over the features; 2 consecutive drifted evaluations fire ``data_drift``;
* prediction drift: the same on ``score`` (a KS test at alpha 1e-5), firing ``prediction_drift``;
* data quality, per feature and event: null (absent or null), type mismatch (a string or bool for
  a numeric feature, a non-string for a categorical one), and, once the reference is there, out
  of range (outside the reference's min/max) and unseen category; every 100 predictions, rates
  over the last 500 events (range and category: over the values checked among them; at least
  200); a rate above the reference's (0 before it, and for range and category) plus 0.05 / 0.15
  (null), 0.01 / 0.05 (type), 0.05 / 0.20 (range, category) fires ``data_quality`` warning /
  critical;
* concept drift: ``river.drift.ADWIN`` (driftline's ``delta`` of 1e-4, river's other defaults)
  fed the 0/1 error of every labelled event; a change with a rise of the error fires
  ``concept_drift``;
* KPIs: running counts over the last 1,000 labelled events, updated per label; every 50 labels
  accuracy, precision, recall and F1 of class 1 and label coverage (labelled / predicted: nothing
  expires), and an accuracy 5 (10) points below that of the first 2,000 labels fires
  ``kpi_threshold`` warning (critical).

Each alert identity (kind, feature or metric, level) fires once and never resolves. What it does
not do, and driftline does: validate events and dead-letter bad ones, expire or cap the join,
confidence bounds on KPIs and rates (it compares point estimates), alert resolution, incidents,
model versions, AUC, log loss, Brier, label delay, PSI / JS / Wasserstein, a widened range, a
top-K cap on categories, KPI snapshots, metrics. Its output is a list of alert dicts.

``test_seconds`` counts the KS and chi-square tests (the report gives their share); the rest,
ADWIN included, is per-event Python. At low traffic per model no reference fills: no tests.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

import numpy as np
import orjson
from river.drift import ADWIN
from scipy.stats import chi2_contingency, ks_2samp

REFERENCE, WINDOW, EVERY, ALPHA, FOR_EVALUATIONS, MIN_WINDOW = 5000, 1000, 250, 1e-5, 2, 200
QUALITY_WINDOW, QUALITY_EVERY, QUALITY_MIN = 500, 100, 200
QUALITY_LEVELS = {  # metric: (warning, critical) above the reference's rate
    "null_rate": (0.05, 0.15),
    "type_mismatch_rate": (0.01, 0.05),
    "out_of_range_rate": (0.05, 0.20),
    "unseen_category_rate": (0.05, 0.20),
}
KPI_REFERENCE, KPI_WINDOW, KPI_EVERY, KPI_MIN = 2000, 1000, 50, 200
ACCURACY_LEVELS = (("critical", 0.10), ("warning", 0.05))
POSITIVE = 1
ADWIN_DELTA = 1e-4


class _Series:
    """A feature (or the score): reference, rolling window, drift state and quality window."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.reference: list[Any] = []
        self.frozen: Any = None  # the reference: float array (numeric) or Counter (categorical)
        self.window: deque[Any] = deque(maxlen=WINDOW)
        self.drifted = 0  # consecutive drifted evaluations
        self.flags: deque[tuple[bool, bool, bool, bool]] = deque()  # null, mismatch, checked, out
        self.nulls = self.mismatches = self.checked = self.outside = 0
        self.events = self.reference_nulls = self.reference_mismatches = 0
        self.base = {"null_rate": 0.0, "type_mismatch_rate": 0.0}  # the reference's rates
        self.low = self.high = 0.0

    def add(self, value: Any, filling: bool) -> None:
        if filling:
            self.reference.append(value)
        elif self.frozen is not None:
            self.window.append(value)

    def freeze(self) -> None:
        if self.reference and self.kind == "numeric":
            self.low, self.high = min(self.reference), max(self.reference)
            self.frozen = np.array(self.reference, float)
        elif self.reference:
            self.frozen = Counter(self.reference)
        self.reference = []
        if self.events:
            self.base["null_rate"] = self.reference_nulls / self.events
            self.base["type_mismatch_rate"] = self.reference_mismatches / self.events


class _Model:
    def __init__(self) -> None:
        self.n = 0
        self.features: dict[str, _Series] = {}
        self.score = _Series("numeric")
        self.fired: set[tuple[str, ...]] = set()  # alert identities fired
        self.adwin = ADWIN(delta=ADWIN_DELTA)
        self.labels = self.reference_correct = 0
        self.reference_accuracy: float | None = None
        self.recent: deque[tuple[bool, bool, bool, bool]] = deque()
        self.sums = [0, 0, 0, 0]  # over recent: correct, predicted 1, label 1, true positive
        self.kpis: dict[str, float] = {}


class NaiveMonitor:
    def __init__(self) -> None:
        self.models: dict[str, _Model] = {}
        self.waiting: dict[tuple[str, str], Any] = {}
        self.alerts: list[dict[str, Any]] = []
        self.test_seconds = 0.0

    def process(self, role: str, value: bytes) -> None:
        doc = orjson.loads(value)
        model_id = doc["model_id"]
        model = self.models.get(model_id)
        if model is None:
            model = self.models[model_id] = _Model()
        if role == "prediction":
            self.waiting[(model_id, doc["event_id"])] = doc["prediction"]
            self._prediction(model_id, model, doc)
            return
        prediction = self.waiting.pop((model_id, doc["event_id"]), None)
        if prediction is not None:
            self._label(model_id, model, prediction, doc["label"])

    def _fire(self, model_id: str, model: _Model, kind: str, *identity: str) -> None:
        if (kind, *identity) not in model.fired:
            model.fired.add((kind, *identity))
            self.alerts.append(
                {"model_id": model_id, "kind": kind, "identity": identity, "predictions": model.n}
            )

    def _prediction(self, model_id: str, model: _Model, doc: dict[str, Any]) -> None:
        model.n += 1
        filling = model.n <= REFERENCE
        features = doc["features"]
        for name, value in features.items():
            if filling and value is not None and name not in model.features:
                kind = "categorical" if isinstance(value, str) else "numeric"
                model.features[name] = _Series(kind)
        for name, feature in model.features.items():
            _check(feature, features.get(name), filling)
        score = doc.get("score")
        if isinstance(score, int | float) and not isinstance(score, bool):
            model.score.add(score, filling)
        if model.n == REFERENCE:
            for feature in model.features.values():
                feature.freeze()
            model.score.freeze()
        elif model.n > REFERENCE and (model.n - REFERENCE) % EVERY == 0:
            self._test(model_id, model, "data_drift", model.features)
            self._test(model_id, model, "prediction_drift", {"score": model.score})
        if model.n % QUALITY_EVERY == 0:
            self._quality(model_id, model)

    def _test(self, model_id: str, model: _Model, kind: str, series: dict[str, Any]) -> None:
        started = time.perf_counter()
        tested = {name: s for name, s in series.items() if s.frozen is not None}
        for name, s in tested.items():
            if len(s.window) < MIN_WINDOW:
                continue
            p = _chi2(s.frozen, s.window) if s.kind == "categorical" else _ks(s.frozen, s.window)
            s.drifted = s.drifted + 1 if p < ALPHA / len(tested) else 0
            if s.drifted >= FOR_EVALUATIONS:
                self._fire(model_id, model, kind, name)
        self.test_seconds += time.perf_counter() - started

    def _quality(self, model_id: str, model: _Model) -> None:
        for name, f in model.features.items():
            n = len(f.flags)
            if n < QUALITY_MIN:
                continue
            rates = [
                ("null_rate", f.nulls / n, f.base["null_rate"]),
                ("type_mismatch_rate", f.mismatches / n, f.base["type_mismatch_rate"]),
            ]
            if f.checked >= QUALITY_MIN:
                metric = "out_of_range_rate" if f.kind == "numeric" else "unseen_category_rate"
                rates.append((metric, f.outside / f.checked, 0.0))
            for metric, rate, base in rates:
                warning, critical = QUALITY_LEVELS[metric]
                for severity, level in (("critical", critical), ("warning", warning)):
                    if rate > base + level:
                        self._fire(model_id, model, "data_quality", name, metric, severity)

    def _label(self, model_id: str, model: _Model, prediction: Any, label: Any) -> None:
        model.labels += 1
        correct = prediction == label
        before = model.adwin.estimation
        model.adwin.update(0 if correct else 1)
        if model.adwin.drift_detected and model.adwin.estimation > before:
            self._fire(model_id, model, "concept_drift")

        predicted, actual = prediction == POSITIVE, label == POSITIVE
        event = (correct, predicted, actual, predicted and actual)
        model.recent.append(event)
        model.sums = [total + x for total, x in zip(model.sums, event, strict=True)]
        if len(model.recent) > KPI_WINDOW:
            gone = model.recent.popleft()
            model.sums = [total - x for total, x in zip(model.sums, gone, strict=True)]
        if model.reference_accuracy is None:
            model.reference_correct += correct
            if model.labels == KPI_REFERENCE:
                model.reference_accuracy = model.reference_correct / KPI_REFERENCE
        if model.labels % KPI_EVERY:
            return
        n, (correct_n, predicted_n, actual_n, tp) = len(model.recent), model.sums
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / actual_n if actual_n else 0.0
        model.kpis = {
            "accuracy": correct_n / n,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
            "label_coverage": model.labels / model.n if model.n else 0.0,
        }
        if model.reference_accuracy is None or n < KPI_MIN:
            return
        drop = model.reference_accuracy - model.kpis["accuracy"]
        for severity, level in ACCURACY_LEVELS:
            if drop > level:
                self._fire(model_id, model, "kpi_threshold", "accuracy", severity)


def _check(feature: _Series, value: Any, filling: bool) -> None:
    """One event's value of a feature: its quality flags, and the value for the drift test."""
    null = value is None
    if null:
        mismatch = False
    elif feature.kind == "numeric":
        mismatch = isinstance(value, bool) or not isinstance(value, int | float)
    else:
        mismatch = not isinstance(value, str)
    usable = not null and not mismatch
    checked = outside = False
    if filling:
        feature.events += 1
        feature.reference_nulls += null
        feature.reference_mismatches += mismatch
    elif usable and feature.frozen is not None:
        checked = True
        if feature.kind == "numeric":
            outside = value < feature.low or value > feature.high
        else:
            outside = value not in feature.frozen
    if usable:
        feature.add(value, filling)
    feature.flags.append((null, mismatch, checked, outside))
    feature.nulls += null
    feature.mismatches += mismatch
    feature.checked += checked
    feature.outside += outside
    if len(feature.flags) > QUALITY_WINDOW:
        old_null, old_mismatch, old_checked, old_outside = feature.flags.popleft()
        feature.nulls -= old_null
        feature.mismatches -= old_mismatch
        feature.checked -= old_checked
        feature.outside -= old_outside


def _ks(reference: np.ndarray, window: deque[Any]) -> float:
    sample = np.fromiter(window, float, len(window))
    return float(ks_2samp(reference, sample, method="asymp").pvalue)


def _chi2(reference: Counter[Any], window: deque[Any]) -> float:
    counts = Counter(window)
    categories = list(reference.keys() | counts.keys())
    table = [[reference[c] for c in categories], [counts[c] for c in categories]]
    return float(chi2_contingency(table, correction=False).pvalue)
