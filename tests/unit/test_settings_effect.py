"""Every per-model setting changes what a monitor does: flip one, and a specific thing changes.

Each row of the table runs one small seeded stream through two ``ModelMonitor``s, one with the
row's base settings and one with the same settings and one setting flipped, and asserts the
difference the flip must make: which alerts fire, when, with which threshold or evidence, what
the KPI snapshot holds. A setting that changes nothing is a bug, and its row fails.

Not here: ``data_drift.profile`` / ``prediction_drift.profile`` are paths the service reads
(``tests/unit/test_replay_cli.py`` runs one end to end); here the profile is handed to the
monitor directly. ``prediction_drift.correction`` cannot change anything: prediction drift tests
one column. Every assertion is deterministic: the streams are seeded.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from driftline.detectors.alerts import iso_ms
from driftline.detectors.columns import columnarize
from driftline.detectors.events import Labeled, Prediction, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings, Threshold

Alert = dict[str, Any]
FOREVER = 10**9

# --- streams ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """Events one second apart (outcomes 500 ms after their prediction) with changes between
    the ``changes`` (start, stop) indices. Features: ``x0`` ~ N(0, 1), ``x1`` ~ N(5, 2),
    ``c0`` in a, b, c."""

    n: int = 1500
    seed: int = 1
    changes: tuple[tuple[int, int], ...] = ()
    regression: bool = False
    accuracy_after: float = 0.92  # classification: share of right predictions in a change
    noise_after: float = 1.0  # regression: sd of the prediction error in a change
    shift: float = 0.0  # of x0's mean in a change
    shift_x1: float = 0.0  # of x1's mean in a change
    coupled: float = 0.0  # correlation of x1 with x0 in a change (their marginals unchanged)
    base_nulls: float = 0.0  # share of null x1, always
    nulls: float = 0.0  # more null x1 in a change
    mismatches: float = 0.0  # x1 holds a string in a change
    out_of_range: float = 0.0  # x0 is 1e6 in a change
    unseen: float = 0.0  # c0 is a category never seen in a change
    score_shift: float = 0.0  # added to the score in a change
    unsure: float = 0.0  # share of its distance from 0.5 the score loses in a change
    regions: int = 0  # segment {"region": "r<i % regions>"} on every prediction
    only_region: str | None = None  # the changes hold in this region only
    version_at: int = FOREVER  # model_version "v2" from this index

    def changed(self, i: int) -> bool:
        if self.only_region is not None and self.region(i) != self.only_region:
            return False
        return any(start <= i < stop for start, stop in self.changes)

    def region(self, i: int) -> str | None:
        return f"r{i % self.regions}" if self.regions else None

    def events(self) -> tuple[list[Prediction], list[Labeled]]:
        rng = np.random.default_rng(self.seed)
        predictions, labeled = [], []
        for i in range(self.n):
            changed = self.changed(i)
            x0 = float(rng.normal(self.shift if changed else 0.0, 1.0))
            x1: object = float(rng.normal(5.0 + (self.shift_x1 if changed else 0.0), 2.0))
            if changed and self.coupled:
                c, z0, z1 = self.coupled, x0 - self.shift, (float(x1) - 5.0) / 2.0
                x1 = 5.0 + 2.0 * (c * z0 + math.sqrt(1.0 - c * c) * z1)
            c0 = str(rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2]))
            u = rng.random(4)
            if u[0] < self.base_nulls + (self.nulls if changed else 0.0):
                x1 = None
            elif changed and u[1] < self.mismatches:
                x1 = "n/a"
            if changed and u[2] < self.out_of_range:
                x0 = 1e6
            if changed and u[3] < self.unseen:
                c0 = "zz"
            prediction: object
            label: object
            score: float | None = None
            if self.regression:
                label = float(rng.normal(10.0, 3.0))
                prediction = label + float(rng.normal(0.0, self.noise_after if changed else 1.0))
            else:
                label = int(rng.random() < 0.4)
                right = rng.random() < (self.accuracy_after if changed else 0.92)
                prediction = label if right else 1 - label
                noisy = 0.7 * prediction + 0.15 + float(rng.normal(0.0, 0.08))
                score = min(max(noisy + (self.score_shift if changed else 0.0), 0.0), 1.0)
                if changed and self.unsure:
                    score = 0.5 + (score - 0.5) * (1.0 - self.unsure)
            version = "v2" if i >= self.version_at else "v1"
            t = i * 1000
            features = {"x0": x0, "x1": x1, "c0": c0}
            source = Source("predictions", 0, i)
            region = self.region(i)
            segment = None if region is None else {"region": region}
            predictions.append(
                Prediction(str(i), "m", version, t, features, prediction, score, segment, source)
            )
            labeled.append(
                Labeled(
                    str(i),
                    "m",
                    version,
                    prediction,
                    score,
                    label,
                    t,
                    t + 500,
                    Source("outcomes", 0, i),
                    segment,
                )
            )
        return predictions, labeled


@dataclass(frozen=True)
class Run:
    alerts: list[Alert]
    snapshot: dict[str, Any]

    def of(
        self,
        kind: str,
        status: str | None = None,
        severity: str | None = None,
        subject: str | None = None,
    ) -> list[Alert]:
        return [
            a
            for a in self.alerts
            if a["kind"] == kind
            and status in (None, a["status"])
            and severity in (None, a["severity"])
            and subject in (None, a.get("feature") or a.get("metric"))
        ]

    def first(self, kind: str, status: str, severity: str = "warning") -> Alert:
        found = self.of(kind, status, severity)
        assert found, f"no {kind} {severity} {status} alert"
        return found[0]

    def offset(self, kind: str, status: str, severity: str = "warning") -> int:
        return int(self.first(kind, status, severity)["source"]["offset"])

    @property
    def kpis(self) -> dict[str, Any]:
        kpis: dict[str, Any] = self.snapshot["kpis"]
        return kpis


def profile_of(stream: Stream, n: int) -> ModelProfile:
    """A training profile: the features and scores of the first ``n`` events of ``stream``."""
    predictions, _ = stream.events()
    kinds = {"x0": "numeric", "x1": "numeric", "c0": "categorical"}
    columns = columnarize([p.features for p in predictions[:n]], kinds)
    outputs = columnarize([{"score": p.score} for p in predictions[:n]], {"score": "numeric"})
    return ModelProfile.from_columns(columns, kinds, outputs=outputs)  # type: ignore[arg-type]


@cache
def run(settings_json: str, stream: Stream, feed: str, profile_rows: int = 0) -> Run:
    settings = MonitorSettings.model_validate(json.loads(settings_json))
    profile = profile_of(Stream(seed=99), profile_rows) if profile_rows else None
    monitor = ModelMonitor("m", settings, profile)
    predictions, labeled = stream.events()
    out: list[Alert] = []
    for start in range(0, stream.n, 200):
        if feed in ("both", "predictions"):
            out += monitor.observe_predictions(predictions[start : start + 200])
        if feed in ("both", "labels"):
            out += monitor.observe_labeled(labeled[start : start + 200])
    return Run([a for a in out if a["kind"] != "incident"], monitor.kpi_snapshot())


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Small windows and references so that every stream is short. Each family switches on the
# signals it needs; the rest stay off so that a row sees only its own signal.
FEW = {"min_samples": 50}  # of a KPI window of 100 (the default, 200, would never be reached)
DRIFT_BASE = {
    "reference_size": 300,
    "window_size": 200,
    "every": 50,
    "for_evaluations": 1,
    "resolve_evaluations": 2,
}
BASE: dict[str, Any] = {
    "concept_drift": {"enabled": False},
    "kpis": {
        "size": 100,
        "every": 10,
        "reference_size": 200,
        "thresholds": [
            {"metric": "accuracy", "relative": True, "warning": 0.05, "critical": 0.15, **FEW},
            {"metric": "rmse", "relative": True, "warning": 0.25, "critical": 0.5, **FEW},
        ],
    },
    "data_drift": {"enabled": False, **DRIFT_BASE},
    "multivariate_drift": {"enabled": False},
    "estimated_performance": {"enabled": False},
    "prediction_drift": {"enabled": False, **DRIFT_BASE},
    "data_quality": {"enabled": False, "window_size": 100, "every": 20, "min_samples": 50},
}


@dataclass(frozen=True)
class Case:
    id: str
    flip: dict[str, Any]
    check: Callable[[Run, Run], None]
    stream: Stream
    feed: str = "labels"
    base: dict[str, Any] | None = None  # patch of BASE for the row's family
    profile_rows: int = 0
    known_bug: str | None = None  # the row fails until this bug is fixed (strict xfail)

    def runs(self) -> tuple[Run, Run]:
        base = merged(BASE, self.base or {})
        flipped = merged(base, self.flip)
        key = (self.stream, self.feed, self.profile_rows)
        return (
            run(json.dumps(base, sort_keys=True), *key),
            run(json.dumps(flipped, sort_keys=True), *key),
        )


def kpi_offsets(r: Run) -> set[int]:
    return {a["source"]["offset"] for a in r.of("kpi_threshold")}


def later_by(kind: str, status: str, at_least: int) -> Callable[[Run, Run], None]:
    """The first (warning) alert of ``status`` comes at least ``at_least`` events later."""

    def check(base: Run, flipped: Run) -> None:
        assert flipped.offset(kind, status) - base.offset(kind, status) >= at_least

    return check


def earlier(kind: str, status: str = "firing") -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        assert flipped.offset(kind, status) < base.offset(kind, status)

    return check


def silenced(kind: str) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        assert base.of(kind, "firing") and not flipped.of(kind)

    return check


def never_resolves(kind: str) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        assert base.of(kind, "resolved") and flipped.of(kind, "firing")
        assert not flipped.of(kind, "resolved")

    return check


# --- task, positive label, label-side streams -------------------------------------------------

ACCURACY_DROP = Stream(changes=((600, 1000),), accuracy_after=0.6)
LONG_DROP = Stream(n=3000, changes=((600, 1500),), accuracy_after=0.6)
NOISE_RISE = Stream(n=3000, regression=True, changes=((600, 1500),), noise_after=3.0)
TWO_DROPS = Stream(n=2000, changes=((500, 750), (1100, 1350)), accuracy_after=0.55)
MILD_DROP = Stream(n=2500, changes=((600, 2500),), accuracy_after=0.8)
ABSOLUTE = {"metric": "accuracy", "warning": 0.85, "critical": 0.75, **FEW}


TIME_80S = {"kpis": {"window": "time", "duration_s": 80}}


def one_threshold(**fields: Any) -> dict[str, Any]:
    return {"kpis": {"thresholds": [{**ABSOLUTE, **fields}]}}


def check_task_regression(base: Run, flipped: Run) -> None:
    assert (base.snapshot["task"], flipped.snapshot["task"]) == ("classification", "regression")
    assert "accuracy" in base.kpis and "accuracy" not in flipped.kpis
    # 0/1 labels as numbers: the squared error is the error rate, its root the RMSE.
    assert flipped.kpis["rmse"] == pytest.approx(math.sqrt(1.0 - base.kpis["accuracy"]), 1e-5)
    assert {a["metric"] for a in flipped.of("kpi_threshold")} == {"rmse"}


def check_task_classification(base: Run, flipped: Run) -> None:
    assert (base.snapshot["task"], flipped.snapshot["task"]) == ("regression", "classification")
    assert "rmse" in base.kpis and "rmse" not in flipped.kpis
    assert flipped.kpis["accuracy"] == 0.0  # a continuous prediction never equals its outcome


def check_positive_label(base: Run, flipped: Run) -> None:
    # Predictions are 0 or 1: the other class's positive rate is the complement.
    assert flipped.kpis["positive_rate"] == pytest.approx(1.0 - base.kpis["positive_rate"])
    assert flipped.kpis["precision"] != pytest.approx(base.kpis["precision"])
    assert flipped.kpis["accuracy"] == base.kpis["accuracy"]


def check_kpis_disabled(base: Run, flipped: Run) -> None:
    assert base.of("kpi_threshold", "firing") and not flipped.of("kpi_threshold")
    # No KPI window nor reference; label coverage and delay are still tracked.
    assert flipped.kpis["accuracy"] is None and flipped.snapshot["window"]["size"] == 0
    assert flipped.snapshot["reference"] is None and base.snapshot["reference"] is not None
    assert flipped.kpis["label_coverage"] == base.kpis["label_coverage"] == 1.0


def check_time_window(seconds: int) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # Outcomes arrive one per second: a window of `seconds` holds that many.
        window = flipped.snapshot["window"]
        assert window["size"] == flipped.kpis["n"] == seconds != base.snapshot["window"]["size"]
        last_ms = (ACCURACY_DROP.n - 1) * 1000 + 500
        assert window["last_event_time"] == iso_ms(last_ms)
        assert window["first_event_time"] == iso_ms(last_ms - (seconds - 1) * 1000)

    return check


def check_kpi_size(base: Run, flipped: Run) -> None:
    assert (base.snapshot["window"]["size"], flipped.snapshot["window"]["size"]) == (100, 60)
    assert flipped.kpis["n"] == 60


def check_kpi_every(base: Run, flipped: Run) -> None:
    assert kpi_offsets(flipped) and all((o + 1) % 35 == 0 for o in kpi_offsets(flipped))
    assert any((o + 1) % 35 for o in kpi_offsets(base))


def check_kpi_reference_size(base: Run, flipped: Run) -> None:
    assert (base.snapshot["reference"]["n"], flipped.snapshot["reference"]["n"]) == (200, 400)
    alert = flipped.first("kpi_threshold", "firing")
    assert alert["reference"]["size"] == 400
    assert alert["threshold"] == pytest.approx(alert["reference"]["value"] - 0.05)


def check_metric(base: Run, flipped: Run) -> None:
    assert {a["metric"] for a in base.of("kpi_threshold")} == {"accuracy"}
    assert {a["metric"] for a in flipped.of("kpi_threshold")} == {"f1"}


def check_level(severity: str, level: float) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        assert flipped.first("kpi_threshold", "firing", severity)["threshold"] == level
        assert base.first("kpi_threshold", "firing", severity)["threshold"] != level

    return check


def check_relative(base: Run, flipped: Run) -> None:
    # 0.05 is an accuracy no model falls below; as a drop from the reference it fires.
    assert not base.of("kpi_threshold")
    alert = flipped.first("kpi_threshold", "firing")
    assert alert["detector"] == "relative_threshold" and alert["reference"]["relative"] is True
    assert alert["threshold"] == pytest.approx(alert["reference"]["value"] - 0.05)


def check_kpi_confidence(base: Run, flipped: Run) -> None:
    earlier("kpi_threshold")(base, flipped)
    assert flipped.first("kpi_threshold", "firing")["evidence"]["confidence"] == 0.6


def check_min_samples(base: Run, flipped: Run) -> None:
    # An 80 s window of events one second apart never holds 100 (a count window of fewer than
    # min_samples events is refused by the settings: it could never fire).
    assert base.of("kpi_threshold") and not flipped.of("kpi_threshold")


def check_cooldown(base: Run, flipped: Run) -> None:
    assert len(base.of("kpi_threshold", "firing", "warning")) == 2
    assert len(flipped.of("kpi_threshold", "firing", "warning")) == 1


def check_label_metric(base: Run, flipped: Run) -> None:
    # Outcomes come 500 ms after their prediction: above a 400 ms level from the first window.
    alert = flipped.first("kpi_threshold", "firing")
    assert alert["metric"] == "label_delay_p95_ms" and alert["value"] == 500.0
    assert not base.of("kpi_threshold", subject="label_delay_p95_ms")


def check_thresholds_empty(base: Run, flipped: Run) -> None:
    assert base.of("kpi_threshold") and not flipped.alerts


def check_params(base: Run, flipped: Run) -> None:
    alert = flipped.first("concept_drift", "firing", "critical")
    assert alert["evidence"]["params"] == {"delta": 1e-12}
    assert base.first("concept_drift", "firing", "critical")["evidence"]["params"] == {}
    assert alert["source"]["offset"] > base.offset("concept_drift", "firing", "critical")


def check_detector(base: Run, flipped: Run) -> None:
    assert {a["detector"] for a in base.of("concept_drift")} == {"adwin"}
    assert flipped.of("concept_drift", "firing")
    assert {a["detector"] for a in flipped.of("concept_drift")} == {"ddm"}


def check_loss(base: Run, flipped: Run) -> None:
    # The level is the error before the change, of N(0, 1) errors: mean absolute error
    # sqrt(2 / pi) = 0.80, mean squared error 1.
    absolute = base.first("concept_drift", "firing", "critical")["threshold"]
    squared = flipped.first("concept_drift", "firing", "critical")["threshold"]
    assert absolute == pytest.approx(math.sqrt(2 / math.pi), abs=0.06)
    assert squared == pytest.approx(1.0, abs=0.08)


def check_false_resolve_rate(base: Run, flipped: Run) -> None:
    strict = base.offset("concept_drift", "resolved", "critical")
    loose = flipped.offset("concept_drift", "resolved", "critical")
    assert LONG_DROP.changes[0][1] <= loose < strict


LABEL_CASES = [
    Case("task-regression", {"task": "regression"}, check_task_regression, ACCURACY_DROP),
    Case(
        "task-classification",
        {"task": "classification"},
        check_task_classification,
        Stream(regression=True),
    ),
    Case("positive_label", {"positive_label": 0}, check_positive_label, ACCURACY_DROP),
    Case("kpis.enabled", {"kpis": {"enabled": False}}, check_kpis_disabled, ACCURACY_DROP),
    Case(
        "kpis.window",
        {"kpis": {"window": "time", "duration_s": 30}},
        check_time_window(30),
        ACCURACY_DROP,
    ),
    Case(
        "kpis.duration_s",
        {"kpis": {"duration_s": 45}},
        check_time_window(45),
        ACCURACY_DROP,
        base={"kpis": {"window": "time", "duration_s": 30}},
    ),
    Case("kpis.size", {"kpis": {"size": 60}}, check_kpi_size, ACCURACY_DROP),
    Case("kpis.every", {"kpis": {"every": 35}}, check_kpi_every, ACCURACY_DROP),
    Case(
        "kpis.reference_size",
        {"kpis": {"reference_size": 400}},
        check_kpi_reference_size,
        ACCURACY_DROP,
    ),
    Case("kpis.thresholds", {"kpis": {"thresholds": []}}, check_thresholds_empty, ACCURACY_DROP),
    Case(
        "threshold.metric",
        one_threshold(metric="f1", warning=0.8, critical=0.7),
        check_metric,
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.metric-label",
        one_threshold(metric="label_delay_p95_ms", warning=400.0, critical=None),
        check_label_metric,
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.warning",
        one_threshold(warning=0.8),
        check_level("warning", 0.8),
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.critical",
        one_threshold(critical=0.7),
        check_level("critical", 0.7),
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.relative",
        one_threshold(relative=True, warning=0.05, critical=None),
        check_relative,
        ACCURACY_DROP,
        base=one_threshold(warning=0.05, critical=None),
    ),
    Case(
        "threshold.confidence",
        one_threshold(confidence=0.6),
        check_kpi_confidence,
        MILD_DROP,
        base=one_threshold(warning=0.88, critical=None),
    ),
    Case(
        "threshold.resolve_evaluations",
        one_threshold(resolve_evaluations=10),
        later_by("kpi_threshold", "resolved", 7 * 10),
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.min_samples",
        merged(TIME_80S, one_threshold(min_samples=100)),
        check_min_samples,
        ACCURACY_DROP,
        base=merged(TIME_80S, one_threshold()),
    ),
    Case(
        "threshold.for_updates",
        one_threshold(for_updates=5),
        later_by("kpi_threshold", "firing", 4 * 10),
        ACCURACY_DROP,
        base=one_threshold(),
    ),
    Case(
        "threshold.cooldown",
        one_threshold(cooldown=100),
        check_cooldown,
        TWO_DROPS,
        base=one_threshold(resolve_evaluations=1),
    ),
    Case(
        "concept_drift.enabled",
        {"concept_drift": {"enabled": False}},
        silenced("concept_drift"),
        LONG_DROP,
        base={"concept_drift": {"enabled": True}, "kpis": {"enabled": False}},
    ),
    Case(
        "concept_drift.detector",
        {"concept_drift": {"detector": "ddm"}},
        check_detector,
        LONG_DROP,
        base={"concept_drift": {"enabled": True}, "kpis": {"enabled": False}},
    ),
    Case(
        "concept_drift.params",
        {"concept_drift": {"params": {"delta": 1e-12}}},
        check_params,
        LONG_DROP,
        base={"concept_drift": {"enabled": True}, "kpis": {"enabled": False}},
    ),
    Case(
        "concept_drift.loss",
        {"concept_drift": {"loss": "squared"}},
        check_loss,
        NOISE_RISE,
        base={"concept_drift": {"enabled": True}, "kpis": {"enabled": False}},
    ),
    Case(
        "concept_drift.false_resolve_rate",
        {"concept_drift": {"false_resolve_rate": 1e-2}},
        check_false_resolve_rate,
        LONG_DROP,
        base={"concept_drift": {"enabled": True}, "kpis": {"enabled": False}},
    ),
]

# --- data drift and prediction drift ------------------------------------------------------------

DRIFTS = {
    "data_drift": {"shift": 1.0},
    "prediction_drift": {"score_shift": 0.25},
}


def drift_stream(kind: str, **fields: Any) -> Stream:
    return Stream(**{"n": 1800, "changes": ((600, 1100),), **DRIFTS[kind], **fields})


def check_sliding(kind: str) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # The reference is the window before the current one (200 events), not the first 300.
        first_n = base.first(kind, "firing")["reference"]
        sliding = flipped.first(kind, "firing")["reference"]
        assert (first_n["type"], first_n["size"]) == ("first_n", 300)
        assert (sliding["type"], sliding["size"]) == ("sliding", 200)

    return check


def check_profile(kind: str) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # Changed from the first event: the first events are the changed ones, the training
        # profile is not.
        assert not base.of(kind)
        alert = flipped.first(kind, "firing")
        assert alert["reference"]["type"] == "profile" and alert["reference"]["size"] == 400

    return check


def check_drift_field(kind: str, path: tuple[str, ...], base_value: Any, value: Any) -> Any:
    def check(base: Run, flipped: Run) -> None:
        def field(alert: Alert) -> Any:
            for key in path:
                alert = alert[key]
            return alert

        assert field(base.first(kind, "firing")) == base_value
        assert field(flipped.first(kind, "firing")) == value

    return check


def check_drift_every(kind: str) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # Evaluations every `every` events once the 300-event reference is complete.
        offsets = {a["source"]["offset"] + 1 - 300 for a in flipped.of(kind)}
        assert offsets and all(o % 70 == 0 for o in offsets)
        assert any((a["source"]["offset"] + 1 - 300) % 70 for a in base.of(kind))

    return check


def check_alpha(kind: str, features: int) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # Bonferroni: the level of each of the features tested is alpha / features.
        assert base.first(kind, "firing")["threshold"] == pytest.approx(1e-5 / features)
        assert flipped.first(kind, "firing")["threshold"] == pytest.approx(1e-3 / features)

    return check


def check_correction(levels: list[float]) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        # x0 and x1 both shift; the level each first fires at. Bonferroni: alpha / 3 each.
        # Holm: alpha / 3 for the smallest p-value, alpha / 2 for the next. Benjamini-Hochberg
        # with two discoveries: 2 alpha / 3 for both.
        def first_levels(r: Run) -> list[float]:
            first: dict[str, float] = {}
            for a in r.of("data_drift", "firing"):
                first.setdefault(a["feature"], a["threshold"])
            assert set(first) == {"x0", "x1"}
            return sorted(first.values())

        assert first_levels(base) == pytest.approx([1e-5 / 3, 1e-5 / 3])
        assert first_levels(flipped) == pytest.approx(levels)

    return check


def drift_cases(kind: str) -> list[Case]:
    on = {kind: {"enabled": True}}
    stream = drift_stream(kind)
    tests = 3 if kind == "data_drift" else 1  # features, or the score

    def case(name: str, flip: dict[str, Any], check: Any, **kw: Any) -> Case:
        kw.setdefault("stream", stream)
        base = merged(on, {kind: kw.pop("base", {})})
        return Case(f"{kind}.{name}", {kind: flip}, check, feed="predictions", base=base, **kw)

    cases = [
        case("enabled", {"enabled": False}, silenced(kind)),
        case(
            "reference-sliding",
            {"reference": "sliding"},
            check_sliding(kind),
            stream=drift_stream(kind, n=2400, changes=((600, FOREVER),)),
        ),
        case(
            "reference-profile",
            {"reference": "profile", "profile": "training.json"},
            check_profile(kind),
            stream=drift_stream(kind, changes=((0, FOREVER),)),
            profile_rows=400,
        ),
        case(
            "reference_size",
            {"reference_size": 450},
            check_drift_field(kind, ("reference", "size"), 300, 450),
        ),
        case(
            "window",
            {"window": "time", "window_duration_s": 250},
            check_drift_field(kind, ("window", "size"), 400, 250),
            base={"window_size": 400},  # a time window is capped at it
        ),
        case(
            "window_duration_s",
            {"window_duration_s": 300},
            check_drift_field(kind, ("window", "size"), 250, 300),
            # An evaluation needs 200 events in the window (DataDriftMonitor.min_window).
            base={"window": "time", "window_duration_s": 250, "window_size": 400},
        ),
        case(
            "window_size",
            {"window_size": 120},
            check_drift_field(kind, ("window", "size"), 200, 120),
        ),
        case("every", {"every": 70}, check_drift_every(kind)),
        case("alpha", {"alpha": 1e-3}, check_alpha(kind, tests)),
        case("for_evaluations", {"for_evaluations": 3}, later_by(kind, "firing", 2 * 50)),
        case(
            "resolve_evaluations",
            {"resolve_evaluations": 4},
            later_by(kind, "resolved", 2 * 50),
        ),
        case("resolve_p_value", {"resolve_p_value": 0.9999}, never_resolves(kind)),
    ]
    if kind == "data_drift":  # prediction drift tests one column: no correction applies
        cases += [
            case(
                f"correction-{name}",
                {"correction": name},
                check_correction(levels),
                stream=drift_stream(kind, shift_x1=2.0),
            )
            for name, levels in (
                ("holm", [1e-5 / 3, 1e-5 / 2]),
                ("benjamini_hochberg", [2e-5 / 3, 2e-5 / 3]),
            )
        ]
    return cases


# --- multivariate drift -------------------------------------------------------------------------

COUPLED = Stream(n=1800, changes=((600, 1100),), coupled=0.9)
MULTIVARIATE = {"data_drift": {"enabled": True}, "multivariate_drift": {"enabled": True}}


def joint(r: Run, status: str | None = None) -> list[Alert]:
    return [a for a in r.of("data_drift", status) if a["detector"] == "spearman_correlation"]


def check_multivariate_enabled(base: Run, flipped: Run) -> None:
    # x0 and x1 become correlated, each keeping its distribution: only the joint test sees it.
    assert joint(base, "firing") and joint(base, "resolved") and not flipped.of("data_drift")
    assert len(joint(base)) == len(base.of("data_drift"))
    assert joint(base, "firing")[0]["evidence"]["features"] == ["x0", "x1"]


def check_false_alarm_rate(base: Run, flipped: Run) -> None:
    # Bonferroni over the one pair of numeric features: the level is the rate itself.
    assert joint(base, "firing")[0]["threshold"] == pytest.approx(1e-6)
    assert joint(flipped, "firing")[0]["threshold"] == pytest.approx(1e-12)


def check_joint_min_samples(base: Run, flipped: Run) -> None:
    # The 200-event window never holds 250 complete rows: the test does not run.
    assert joint(base, "firing") and not flipped.of("data_drift")


MULTIVARIATE_CASES = [
    Case(
        f"multivariate_drift.{name}",
        {"multivariate_drift": flip},
        check,
        COUPLED,
        feed="predictions",
        base=MULTIVARIATE,
    )
    for name, flip, check in (
        ("enabled", {"enabled": False}, check_multivariate_enabled),
        ("false_alarm_rate", {"false_alarm_rate": 1e-12}, check_false_alarm_rate),
        ("min_samples", {"min_samples": 250}, check_joint_min_samples),
    )
]

# --- estimated performance ----------------------------------------------------------------------

ESTIMATED = "estimated_performance"
UNSURE = Stream(n=1800, changes=((600, 1100),), unsure=0.5)
SLIGHTLY_UNSURE = Stream(n=1800, changes=((600, 1100),), unsure=0.2)
ESTIMATED_BASE = {
    ESTIMATED: {
        "enabled": True,
        "reference_size": 300,
        "window_size": 200,
        "every": 50,
        "min_samples": 100,
    }
}


def severities(kind: str, base: set[str], flipped: set[str]) -> Callable[[Run, Run], None]:
    """The severities that fire, with the base settings and flipped."""

    def check(b: Run, f: Run) -> None:
        assert {a["severity"] for a in b.of(kind, "firing")} == base
        assert {a["severity"] for a in f.of(kind, "firing")} == flipped

    return check


def check_estimated_levels(base: Run, flipped: Run) -> None:
    # Levels are drops from the reference's expected accuracy.
    for run_, drop in ((base, 0.03), (flipped, 0.05)):
        alert = run_.first(ESTIMATED, "firing")
        assert alert["threshold"] == pytest.approx(alert["reference"]["value"] - drop)


def estimated_cases() -> list[Case]:
    def case(name: str, flip: dict[str, Any], check: Any, stream: Stream = UNSURE) -> Case:
        return Case(
            f"{ESTIMATED}.{name}",
            {ESTIMATED: flip},
            check,
            stream,
            feed="predictions",
            base=ESTIMATED_BASE,
        )

    return [
        case("enabled", {"enabled": False}, silenced(ESTIMATED)),
        case("warning", {"warning": 0.05}, check_estimated_levels),
        case(
            "warning-none",
            {"warning": None},
            severities(ESTIMATED, {"warning", "critical"}, {"critical"}),
        ),
        case(
            "critical",
            {"critical": 0.3},
            severities(ESTIMATED, {"warning", "critical"}, {"warning"}),
        ),
        case(
            "confidence",
            {"confidence": 0.9999999},
            later_by(ESTIMATED, "firing", 50),
            SLIGHTLY_UNSURE,
        ),
        case(
            "reference_size",
            {"reference_size": 450},
            check_drift_field(ESTIMATED, ("reference", "size"), 300, 450),
        ),
        case(
            "window_size",
            {"window_size": 120},
            check_drift_field(ESTIMATED, ("window", "size"), 200, 120),
        ),
        case("every", {"every": 70}, check_drift_every(ESTIMATED)),
        case(
            "min_samples",
            {"min_samples": 200},
            later_by(ESTIMATED, "firing", 50),
            Stream(n=1800, changes=((300, 1100),), unsure=0.5),
        ),
        case("for_evaluations", {"for_evaluations": 3}, later_by(ESTIMATED, "firing", 50)),
        case(
            "resolve_evaluations",
            {"resolve_evaluations": 5},
            later_by(ESTIMATED, "resolved", 100),
        ),
    ]


# --- segments ---------------------------------------------------------------------------------

REGION_DROP = Stream(
    n=3000, changes=((1200, 3000),), accuracy_after=0.4, regions=4, only_region="r0"
)


def check_segments(base: Run, flipped: Run) -> None:
    # The drop of one region in four moves the whole model's accuracy by 13 points; only the
    # flipped run names the region, and no other.
    assert not any("segment" in a for a in base.alerts)
    named = [a for a in flipped.alerts if "segment" in a]
    assert named and all(a["segment"] == {"region": "r0"} for a in named)
    assert {a["kind"] for a in named} == {"concept_drift", "kpi_threshold"}
    assert flipped.snapshot["segments"]["values"] == {"region": ["r0", "r1", "r2", "r3"]}


def check_max_segments(base: Run, flipped: Run) -> None:
    # First come, first judged: r0 and r1 on their own, r2 and r3 pooled.
    assert base.snapshot["segments"] == {
        "values": {"region": ["r0", "r1", "r2", "r3"]},
        "pooled_events": 0,
    }
    assert flipped.snapshot["segments"]["values"] == {"region": ["r0", "r1", "__other__"]}
    assert flipped.snapshot["segments"]["pooled_events"] == 1500  # half of 3,000 labels


SEGMENT_BASE = {"concept_drift": {"enabled": True}}
SEGMENT_CASES = [
    Case("segments", {"segments": ["region"]}, check_segments, REGION_DROP, base=SEGMENT_BASE),
    Case(
        "max_segments_per_key",
        {"max_segments_per_key": 2},
        check_max_segments,
        REGION_DROP,
        base={**SEGMENT_BASE, "segments": ["region"]},
    ),
]

# --- data quality ---------------------------------------------------------------------------------

QUALITY = {"data_quality": {"enabled": True}}
QUALITY_CHANGES = {
    "null_rate": {"nulls": 0.4},
    "type_mismatch_rate": {"mismatches": 0.4},
    "out_of_range_rate": {"out_of_range": 0.4},
    "unseen_category_rate": {"unseen": 0.4},
}
DEFAULT_LEVELS = {
    "null_rate": (0.05, 0.15),
    "type_mismatch_rate": (0.01, 0.05),
    "out_of_range_rate": (0.05, 0.20),
    "unseen_category_rate": (0.05, 0.20),
}


def quality_stream(**fields: Any) -> Stream:
    return Stream(**{"n": 1500, "changes": ((600, 1000),), "nulls": 0.4, **fields})


def check_quality_level(metric: str, severity: str, level: float) -> Callable[[Run, Run], None]:
    def check(base: Run, flipped: Run) -> None:
        default = DEFAULT_LEVELS[metric][severity == "critical"]
        for r, expected in ((base, default), (flipped, level)):
            alerts = r.of("data_quality", "firing", severity)
            assert alerts and {a["detector"] for a in alerts} == {metric}
            # Relative levels: added to the rate in the reference.
            assert alerts[0]["threshold"] == pytest.approx(
                alerts[0]["reference"]["rate"] + expected
            )

    return check


def check_quality_relative(base: Run, flipped: Run) -> None:
    # x1 is null in 4 % of the reference and 11 % in the change: past 0.05 but not past the
    # reference + 0.05.
    assert not base.of("data_quality")
    absolute = flipped.first("data_quality", "firing")
    assert absolute["threshold"] == 0.05 and absolute["reference"]["relative"] is False
    assert absolute["source"]["offset"] >= 600


def check_quality_relative_from_the_start(base: Run, flipped: Run) -> None:
    # x1 is null in 20 % of the events from the start: with relative levels it must not alert
    # on that (it alerts when the rate rises past 0.25 in the change); absolute ones do.
    assert all(a["source"]["offset"] >= 600 for a in base.of("data_quality"))
    assert flipped.first("data_quality", "firing")["source"]["offset"] < 600


def check_quality_window(base: Run, flipped: Run) -> None:
    assert {a["window"]["size"] for a in base.of("data_quality")} == {100}
    assert {a["window"]["size"] for a in flipped.of("data_quality")} == {60}


def check_quality_every(base: Run, flipped: Run) -> None:
    offsets = {a["source"]["offset"] for a in flipped.of("data_quality")}
    assert offsets and all((o + 1) % 30 == 0 for o in offsets)
    assert any((a["source"]["offset"] + 1) % 30 for a in base.of("data_quality"))


def quality_case(name: str, flip: dict[str, Any], check: Any, **kw: Any) -> Case:
    kw.setdefault("stream", quality_stream())
    base = merged(QUALITY, {"data_quality": kw.pop("base", {})})
    return Case(
        f"data_quality.{name}", {"data_quality": flip}, check, feed="predictions", base=base, **kw
    )


QUALITY_CASES = [
    quality_case("enabled", {"enabled": False}, silenced("data_quality")),
    quality_case("window_size", {"window_size": 60}, check_quality_window),
    quality_case("every", {"every": 30}, check_quality_every),
    quality_case("min_samples", {"min_samples": 150}, silenced("data_quality")),
    *(
        quality_case(
            f"{metric}.{severity}",
            {metric: {severity: level}},
            check_quality_level(metric, severity, level),
            stream=quality_stream(**{"nulls": 0.0, **change}),
        )
        for metric, change in QUALITY_CHANGES.items()
        for severity, level in (("warning", 0.1), ("critical", 0.3))
    ),
    quality_case(
        "relative",
        {"relative": False},
        check_quality_relative,
        stream=quality_stream(base_nulls=0.04, nulls=0.07),
        base={"window_size": 400},
    ),
    quality_case(
        "relative-before_reference",
        {"relative": False},
        check_quality_relative_from_the_start,
        stream=quality_stream(base_nulls=0.2, nulls=0.3),
    ),
    quality_case(
        "confidence",
        {"confidence": 0.6},
        earlier("data_quality"),
        stream=quality_stream(nulls=0.12, changes=((600, 1400),)),
    ),
    quality_case(
        "resolve_evaluations",
        {"resolve_evaluations": 10},
        later_by("data_quality", "resolved", 7 * 20),
    ),
]

# --- versions ---------------------------------------------------------------------------------


def check_on_new_version(base: Run, flipped: Run) -> None:
    # The drop goes on past v2's first event (1200). Reset: v1's alerts resolve as superseded
    # and v2 gets a reference of its own, from its (degraded) first events; keep: v2 is judged
    # against v1's reference and its alerts go on firing.
    superseded = [
        a for a in base.of("kpi_threshold", "resolved") if a["resolution"] == "superseded"
    ]
    assert superseded and {a["source"]["offset"] for a in superseded} == {1200}
    assert not any(a.get("resolution") == "superseded" for a in flipped.alerts)
    assert base.snapshot["reference"]["accuracy"] < 0.75 < flipped.snapshot["reference"]["accuracy"]
    assert flipped.snapshot["model_version"] == base.snapshot["model_version"] == "v2"


VERSION_CASES = [
    Case(
        "on_new_version",
        {"on_new_version": "keep"},
        check_on_new_version,
        Stream(n=1800, changes=((800, FOREVER),), accuracy_after=0.6, version_at=1200),
    ),
]

CASES = [
    *LABEL_CASES,
    *drift_cases("data_drift"),
    *drift_cases("prediction_drift"),
    *MULTIVARIATE_CASES,
    *estimated_cases(),
    *SEGMENT_CASES,
    *QUALITY_CASES,
    *VERSION_CASES,
]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c.id,
            marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)] if c.known_bug else [],
        )
        for c in CASES
    ],
)
def test_flipping_a_setting_changes_what_the_monitor_does(case: Case) -> None:
    base, flipped = case.runs()
    case.check(base, flipped)


def documented(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= documented(annotation, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_every_documented_setting_has_a_row() -> None:
    """A setting added to ``MonitorSettings`` without a row here fails this test."""
    rows = {c.id.split("-")[0].replace("threshold.", "kpis.thresholds.") for c in CASES}
    expected = documented(MonitorSettings) | {f"kpis.thresholds.{f}" for f in documented(Threshold)}
    not_here = {
        "data_drift.profile",  # paths the service reads; the profile itself is passed here
        "prediction_drift.profile",
        # One column (the score, or the prediction): nothing to correct for.
        "prediction_drift.correction",
    }
    assert expected - not_here - rows == set()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_a_row_fails_when_its_setting_is_not_flipped(case: Case) -> None:
    """Each row's check tells the flip apart: run on the base settings twice, it fails."""
    base, _ = case.runs()
    with pytest.raises(AssertionError):
        case.check(base, base)
