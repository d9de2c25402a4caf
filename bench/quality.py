"""Detection delay and false alarms of the default monitor settings, on seeded synthetic streams.

``make quality`` runs this: ``bench/quality.py --output bench/QUALITY.md``.

Every run is one model with 20 features (15 numeric of five shapes, 5 categorical with 3-8
categories), a binary prediction with a probability score and an accuracy of 0.90. Its events are
serialised to JSON and driven through :class:`service.pipeline.Pipeline` exactly as the service
does it: decode, join, route to the model's ``ModelMonitor``, in batches of
``processing.batch_size`` records, with the config the service gets when it has no config file
(so ``MonitorSettings()`` for every model). Event times step 100 ms per prediction and each
outcome arrives 500 ms after its prediction, so the outcome of event *j* follows the prediction of
event *j + 5* in the record stream.

The scenarios and their floors (what the defaults must meet):

* stationary, at accuracy 0.90 and at 0.66: no firing alert of any kind;
* accuracy 0.90 -> 0.81 after 10,000 events: concept_drift or kpi_threshold fires within 1,000
  predictions;
* a 0.5 standard-deviation mean shift of one numeric feature: data_drift fires for that feature
  within 2,000 predictions, and for no other feature;
* a category share 0.15 -> 0.30: data_drift for that feature within 2,000, and no other;
* a null rate of 20% in one feature: data_quality ``null_rate`` for that feature within 1,000;
* two normal features correlated 0 -> 0.9, each keeping its distribution: the multivariate
  data_drift alert (detector ``spearman_correlation``) within 3,000, and no univariate alert;
* no label at all, and the score's confidence falls so that the expected accuracy goes from
  0.83 to 0.78: estimated_performance within 3,000 (prediction drift on the score is allowed);
* eight regions judged on their own (``segments: [region]``), one with 10 % of the traffic
  whose error rate rises 10 % -> 37 %: an alert naming that region within 4,000 events, none
  naming another, none before the change (25,000 events of warm-up); and 400,000 stationary
  events of the same model: no alert;
* these persistent changes also: no alert identity (kind/detector/subject/severity) fires more
  than once in a run (a *flap*), and no expected alert resolves as recovered while the change
  still holds (a *premature resolve*);
* recovery, a change at 10,000 that stops at 25,000 (accuracy 0.90 -> 0.81 -> 0.90; a 0.5 sd
  mean shift of a normal feature; a null rate 0 -> 20% -> 0 in a categorical one; the
  correlation 0 -> 0.9 -> 0): detected
  before the recovery, every alert that fired resolves as recovered within 5,000 predictions
  after the recovery and none before it, no flap, exactly one incident per run;
* version change, v1 degrading at 10,000 and replaced at 16,000 by a healthy v2 with another score
  distribution: the v1 degradation detected before the switch, no firing alert of v2, and every
  v1 alert firing at the switch closed (resolved, resolution superseded) within 5,000
  predictions after it.

Incident events (``kind: "incident"``, same output stream) are counted per run (``opened``), not
as alerts. A resolved alert without ``resolution`` counts as recovered, so the script also runs on
code from before the incident contract (no incident events: 0 incidents).

The script is a report: it always exits 0 and prints a summary line saying which floors are met.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.detectors.settings import MonitorSettings
from driftline.service.config import Config, load_config
from driftline.service.pipeline import InputRecord, Pipeline

# -- the synthetic model ---------------------------------------------------------------------


@dataclass(frozen=True)
class NumericFeature:
    name: str
    shape: str
    params: tuple[float, ...]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = self.params
        if self.shape == "normal":
            return rng.normal(p[0], p[1], n)
        if self.shape == "lognormal":
            return rng.lognormal(p[0], p[1], n)
        if self.shape == "uniform":
            return rng.uniform(p[0], p[1], n)
        if self.shape == "exponential":
            return rng.exponential(p[0], n)
        if self.shape == "bimodal":  # weight of the first mode, mean1, sd1, mean2, sd2
            first = rng.random(n) < p[0]
            return np.where(first, rng.normal(p[1], p[2], n), rng.normal(p[3], p[4], n))
        raise ValueError(f"unknown shape {self.shape!r}")

    @property
    def std(self) -> float:
        """Population standard deviation (closed form)."""
        p = self.params
        if self.shape == "normal":
            return p[1]
        if self.shape == "lognormal":
            return math.sqrt((math.exp(p[1] ** 2) - 1.0) * math.exp(2 * p[0] + p[1] ** 2))
        if self.shape == "uniform":
            return (p[1] - p[0]) / math.sqrt(12.0)
        if self.shape == "exponential":
            return p[0]
        w, m1, s1, m2, s2 = p
        mean = w * m1 + (1 - w) * m2
        second = w * (s1**2 + m1**2) + (1 - w) * (s2**2 + m2**2)
        return math.sqrt(second - mean**2)


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: tuple[str, ...]
    shares: tuple[float, ...]

    def shifted(self, share: float) -> np.ndarray:
        """Shares after the first category at 0.15 moves to ``share``, the others scaled down."""
        probs = np.array(self.shares)
        i = int(np.flatnonzero(np.isclose(probs, 0.15))[0])
        out = probs * ((1.0 - share) / (1.0 - probs[i]))
        out[i] = share
        return out


NUMERIC: tuple[NumericFeature, ...] = (
    NumericFeature("n00_normal", "normal", (50.0, 10.0)),
    NumericFeature("n01_normal", "normal", (0.0, 1.0)),
    NumericFeature("n02_normal", "normal", (-3.0, 0.5)),
    NumericFeature("n03_lognormal", "lognormal", (10.0, 0.8)),
    NumericFeature("n04_lognormal", "lognormal", (0.0, 0.5)),
    NumericFeature("n05_lognormal", "lognormal", (2.0, 1.0)),
    NumericFeature("n06_uniform", "uniform", (0.0, 1.0)),
    NumericFeature("n07_uniform", "uniform", (-5.0, 5.0)),
    NumericFeature("n08_uniform", "uniform", (100.0, 200.0)),
    NumericFeature("n09_exponential", "exponential", (1.0,)),
    NumericFeature("n10_exponential", "exponential", (30.0,)),
    NumericFeature("n11_exponential", "exponential", (0.2,)),
    NumericFeature("n12_bimodal", "bimodal", (0.5, -2.0, 0.7, 2.0, 0.7)),
    NumericFeature("n13_bimodal", "bimodal", (0.3, 0.0, 1.0, 5.0, 1.0)),
    NumericFeature("n14_bimodal", "bimodal", (0.6, 10.0, 2.0, 20.0, 3.0)),
)
CATEGORICAL: tuple[CategoricalFeature, ...] = (
    CategoricalFeature("c0_3cat", ("low", "mid", "high"), (0.50, 0.35, 0.15)),
    CategoricalFeature("c1_4cat", ("web", "ios", "android", "api"), (0.15, 0.40, 0.30, 0.15)),
    CategoricalFeature(
        "c2_5cat", ("north", "south", "east", "west", "central"), (0.30, 0.25, 0.15, 0.20, 0.10)
    ),
    CategoricalFeature(
        "c3_6cat", ("a", "b", "c", "d", "e", "f"), (0.15, 0.25, 0.20, 0.15, 0.15, 0.10)
    ),
    CategoricalFeature(
        "c4_8cat",
        ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"),
        (0.15, 0.25, 0.15, 0.12, 0.10, 0.10, 0.08, 0.05),
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in NUMERIC) + tuple(c.name for c in CATEGORICAL)
_NUMERIC_BY_NAME = {f.name: f for f in NUMERIC}
_CATEGORICAL_BY_NAME = {c.name: c for c in CATEGORICAL}

ACCURACY = 0.90  # default of StreamSpec.accuracy
POSITIVE_RATE = 0.30  # default of StreamSpec.positive_rate
CONFIDENCE_BETA = 2.0  # confidence = 0.5 + 0.5 * Beta(CONFIDENCE_BETA, 1)
LOW_ACCURACY = 0.66
START_MS = 1_790_000_000_000
STEP_MS = 100
LABEL_DELAY_MS = 500
LABEL_LAG = LABEL_DELAY_MS // STEP_MS  # outcome of event j follows the prediction of j + LAG
CHUNK = 20_000  # events generated at once (memory stays flat for 1M-event streams)


@dataclass(frozen=True)
class Successor:
    """A new model version that takes over the stream at ``StreamSpec.switch_at``."""

    version: str
    accuracy: float
    positive_rate: float
    confidence_beta: float  # its confidence is 0.5 + 0.5 * Beta(confidence_beta, 1)


@dataclass(frozen=True)
class StreamSpec:
    """One model's stream; ``change_at`` is the index of the first changed event, ``recover_at``
    the first event back to normal (the change holds on ``[change_at, recover_at)``), and
    ``switch_at`` the first event of ``successor``, which replaces the model from there on."""

    model_id: str = "m"
    seed: int = 0
    change_at: int | None = None
    recover_at: int | None = None
    accuracy: float = ACCURACY
    positive_rate: float = POSITIVE_RATE
    accuracy_after: float | None = None
    shift: tuple[str, float] | None = None  # numeric feature, mean shift in standard deviations
    share: tuple[str, float] | None = None  # categorical feature, new share of its 0.15 category
    nulls: tuple[str, float] | None = None  # feature, null rate
    # Two normal features and the correlation of their standardised values after the
    # change (0 before): each keeps its distribution, only the pair changes.
    couple: tuple[str, str, float] | None = None
    # The score's confidence after the change: 0.5 + 0.5 * Beta(confidence_beta_after, 1).
    confidence_beta_after: float | None = None
    labelled: bool = True  # False: no outcome is ever produced
    # A segment {"region": "r<k>"} on every prediction, drawn with these shares; the change
    # makes region r0's accuracy ``region_accuracy_after`` (the others keep theirs).
    regions: tuple[float, ...] = ()
    region_accuracy_after: float | None = None
    model_version: str = "v1"
    switch_at: int | None = None
    successor: Successor | None = None

    @property
    def change_ends(self) -> int | None:
        """First event at which the change no longer holds for the monitored version (the
        recovery, or the switch to the successor), or None: it holds to the end."""
        ends = [i for i in (self.recover_at, self.switch_at) if i is not None]
        return min(ends) if ends else None


def generate_chunk(spec: StreamSpec, start: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """JSON values of the predictions and outcomes of events ``start .. start + n - 1``.

    Drawn in bulk with numpy; the same (spec, start, n) always gives the same bytes."""
    rng = np.random.default_rng([spec.seed, start])
    index = np.arange(start, start + n)
    after = np.zeros(n, bool) if spec.change_at is None else index >= spec.change_at
    if spec.recover_at is not None:
        after &= index < spec.recover_at
    successor = spec.successor
    switched = (
        np.zeros(n, bool)
        if successor is None or spec.switch_at is None
        else index >= spec.switch_at
    )
    numeric = np.empty((n, len(NUMERIC)))
    for j, feature in enumerate(NUMERIC):
        numeric[:, j] = feature.draw(rng, n)
        if spec.shift is not None and spec.shift[0] == feature.name:
            numeric[after, j] += spec.shift[1] * feature.std
    if spec.couple is not None and after.any():
        a, b, rho = spec.couple
        ja, jb = (NUMERIC.index(_NUMERIC_BY_NAME[name]) for name in (a, b))
        fa, fb = NUMERIC[ja], NUMERIC[jb]
        assert fa.shape == fb.shape == "normal", "couple keeps marginals of normal features"
        za = (numeric[after, ja] - fa.params[0]) / fa.params[1]
        zb = (numeric[after, jb] - fb.params[0]) / fb.params[1]
        numeric[after, jb] = fb.params[0] + fb.params[1] * (rho * za + math.sqrt(1 - rho**2) * zb)
    numeric_rows: list[list[Any]] = np.round(numeric, 4).tolist()
    cat_columns = []
    for feature in CATEGORICAL:
        names = np.array(feature.categories, dtype=object)
        codes = rng.choice(len(names), size=n, p=np.array(feature.shares))
        if spec.share is not None and spec.share[0] == feature.name and after.any():
            changed = feature.shifted(spec.share[1])
            codes[after] = rng.choice(len(names), size=int(after.sum()), p=changed)
        cat_columns.append(names[codes])
    cat_rows: list[list[Any]] = np.stack(cat_columns, axis=1).tolist()
    if spec.nulls is not None:
        name, rate = spec.nulls
        null_at = np.flatnonzero(after & (rng.random(n) < rate)).tolist()
        if name in _NUMERIC_BY_NAME:
            k = [f.name for f in NUMERIC].index(name)
            for i in null_at:
                numeric_rows[i][k] = None
        else:
            k = [c.name for c in CATEGORICAL].index(name)
            for i in null_at:
                cat_rows[i][k] = None
    accuracy = np.full(n, spec.accuracy)
    if spec.accuracy_after is not None:
        accuracy[after] = spec.accuracy_after
    positive_rate = np.full(n, spec.positive_rate)
    if successor is not None:
        accuracy[switched] = successor.accuracy
        positive_rate[switched] = successor.positive_rate
    predicted = rng.random(n) < positive_rate
    correct = rng.random(n) < accuracy
    label = np.where(correct, predicted, ~predicted)
    confidence = 0.5 + 0.5 * rng.beta(CONFIDENCE_BETA, 1.0, n)
    if successor is not None and switched.any():
        # Drawn last, so streams without a successor keep their bytes.
        confidence[switched] = 0.5 + 0.5 * rng.beta(
            successor.confidence_beta, 1.0, int(switched.sum())
        )
    if spec.confidence_beta_after is not None and after.any():
        confidence[after] = 0.5 + 0.5 * rng.beta(
            spec.confidence_beta_after, 1.0, int(after.sum())
        )
    regions: list[str] | None = None
    if spec.regions:  # drawn last, so streams without regions keep their bytes
        codes = rng.choice(len(spec.regions), size=n, p=np.array(spec.regions))
        regions = [f"r{k}" for k in codes.tolist()]
        if spec.region_accuracy_after is not None:
            degraded = after & (codes == 0)
            correct[degraded] = rng.random(int(degraded.sum())) < spec.region_accuracy_after
            label = np.where(correct, predicted, ~predicted)
    score = np.round(np.where(predicted, confidence, 1.0 - confidence), 6).tolist()
    predicted_list = predicted.astype(int).tolist()
    label_list = label.astype(int).tolist()
    model_id, version = spec.model_id, spec.model_version
    switch_index = start + n if not switched.any() else start + int(np.argmax(switched))
    new_version = successor.version if successor is not None else version
    names = FEATURE_NAMES
    dumps = orjson.dumps
    predictions: list[bytes] = []
    outcomes: list[bytes] = []
    for i in range(n):
        j = start + i
        event_id = f"{model_id}-{j}"
        ts = START_MS + j * STEP_MS
        prediction: dict[str, Any] = {
            "event_id": event_id,
            "model_id": model_id,
            "model_version": version if j < switch_index else new_version,
            "timestamp": ts,
            "features": dict(zip(names, numeric_rows[i] + cat_rows[i], strict=True)),
            "prediction": predicted_list[i],
            "score": score[i],
        }
        if regions is not None:
            prediction["segment"] = {"region": regions[i]}
        predictions.append(dumps(prediction))
        outcomes.append(
            dumps(
                {
                    "event_id": event_id,
                    "model_id": model_id,
                    "timestamp": ts + LABEL_DELAY_MS,
                    "label": label_list[i],
                }
            )
        )
    return predictions, outcomes


def records(
    spec: StreamSpec, n: int, topics: tuple[str, str] = ("predictions", "outcomes")
) -> Iterator[InputRecord]:
    """The stream as the service reads it: prediction *j*, then the outcome of *j - LABEL_LAG*
    (whose event time equals that of prediction *j*); the last outcomes at the end. Offsets are
    event indexes, so an alert's ``source.offset`` is the index of its triggering event."""
    key = spec.model_id.encode()
    waiting: deque[bytes] = deque()
    next_outcome = 0
    for start in range(0, n, CHUNK):
        predictions, outcomes = generate_chunk(spec, start, min(CHUNK, n - start))
        if spec.labelled:
            waiting.extend(outcomes)
        for i, value in enumerate(predictions):
            j = start + i
            ts = START_MS + j * STEP_MS
            yield InputRecord("prediction", topics[0], 0, j, key, value, ts)
            if waiting and j >= LABEL_LAG:
                yield InputRecord("outcome", topics[1], 0, next_outcome, key, waiting.popleft(), ts)
                next_outcome += 1
    while waiting:
        ts = START_MS + next_outcome * STEP_MS + LABEL_DELAY_MS
        yield InputRecord("outcome", topics[1], 0, next_outcome, key, waiting.popleft(), ts)
        next_outcome += 1


# -- scenarios and runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row of the report: a kind of change, on one feature, over several seeds."""

    key: str
    title: str
    floor: int  # max delay in predictions (0 for stationary: max false alarms)
    expected_kinds: frozenset[str]  # kinds whose firing after the change is a detection
    subject: str | None = None  # the feature (or None: any subject of the expected kinds)
    detector: str | None = None  # e.g. "null_rate" for data quality
    family: str = "change"  # "stationary", "change" (persistent), "recovery" or "version"
    # The kind whose first firing is the detection, when other expected kinds are only
    # legitimate (not misattributions) without detecting the change the row is about.
    detect: str | None = None
    # The segment ("key=value") whose alerts detect the change; alerts of another segment are
    # misattributions, the model's own alerts of the expected kinds are legitimate.
    segment: str | None = None


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    spec: StreamSpec
    n: int
    # Settings of the monitored model that differ from the defaults (e.g. its segment keys).
    settings: tuple[tuple[str, Any], ...] = ()


@dataclass
class AlertRecord:
    """One alert event (firing or resolved) of a run."""

    kind: str
    detector: str
    subject: str
    severity: str
    status: str
    detected_ms: int
    topic: str
    offset: int
    model_version: str | None
    resolution: str | None  # resolved alerts only; "recovered" when the field is missing
    incident_id: str | None
    segment: str = ""  # "key=value" of an alert about one segment

    @property
    def identity(self) -> str:
        """The alert identity of the contract (one model per run, so model_id is left out)."""
        subject = f"{self.subject}@{self.segment}" if self.segment else self.subject
        return f"{self.kind}/{self.detector}/{subject}/{self.severity}"


@dataclass
class IncidentRecord:
    """One incident event (``kind: "incident"``) of a run."""

    incident_id: str | None
    status: str  # opened, escalated or closed
    detected_ms: int | None
    resolution: str | None
    severity: str | None
    model_version: str | None


@dataclass
class RunResult:
    job: Job
    alerts: list[AlertRecord]  # in emission order
    incidents: list[IncidentRecord]
    dead_letters: Counter[str]
    records: int
    predictions: int
    labeled: int
    seconds: float

    @property
    def fired(self) -> list[AlertRecord]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertRecord]:
        return [a for a in self.alerts if a.status != "firing"]


def default_config() -> Config:
    """What the service runs with when it has no config file and no DRIFTLINE_* variables."""
    return load_config(None, environ={})


def run_job(job: Job) -> RunResult:
    """Drive the job's stream through the service's pipeline; keep every alert and incident."""
    started = time.perf_counter()
    config = default_config()
    if job.settings:
        config = config.model_copy(update={"defaults": dict(job.settings)})
    pipeline = Pipeline(config)
    pipeline.assign([0])
    batch_size = config.processing.batch_size
    alerts: list[AlertRecord] = []
    incidents: list[IncidentRecord] = []
    dead: Counter[str] = Counter()
    n_records = predictions = labeled = 0
    batch: list[InputRecord] = []

    def flush(end: bool = False) -> None:
        nonlocal predictions, labeled
        # At the end of the input, as a replay: alerts held for the other stream go out.
        result = pipeline.flush(end_of_input=True) if end else pipeline.process(batch)
        predictions += result.predictions
        labeled += result.labeled
        dead.update(d.reason for d in result.dead_letters)
        for event in result.alerts:
            if event.get("kind") == "incident":
                incidents.append(_incident_record(event))
            else:
                alerts.append(_alert_record(event))
        batch.clear()

    for record in records(job.spec, job.n):
        batch.append(record)
        n_records += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    flush(end=True)
    return RunResult(
        job,
        alerts,
        incidents,
        dead,
        n_records,
        predictions,
        labeled,
        time.perf_counter() - started,
    )


def _alert_record(alert: dict[str, Any]) -> AlertRecord:
    firing = alert["status"] == "firing"
    return AlertRecord(
        alert["kind"],
        alert["detector"],
        alert.get("feature") or alert.get("metric") or "",
        alert["severity"],
        alert["status"],
        _parse_ms(alert["detected_at"]),
        alert["source"]["topic"],
        alert["source"]["offset"],
        alert.get("model_version"),
        # Code from before the incident contract has no resolution: its resolves are recoveries.
        None if firing else alert.get("resolution") or "recovered",
        alert.get("incident_id"),
        ",".join(f"{k}={v}" for k, v in sorted((alert.get("segment") or {}).items())),
    )


def _incident_record(event: dict[str, Any]) -> IncidentRecord:
    detected = event.get("detected_at")
    return IncidentRecord(
        event.get("incident_id"),
        str(event.get("status")),
        _parse_ms(detected) if detected else None,
        event.get("resolution"),
        event.get("severity"),
        event.get("model_version"),
    )


def _parse_ms(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def ms_of(index: int) -> int:
    """Event time of event ``index`` (of its prediction)."""
    return START_MS + index * STEP_MS


def delay_of(alert: AlertRecord, at: int) -> int:
    """Predictions from event ``at`` (inclusive) to the alert's event time (inclusive)."""
    return (alert.detected_ms - ms_of(at)) // STEP_MS + 1


def is_expected(scenario: Scenario, alert: AlertRecord) -> bool:
    if alert.kind not in scenario.expected_kinds:
        return False
    if alert.segment and alert.segment != scenario.segment:
        return False  # another segment named
    if scenario.subject is not None and alert.subject != scenario.subject:
        return False
    return scenario.detector is None or alert.detector == scenario.detector


LABEL_KINDS = frozenset({"concept_drift", "kpi_threshold"})
DEGRADED_FOR = 15_000  # recovery runs: events under the change before it stops
RECOVERY_TAIL = 10_000  # recovery runs: events after the recovery
SWITCH_AFTER = 6_000  # version runs: events from v1's degradation to v2 taking over
VERSION_TAIL = 14_000  # version runs: events of v2
V2 = Successor("v2", accuracy=0.92, positive_rate=0.33, confidence_beta=3.0)

STATIONARY = Scenario("stationary", "Stationary, all labelled", 0, frozenset(), family="stationary")
LOW_ACCURACY_STATIONARY = Scenario(
    "stationary:0.66",
    f"Stationary at accuracy {LOW_ACCURACY:.2f}, all labelled",
    0,
    frozenset(),
    family="stationary",
)
ACCURACY_DROP = Scenario("accuracy", "Accuracy 0.90 → 0.81", 1000, LABEL_KINDS)
RECOVERY = Scenario(
    "recovery",
    "Accuracy 0.90 → 0.81 → 0.90 (recovers)",
    DEGRADED_FOR,
    LABEL_KINDS,
    family="recovery",
)


def recovery_scenario(key: str, title: str, change: Scenario) -> Scenario:
    """A recovery row for the change of ``change`` (same expected alerts); detected before the
    recovery."""
    return Scenario(
        f"recovery:{key}",
        title,
        DEGRADED_FOR,
        change.expected_kinds,
        subject=change.subject,
        detector=change.detector,
        family="recovery",
    )


VERSION_CHANGE = Scenario(
    "version",
    "v1 accuracy 0.90 → 0.81, then healthy v2",
    SWITCH_AFTER,
    LABEL_KINDS,
    family="version",
)


def shift_scenario(feature: str) -> Scenario:
    shape = _NUMERIC_BY_NAME[feature].shape
    return Scenario(
        f"shift:{feature}",
        f"0.5 sd mean shift, {shape}",
        2000,
        frozenset({"data_drift"}),
        subject=feature,
    )


def share_scenario(feature: str) -> Scenario:
    k = len(_CATEGORICAL_BY_NAME[feature].categories)
    return Scenario(
        f"share:{feature}",
        f"Category share 0.15 → 0.30, {k} categories",
        2000,
        frozenset({"data_drift"}),
        subject=feature,
    )


def null_scenario(feature: str) -> Scenario:
    kind = "numeric" if feature in _NUMERIC_BY_NAME else "categorical"
    return Scenario(
        f"nulls:{feature}",
        f"Null rate 0 → 20%, {kind}",
        1000,
        frozenset({"data_quality"}),
        subject=feature,
        detector="null_rate",
    )


COUPLED = ("n01_normal", "n02_normal", 0.9)
CORRELATION = Scenario(
    "correlation",
    f"Correlation 0 → 0.9 of {COUPLED[0]} and {COUPLED[1]}, marginals unchanged",
    3000,
    frozenset({"data_drift"}),
    detector="spearman_correlation",  # a univariate data-drift alert is a misattribution
)
UNSURE_BETA = 1.3  # mean confidence 0.5 + 0.5 * 1.3 / 2.3 = 0.783, from 0.833
UNLABELLED = Scenario(
    "estimated",
    "No labels; scores lose confidence, expected accuracy 0.83 → 0.78",
    3000,
    # The score's distribution changes too: prediction drift on it is legitimate.
    frozenset({"estimated_performance", "prediction_drift"}),
    detect="estimated_performance",
)
# Eight regions, r0 with 10 % of the traffic; its error rate rises 10 % -> 37 % while the
# model's moves 2.7 points. Its warm-up is long enough for every region's own KPI reference.
REGIONS = (0.10, 0.15, 0.15, 0.15, 0.15, 0.10, 0.10, 0.10)
SEGMENT_WARMUP = 25_000
SEGMENTED = (("segments", ["region"]),)
SEGMENT = Scenario(
    "segment",
    "One region of 8 (10 % of traffic): error rate 10 % → 37 %",
    4000,
    LABEL_KINDS,
    segment="region=r0",
)
SEGMENTS_STATIONARY = Scenario(
    "stationary:segments",
    "Stationary, 8 regions judged on their own",
    0,
    frozenset(),
    family="stationary",
)
SHIFT_FEATURES = ("n01_normal", "n05_lognormal")
SHARE_FEATURES = ("c1_4cat", "c4_8cat")
NULL_FEATURES = ("n09_exponential", "c2_5cat")
# Feature recovery rows: (seed base, scenario, change); the change stops at the recovery.
FEATURE_RECOVERIES: tuple[tuple[int, Scenario, dict[str, Any]], ...] = (
    (
        8000,
        recovery_scenario(
            "shift:n01_normal",
            "0.5 sd mean shift, normal, recovers",
            shift_scenario("n01_normal"),
        ),
        {"shift": ("n01_normal", 0.5)},
    ),
    (
        8100,
        recovery_scenario(
            "nulls:c2_5cat",
            "Null rate 0 → 20%, categorical, recovers",
            null_scenario("c2_5cat"),
        ),
        {"nulls": ("c2_5cat", 0.20)},
    ),
    (
        8200,
        recovery_scenario(
            "correlation",
            f"Correlation 0 → 0.9 of {COUPLED[0]} and {COUPLED[1]}, recovers",
            CORRELATION,
        ),
        {"couple": COUPLED},
    ),
)


def plan(args: argparse.Namespace) -> list[Job]:
    jobs: list[Job] = []
    # Stationary rows: one long stream and a few shorter ones, at two accuracies.
    for scenario, base, accuracy in (
        (STATIONARY, 0, ACCURACY),
        (LOW_ACCURACY_STATIONARY, 5000, LOW_ACCURACY),
    ):
        jobs.append(Job(scenario, StreamSpec(seed=base, accuracy=accuracy), args.stationary_events))
        jobs += [
            Job(
                scenario, StreamSpec(seed=base + s, accuracy=accuracy), args.extra_stationary_events
            )
            for s in range(1, 1 + args.extra_stationary_seeds)
        ]
    change = args.warmup
    n = args.warmup + args.horizon
    seeds = range(args.seeds)
    jobs += [
        Job(ACCURACY_DROP, StreamSpec(seed=1000 + s, change_at=change, accuracy_after=0.81), n)
        for s in seeds
    ]
    # One family of scenarios per kind of change: (seed base, features, scenario, change).
    families: list[tuple[int, Any, Any, Any]] = [
        (2000, SHIFT_FEATURES, shift_scenario, lambda f: {"shift": (f, 0.5)}),
        (3000, SHARE_FEATURES, share_scenario, lambda f: {"share": (f, 0.30)}),
        (4000, NULL_FEATURES, null_scenario, lambda f: {"nulls": (f, 0.20)}),
    ]
    for base, features, scenario, changed in families:
        for row, feature in enumerate(features):
            jobs += [
                Job(
                    scenario(feature),
                    StreamSpec(seed=base + 100 * row + s, change_at=change, **changed(feature)),
                    n,
                )
                for s in seeds
            ]
    jobs += [
        Job(CORRELATION, StreamSpec(seed=4500 + s, change_at=change, couple=COUPLED), n)
        for s in seeds
    ]
    jobs += [
        Job(
            UNLABELLED,
            StreamSpec(
                seed=4600 + s,
                change_at=change,
                confidence_beta_after=UNSURE_BETA,
                labelled=False,
            ),
            n,
        )
        for s in seeds
    ]
    jobs += [
        Job(
            SEGMENT,
            StreamSpec(
                seed=4700 + s,
                change_at=SEGMENT_WARMUP,
                regions=REGIONS,
                region_accuracy_after=ACCURACY - 0.27,
            ),
            SEGMENT_WARMUP + args.horizon,
            SEGMENTED,
        )
        for s in seeds
    ]
    jobs += [
        Job(
            SEGMENTS_STATIONARY,
            StreamSpec(seed=5500 + s, regions=REGIONS),
            args.extra_stationary_events,
            SEGMENTED,
        )
        for s in range(args.extra_stationary_seeds)
    ]
    recover = change + DEGRADED_FOR
    jobs += [
        Job(
            RECOVERY,
            StreamSpec(seed=6000 + s, change_at=change, accuracy_after=0.81, recover_at=recover),
            recover + RECOVERY_TAIL,
        )
        for s in seeds
    ]
    for base, scenario, changed in FEATURE_RECOVERIES:
        jobs += [
            Job(
                scenario,
                StreamSpec(seed=base + s, change_at=change, recover_at=recover, **changed),
                recover + RECOVERY_TAIL,
            )
            for s in seeds
        ]
    switch = change + SWITCH_AFTER
    jobs += [
        Job(
            VERSION_CHANGE,
            StreamSpec(
                seed=7000 + s,
                change_at=change,
                accuracy_after=0.81,
                switch_at=switch,
                successor=V2,
            ),
            switch + VERSION_TAIL,
        )
        for s in seeds
    ]
    return jobs


# -- the analysis of one run ---------------------------------------------------------------------


@dataclass
class Close:
    """How an alert identity was closed after a recovery or a version switch."""

    delay: int | None  # predictions from the recovery or switch to the close; None: never closed
    resolution: str | None  # of the closing resolved alert
    ok: bool


@dataclass
class RunFacts:
    result: RunResult
    delay: int | None = None  # first expected firing, predictions after the change; None: miss
    firsts: dict[str, int] = field(default_factory=dict)  # kind/severity -> its first delay
    false: list[tuple[AlertRecord, str]] = field(default_factory=list)  # with when it fired
    firings: Counter[str] = field(default_factory=Counter)  # per alert identity
    premature: list[AlertRecord] = field(default_factory=list)
    incidents: int = 0  # incidents opened
    # Recovery runs: every identity that fired; version runs: the identities firing at the switch.
    closes: dict[str, Close] = field(default_factory=dict)
    new_version_firing: list[AlertRecord] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.result.job.spec.seed

    @property
    def flaps(self) -> list[str]:
        """Identities that fired more than once in the run."""
        return sorted(identity for identity, n in self.firings.items() if n > 1)

    @property
    def max_firings(self) -> int:
        return max(self.firings.values(), default=0)

    @property
    def bad_closes(self) -> int:
        return sum(not c.ok for c in self.closes.values())


def analyse(scenario: Scenario, result: RunResult, horizon: int, close_within: int) -> RunFacts:
    spec = result.job.spec
    facts = RunFacts(result)
    facts.firings = Counter(a.identity for a in result.fired)
    facts.incidents = sum(i.status == "opened" for i in result.incidents)
    if spec.change_at is None:
        facts.false = [(a, "stationary") for a in result.fired]
        return facts
    change_ms = ms_of(spec.change_at)
    ends = spec.change_ends
    end_ms = None if ends is None else ms_of(ends)
    end_word = "switch" if ends is not None and ends == spec.switch_at else "recovery"
    new_version = None if spec.successor is None else spec.successor.version
    first: int | None = None
    for alert in result.alerts:
        if alert.status != "firing":
            holds = change_ms <= alert.detected_ms and (
                end_ms is None or alert.detected_ms < end_ms
            )
            if holds and alert.resolution == "recovered" and is_expected(scenario, alert):
                facts.premature.append(alert)
            continue
        if new_version is not None and alert.model_version == new_version:
            facts.new_version_firing.append(alert)
        elif alert.detected_ms < change_ms:
            facts.false.append((alert, f"before the change at {spec.change_at:,}"))
        elif not is_expected(scenario, alert):
            facts.false.append((alert, f"after the change at {spec.change_at:,}"))
        elif end_ms is not None and alert.detected_ms >= end_ms + LABEL_DELAY_MS:
            # Outcomes of the last changed predictions arrive up to LABEL_LAG predictions after
            # the change ended; an alert later than that is about the healthy stream.
            facts.false.append((alert, f"after the {end_word} at {ends:,}"))
        else:
            key = f"{alert.kind}/{alert.severity}"
            delay = delay_of(alert, spec.change_at)
            facts.firsts[key] = min(delay, facts.firsts.get(key, delay))
            if scenario.detect is not None and alert.kind != scenario.detect:
                continue
            if scenario.segment is not None and alert.segment != scenario.segment:
                continue
            first = delay if first is None else min(first, delay)
    window = horizon if ends is None else ends - spec.change_at
    facts.delay = first if first is not None and first <= window else None
    timelines: dict[str, list[AlertRecord]] = {}
    for alert in result.alerts:
        timelines.setdefault(alert.identity, []).append(alert)
    if scenario.family == "recovery" and spec.recover_at is not None:
        for identity in facts.firings:
            last = timelines[identity][-1]
            if last.status == "firing":
                facts.closes[identity] = Close(None, None, False)
                continue
            delay = delay_of(last, spec.recover_at)
            ok = last.resolution == "recovered" and 1 <= delay <= close_within
            facts.closes[identity] = Close(delay, last.resolution, ok)
    if scenario.family == "version" and spec.switch_at is not None:
        switch_ms = ms_of(spec.switch_at)
        for identity in facts.firings:
            before = [a for a in timelines[identity] if a.detected_ms < switch_ms]
            if not before or before[-1].status != "firing":
                continue  # not firing at the switch
            after = [a for a in timelines[identity] if a.detected_ms >= switch_ms]
            if not after or after[0].status == "firing":
                facts.closes[identity] = Close(None, None, False)
                continue
            delay = delay_of(after[0], spec.switch_at)
            ok = after[0].resolution == "superseded" and delay <= close_within
            facts.closes[identity] = Close(delay, after[0].resolution, ok)
    return facts


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: Scenario
    runs: list[RunFacts]
    close_within: int

    @property
    def stationary(self) -> bool:
        return self.scenario.family == "stationary"

    @property
    def family(self) -> str:
        return self.scenario.family

    @property
    def results(self) -> list[RunResult]:
        return [f.result for f in self.runs]

    @property
    def events(self) -> int:
        return sum(r.job.n for r in self.results)

    @property
    def delays(self) -> list[int]:
        return [f.delay for f in self.runs if f.delay is not None]

    @property
    def misses(self) -> int:
        return 0 if self.stationary else sum(f.delay is None for f in self.runs)

    @property
    def false(self) -> list[tuple[int, AlertRecord, str]]:
        return [(f.seed, alert, when) for f in self.runs for alert, when in f.false]

    @property
    def false_count(self) -> int:
        return sum(len(f.false) for f in self.runs)

    @property
    def flaps(self) -> int:
        return sum(len(f.flaps) for f in self.runs)

    @property
    def max_firings(self) -> int:
        return max((f.max_firings for f in self.runs), default=0)

    @property
    def premature(self) -> int:
        return sum(len(f.premature) for f in self.runs)

    @property
    def incidents(self) -> list[int]:
        return [f.incidents for f in self.runs]

    @property
    def not_one_incident(self) -> int:
        return sum(f.incidents != 1 for f in self.runs)

    @property
    def bad_closes(self) -> int:
        return sum(f.bad_closes for f in self.runs)

    @property
    def new_version_firing(self) -> int:
        return sum(len(f.new_version_firing) for f in self.runs)

    @property
    def first_by_kind(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for f in self.runs:
            for key, delay in f.firsts.items():
                out.setdefault(key, []).append(delay)
        return out

    @property
    def meets(self) -> bool:
        if self.stationary:
            return self.false_count == 0
        detected = (
            self.misses == 0
            and all(d <= self.scenario.floor for d in self.delays)
            and self.false_count == 0
        )
        if self.family == "version":
            return detected and self.new_version_firing == 0 and self.bad_closes == 0
        one_firing = self.max_firings <= 1 and self.premature == 0
        if self.family == "recovery":
            return detected and one_firing and self.bad_closes == 0 and self.not_one_incident == 0
        return detected and one_firing

    def floor_text(self) -> str:
        s = self.scenario
        within = f"{self.close_within:,}"
        if self.stationary:
            return "0 false alarms"
        if self.family == "recovery":
            return (
                "detected before the recovery, no misattribution, ≤ 1 firing per identity, "
                f"every alert resolved as recovered within {within} after the recovery and none "
                "before, 1 incident per run"
            )
        if self.family == "version":
            return (
                "v1 detected before the switch, no misattribution, no firing v2 alert, v1 "
                f"alerts firing at the switch closed as superseded within {within}"
            )
        return (
            f"delay ≤ {s.floor:,}, no misattribution, ≤ 1 firing per identity, no premature resolve"
        )

    def missed(self) -> list[str]:
        """What fails the floor, in words."""
        bits = []
        if self.misses:
            bits.append(f"{self.misses} misses")
        late = [d for d in self.delays if d > self.scenario.floor]
        if late:
            bits.append(f"max delay {max(late):,} > {self.scenario.floor:,}")
        if self.false_count:
            bits.append(f"{self.false_count} false/misattributed")
        if self.family in ("change", "recovery"):
            if self.max_firings > 1:
                bits.append(f"{self.flaps} flaps (up to {self.max_firings} firings of one alert)")
            if self.premature:
                bits.append(f"{self.premature} premature resolves")
        if self.family == "recovery":
            if self.bad_closes:
                bits.append(
                    f"{self.bad_closes} alerts not resolved as recovered within "
                    f"{self.close_within:,} after the recovery"
                )
            if self.not_one_incident:
                bits.append(f"{self.not_one_incident} runs without exactly one incident")
        if self.family == "version":
            if self.new_version_firing:
                bits.append(f"{self.new_version_firing} firing v2 alerts")
            if self.bad_closes:
                bits.append(
                    f"{self.bad_closes} v1 alerts not closed as superseded within "
                    f"{self.close_within:,} after the switch"
                )
        return bits


def summarise(scenario: Scenario, results: list[RunResult], horizon: int, close_within: int) -> Row:
    ordered = sorted(results, key=lambda r: r.job.spec.seed)
    runs = [analyse(scenario, r, horizon, close_within) for r in ordered]
    return Row(scenario, runs, close_within)


def _fmt(n: float | None) -> str:
    return "—" if n is None else f"{n:,.0f}"


def _describe(alert: AlertRecord) -> str:
    return alert.identity


def _median_max(values: list[int]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):g} / {max(values)}"


def _close_text(close: Close, after: str) -> str:
    if close.delay is None:
        return "still firing at the end"
    if close.delay < 1:
        return f"{close.resolution} {1 - close.delay:,} before the {after}"
    return f"{close.delay:,} ({close.resolution})"


def _counted(identities: Counter[str]) -> str:
    return ", ".join(
        f"{identity}{f' ×{n}' if n > 1 else ''}" for identity, n in sorted(identities.items())
    )


def total_flaps(rows: list[Row]) -> str:
    flapping = [(row, row.flaps) for row in rows if row.flaps]
    runs = sum(len(row.runs) for row in rows)
    if not flapping:
        return f"0 flaps: no alert identity fired more than once in any of the {runs} runs."
    total = sum(n for _, n in flapping)
    in_runs = sum(bool(f.flaps) for row in rows for f in row.runs)
    by_row = ", ".join(f"{row.scenario.title}: {n}" for row, n in flapping)
    return (
        f"{total} flaps (alert identities firing more than once in a run) in {in_runs} of "
        f"{runs} runs — {by_row}."
    )


def change_text(spec: StreamSpec) -> str:
    """The change of a recovery run and its end, in words."""
    assert spec.change_at is not None and spec.recover_at is not None
    at, back = f"{spec.change_at:,}", f"{spec.recover_at:,}"
    if spec.shift is not None:
        name, sd = spec.shift
        return (
            f"`{name}` mean shifted by {sd:g} × its standard deviation from event {at}, "
            f"unshifted again from {back}"
        )
    if spec.nulls is not None:
        name, rate = spec.nulls
        return f"`{name}` null rate 0 → {rate:.0%} at event {at}, back to 0 at {back}"
    if spec.couple is not None:
        a, b, rho = spec.couple
        return (
            f"`{a}` and `{b}` correlated {rho:g} (each keeping its distribution) from event "
            f"{at}, independent again from {back}"
        )
    if spec.share is not None:
        name, share = spec.share
        return (
            f"`{name}` share of its 0.15 category → {share:.2f} at event {at}, back to 0.15 at "
            f"{back}"
        )
    return (
        f"Accuracy {spec.accuracy:.2f} → {spec.accuracy_after} at event {at}, back to "
        f"{spec.accuracy:.2f} at {back}"
    )


def render_recovery(rows: list[Row]) -> list[str]:
    lines = ["", "## Recovery and version change", ""]
    for row in rows:
        if row.family != "recovery" or not row.runs:
            continue
        spec = row.runs[0].result.job.spec
        lines += [
            f"**{row.scenario.title}.** {change_text(spec)}; "
            f"runs of {row.runs[0].result.job.n:,} events. Per identity: predictions from the "
            "recovery (inclusive) to the event time of its last resolved alert (resolution), "
            "with its number of firings when more than one. Floor: each within "
            f"{row.close_within:,}, resolved as recovered, none before the recovery.",
            "",
            "| seed | detected (predictions after the change) | firings | premature resolves "
            "| resolved after the recovery, per identity | incidents opened |",
            "|---|---|---|---|---|---|",
        ]
        for f in row.runs:
            closes = "; ".join(
                f"{identity}"
                + (f" (×{f.firings[identity]} firings)" if f.firings[identity] > 1 else "")
                + f": {_close_text(close, 'recovery')}"
                for identity, close in sorted(f.closes.items())
            )
            lines.append(
                f"| {f.seed} | {_fmt(f.delay) if f.delay is not None else 'miss'} | "
                f"{sum(f.firings.values())} | {len(f.premature)} | {closes or 'none fired'} | "
                f"{f.incidents} |"
            )
        resolved = [c.delay for f in row.runs for c in f.closes.values() if c.ok and c.delay]
        if resolved:
            lines += [
                "",
                f"Time to resolve after the recovery, over the alerts resolved in time: median "
                f"{_fmt(statistics.median(resolved))}, max {_fmt(max(resolved))} predictions.",
            ]
        lines.append("")
    for row in rows:
        if row.family != "version" or not row.runs:
            continue
        spec = row.runs[0].result.job.spec
        successor = spec.successor
        assert spec.change_at is not None and spec.switch_at is not None and successor
        lines += [
            f"**{row.scenario.title}.** {spec.model_version}: accuracy {spec.accuracy:.2f} → "
            f"{spec.accuracy_after} at event {spec.change_at:,}; from {spec.switch_at:,} "
            f"`model_version` {successor.version}: accuracy {successor.accuracy:.2f}, positive "
            f"rate {successor.positive_rate:.2f}, confidence 0.5 + 0.5·Beta"
            f"({successor.confidence_beta:g}, 1) (v1: {spec.positive_rate:.2f}, "
            f"Beta({CONFIDENCE_BETA:g}, 1)), same features; runs of "
            f"{row.runs[0].result.job.n:,} events. *Closed*: for each alert identity firing "
            "at the switch, predictions from the switch (inclusive) to its next alert, which "
            f"must be resolved as superseded within {row.close_within:,}.",
            "",
            "| seed | v1 detected (predictions after the change) | firing at the switch → closed "
            "| firing v2 alerts | premature resolves | incidents opened |",
            "|---|---|---|---|---|---|",
        ]
        for f in row.runs:
            closes = "; ".join(
                f"{identity}: {_close_text(close, 'switch')}"
                for identity, close in sorted(f.closes.items())
            )
            v2 = Counter(a.identity for a in f.new_version_firing)
            v2_text = f"{len(f.new_version_firing)}: {_counted(v2)}" if v2 else "0"
            lines.append(
                f"| {f.seed} | {_fmt(f.delay) if f.delay is not None else 'miss'} | "
                f"{closes or 'none'} | {v2_text} | {len(f.premature)} | {f.incidents} |"
            )
        superseded = [c.delay for f in row.runs for c in f.closes.values() if c.ok and c.delay]
        if superseded:
            lines += [
                "",
                f"Closed-as-superseded delay after the switch: median "
                f"{_fmt(statistics.median(superseded))}, max {_fmt(max(superseded))} "
                "predictions.",
            ]
        lines.append("")
    return lines


def render(rows: list[Row], args: argparse.Namespace, elapsed: float) -> str:
    settings = default_config().monitor_settings("m")
    assert settings == MonitorSettings(), "the service's default model settings drifted"
    met = sum(r.meets for r in rows)
    lines = [
        "# Detection quality of the default settings",
        "",
        "Generated by `make quality` (`bench/quality.py --output bench/QUALITY.md`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} in {elapsed:,.0f} s "
        f"({args.workers} worker processes). Seeded: the same command on the same code gives "
        "the same table.",
        "",
        f"**{met} of {len(rows)} floors met.**",
        "",
        "## Results",
        "",
        "Delay: predictions from the change (inclusive) to the event time of the first expected "
        "firing alert (inclusive); label-side alerts come from outcomes, which arrive 500 ms = 5 "
        f"predictions after their prediction. Change after a {args.warmup:,}-event warm-up; "
        f"a run that has no expected alert within {args.horizon:,} predictions of the change is a "
        "miss (recovery: before the recovery; version change: before the switch). *False / "
        "misattributed*: firing alerts before the change (any kind), plus firing "
        "alerts after it other than the expected one (another kind, or the expected kind on "
        "another feature), plus expected ones more than 5 predictions after a recovery or "
        "switch; the model's score and prediction do not depend on the features and "
        "the label only on the prediction, so no other alert is legitimate.",
        "",
        "*Max firings per identity*: the most firing alerts of one alert identity "
        "(kind/detector/feature or metric/severity) in one run. *Flaps*: identities that fired "
        "more than once in a run, summed over the runs. *Premature resolves*: expected alerts "
        "resolved as recovered while the change still holds (after it, before the recovery or "
        "switch); a resolved alert without `resolution` counts as recovered. *Incidents per "
        'run*: incident events (`kind: "incident"`) with status `opened`, median / max over '
        "the runs (0 when the code emits none).",
        "",
        "| scenario | feature | floor | seeds | events | detected | median delay | max delay "
        "| false / misattributed | max firings per identity | flaps | premature resolves "
        "| incidents per run (median/max) | meets floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.scenario
        if row.stationary:
            detected = median = worst = premature = "n/a"
        else:
            detected = f"{len(row.delays)} of {len(row.results)}"
            median = _fmt(statistics.median(row.delays)) if row.delays else "—"
            worst = _fmt(max(row.delays)) if row.delays else "—"
            premature = str(row.premature)
        feature = s.subject or s.segment or ("any" if row.stationary else "—")
        lines.append(
            f"| {s.title} | {feature} | {row.floor_text()} | {len(row.results)} | "
            f"{row.events:,} | {detected} | {median} | {worst} | {row.false_count} | "
            f"{row.max_firings} | {row.flaps} | {premature} | {_median_max(row.incidents)} | "
            f"{'yes' if row.meets else '**no**'} |"
        )
    lines += ["", f"**{total_flaps(rows)}**", "", "## Stationary streams", ""]
    for row in rows:
        if not row.stationary:
            continue
        accuracy = row.results[0].job.spec.accuracy if row.results else ACCURACY
        lines += [
            f"**{row.scenario.title}** (accuracy {accuracy:.2f})",
            "",
            "| seed | events | records | false alarms | by kind |",
            "|---|---|---|---|---|",
        ]
        for result in row.results:
            kinds = Counter(f.kind for f in result.fired)
            by_kind = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"
            lines.append(
                f"| {result.job.spec.seed} | {result.job.n:,} | {result.records:,} | "
                f"{len(result.fired)} | {by_kind} |"
            )
        total = row.false_count
        lines += [
            "",
            f"{total} false alarms in {row.events:,} stationary events "
            f"({total / max(row.events, 1) * 1e6:.2f} per million events). Kinds watched: every "
            "kind the monitor emits (concept_drift, kpi_threshold, data_drift, prediction_drift, "
            "data_quality).",
            "",
        ]
    lines += [
        "## Delays per seed",
        "",
        "| scenario | feature | first expected alert per seed (predictions) "
        "| median by kind/severity |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if row.stationary:
            continue
        per_seed = [_fmt(f.delay) if f.delay is not None else "miss" for f in row.runs]
        by_kind = ", ".join(
            f"{k}: {_fmt(statistics.median(v))} ({len(v)})"
            for k, v in sorted(row.first_by_kind.items())
        )
        lines.append(
            f"| {row.scenario.title} | {row.scenario.subject or 'any'} | {' '.join(per_seed)} "
            f"| {by_kind} |"
        )
    lines += [
        "",
        "*by kind/severity*: median delay of each expected alert identity, over the seeds where "
        "it fired within the run (count in brackets).",
    ]
    lines += render_recovery(rows)
    lines += ["## False and misattributed alerts", ""]
    bad = [(row, seed, alert, when) for row in rows for seed, alert, when in row.false]
    if not bad:
        lines.append("None.")
    else:
        lines += [
            "| scenario | seed | when | alert (kind/detector/subject/severity) | event index |",
            "|---|---|---|---|---|",
        ]
        for row, seed, alert, when in bad:
            at = (alert.detected_ms - START_MS) // STEP_MS
            lines.append(
                f"| {row.scenario.title} | {seed} | {when} | {_describe(alert)} | {at:,} |"
            )
    dead = Counter[str]()
    for row in rows:
        for result in row.results:
            dead.update(result.dead_letters)
    lines += [
        "",
        "## Setup",
        "",
        f"- Path: `service.pipeline.Pipeline.process` (decode, join, `ModelMonitor`) in batches "
        f"of `processing.batch_size` = {default_config().processing.batch_size} records, config "
        "`load_config(None, environ={})`; dead letters: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(dead.items())) or "none")
        + ".",
        f"- Events: {STEP_MS} ms apart; each outcome {LABEL_DELAY_MS} ms after its prediction "
        f"(every prediction is labelled). Accuracy {ACCURACY:.2f} ({LOW_ACCURACY:.2f} in the "
        f"low-accuracy stationary rows), positive rate {POSITIVE_RATE:.2f}, score = the "
        "prediction's side of 0.5 with confidence 0.5 + 0.5·Beta"
        f"({CONFIDENCE_BETA:g}, 1).",
        "- Numeric features (rounded to 4 decimals): "
        + ", ".join(f"`{f.name}` {f.shape}{f.params}" for f in NUMERIC)
        + ".",
        "- Categorical features: "
        + ", ".join(
            f"`{c.name}` {dict(zip(c.categories, c.shares, strict=True))}" for c in CATEGORICAL
        )
        + ".",
        "- Changes: mean shift by 0.5 × the feature's population standard deviation; the "
        "category at 0.15 moves to 0.30 and the others shrink proportionally; nulls replace "
        "20% of the feature's values; accuracy drops to 0.81 with the prediction and score "
        "distributions unchanged (only the labels move).",
        f"- Recovery: the change (accuracy 0.81; a mean shift; nulls) holds for "
        f"{DEGRADED_FOR:,} events, then the stream is as before the change for "
        f"{RECOVERY_TAIL:,}. Version change: v1's accuracy drops to 0.81 and {SWITCH_AFTER:,} "
        f"events later every prediction is `model_version` {V2.version} (accuracy "
        f"{V2.accuracy:.2f}, positive rate {V2.positive_rate:.2f}, confidence 0.5 + 0.5·Beta"
        f"({V2.confidence_beta:g}, 1)) for {VERSION_TAIL:,} events; the outcomes of v1's last "
        "5 predictions arrive after the switch.",
        "- Seeds: stationary 0-4, low-accuracy stationary 5000-5004, accuracy drop 1000+, "
        "shifts 2000+, shares 3000+, nulls 4000+, recovery 6000+ (accuracy), 8000+ (mean "
        "shift), 8100+ (nulls), version change 7000+.",
        "",
        "## Defaults used (`MonitorSettings()`)",
        "",
        "```json",
        orjson.dumps(settings.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode(),
        "```",
        "",
    ]
    return "\n".join(lines)


def summary_line(rows: list[Row]) -> str:
    missed = [r for r in rows if not r.meets]
    met = len(rows) - len(missed)
    flaps = sum(r.flaps for r in rows)
    text = f"quality: {met} of {len(rows)} floors met; {flaps} flaps"
    if missed:
        parts = []
        for r in missed:
            name = r.scenario.title + (f" ({r.scenario.subject})" if r.scenario.subject else "")
            parts.append(f"{name}: {', '.join(r.missed())}")
        text += "; MISSED: " + "; ".join(parts)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the Markdown report here")
    parser.add_argument(
        "--seeds", type=int, default=10, help="seeds per change, recovery and version scenario"
    )
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=5_000, help="events after the change")
    parser.add_argument(
        "--close-within",
        type=int,
        default=5_000,
        help="predictions after a recovery or version switch within which alerts must close",
    )
    parser.add_argument(
        "--stationary-events",
        type=int,
        default=1_000_000,
        help="events of the first seed of each stationary row (accuracy 0.90 and 0.66)",
    )
    parser.add_argument("--extra-stationary-seeds", type=int, default=4)
    parser.add_argument("--extra-stationary-events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    args.workers = max(1, min(args.workers, 2))

    jobs = plan(args)
    scenarios = list(dict.fromkeys(job.scenario for job in jobs))
    started = time.perf_counter()
    results: list[RunResult] = []
    print(
        f"quality: {len(jobs)} runs, {sum(j.n for j in jobs):,} events, {args.workers} workers "
        f"(python {platform.python_version()})",
        file=sys.stderr,
    )
    with multiprocessing.Pool(args.workers) as pool:
        # Longest first, so the 1M-event streams do not end up running alone at the end.
        for result in pool.imap_unordered(run_job, sorted(jobs, key=lambda j: -j.n)):
            results.append(result)
            job = result.job
            print(
                f"  [{len(results):3d}/{len(jobs)}] {job.scenario.key:<22} seed {job.spec.seed:<5}"
                f" {job.n:>9,} events {result.seconds:6.1f} s, {len(result.fired)} firing, "
                f"{len(result.resolved)} resolved, {len(result.incidents)} incident events",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started
    rows = [
        summarise(s, [r for r in results if r.job.scenario == s], args.horizon, args.close_within)
        for s in scenarios
    ]
    report = render(rows, args, elapsed)
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
        print(f"quality: wrote {args.output}", file=sys.stderr)
    else:
        print(report)
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
