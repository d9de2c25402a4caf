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

* stationary: no firing alert of any kind;
* accuracy 0.90 -> 0.81 after 10,000 events: concept_drift or kpi_threshold fires within 1,000
  predictions;
* a 0.5 standard-deviation mean shift of one numeric feature: data_drift fires for that feature
  within 2,000 predictions, and for no other feature;
* a category share 0.15 -> 0.30: data_drift for that feature within 2,000, and no other;
* a null rate of 20% in one feature: data_quality ``null_rate`` for that feature within 1,000.

The model's score and prediction do not depend on the features and the label only on the
prediction, so every change touches exactly one signal: any alert outside the expected one is a
false or misattributed alert, and it fails the verdict. *Delay* is counted in predictions: the
number of predictions whose event time lies between the change (inclusive) and the event time of
the alert's triggering event (inclusive); a label-side alert is triggered by an outcome, which
arrives 5 predictions after its own prediction.

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

from detectors.settings import MonitorSettings
from service.config import Config, load_config
from service.pipeline import InputRecord, Pipeline

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

ACCURACY = 0.90
POSITIVE_RATE = 0.30
START_MS = 1_790_000_000_000
STEP_MS = 100
LABEL_DELAY_MS = 500
LABEL_LAG = LABEL_DELAY_MS // STEP_MS  # outcome of event j follows the prediction of j + LAG
CHUNK = 20_000  # events generated at once (memory stays flat for 1M-event streams)


@dataclass(frozen=True)
class StreamSpec:
    """One model's stream; ``change_at`` is the index of the first changed event."""

    model_id: str = "m"
    seed: int = 0
    change_at: int | None = None
    accuracy_after: float | None = None
    shift: tuple[str, float] | None = None  # numeric feature, mean shift in standard deviations
    share: tuple[str, float] | None = None  # categorical feature, new share of its 0.15 category
    nulls: tuple[str, float] | None = None  # feature, null rate
    model_version: str = "v1"


def generate_chunk(spec: StreamSpec, start: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """JSON values of the predictions and outcomes of events ``start .. start + n - 1``.

    Drawn in bulk with numpy; the same (spec, start, n) always gives the same bytes."""
    rng = np.random.default_rng([spec.seed, start])
    index = np.arange(start, start + n)
    after = np.zeros(n, bool) if spec.change_at is None else index >= spec.change_at
    numeric = np.empty((n, len(NUMERIC)))
    for j, feature in enumerate(NUMERIC):
        numeric[:, j] = feature.draw(rng, n)
        if spec.shift is not None and spec.shift[0] == feature.name:
            numeric[after, j] += spec.shift[1] * feature.std
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
    accuracy = np.full(n, ACCURACY)
    if spec.accuracy_after is not None:
        accuracy[after] = spec.accuracy_after
    predicted = rng.random(n) < POSITIVE_RATE
    correct = rng.random(n) < accuracy
    label = np.where(correct, predicted, ~predicted)
    confidence = 0.5 + 0.5 * rng.beta(2.0, 1.0, n)
    score = np.round(np.where(predicted, confidence, 1.0 - confidence), 6).tolist()
    predicted_list = predicted.astype(int).tolist()
    label_list = label.astype(int).tolist()
    model_id, version = spec.model_id, spec.model_version
    names = FEATURE_NAMES
    dumps = orjson.dumps
    predictions: list[bytes] = []
    outcomes: list[bytes] = []
    for i in range(n):
        j = start + i
        event_id = f"{model_id}-{j}"
        ts = START_MS + j * STEP_MS
        predictions.append(
            dumps(
                {
                    "event_id": event_id,
                    "model_id": model_id,
                    "model_version": version,
                    "timestamp": ts,
                    "features": dict(zip(names, numeric_rows[i] + cat_rows[i], strict=True)),
                    "prediction": predicted_list[i],
                    "score": score[i],
                }
            )
        )
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
        waiting.extend(outcomes)
        for i, value in enumerate(predictions):
            j = start + i
            ts = START_MS + j * STEP_MS
            yield InputRecord("prediction", topics[0], 0, j, key, value, ts)
            if j >= LABEL_LAG:
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


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    spec: StreamSpec
    n: int


@dataclass
class Fired:
    kind: str
    detector: str
    subject: str
    severity: str
    detected_ms: int
    topic: str
    offset: int


@dataclass
class RunResult:
    job: Job
    fired: list[Fired]
    resolved: int
    dead_letters: Counter[str]
    records: int
    predictions: int
    labeled: int
    seconds: float


def default_config() -> Config:
    """What the service runs with when it has no config file and no DRIFTLINE_* variables."""
    return load_config(None, environ={})


def run_job(job: Job) -> RunResult:
    """Drive the job's stream through the service's pipeline; keep every firing alert."""
    started = time.perf_counter()
    config = default_config()
    pipeline = Pipeline(config)
    pipeline.assign([0])
    batch_size = config.processing.batch_size
    fired: list[Fired] = []
    resolved = 0
    dead: Counter[str] = Counter()
    n_records = predictions = labeled = 0
    batch: list[InputRecord] = []

    def flush() -> None:
        nonlocal resolved, predictions, labeled
        result = pipeline.process(batch)
        predictions += result.predictions
        labeled += result.labeled
        dead.update(d.reason for d in result.dead_letters)
        for alert in result.alerts:
            if alert["status"] != "firing":
                resolved += 1
                continue
            fired.append(
                Fired(
                    alert["kind"],
                    alert["detector"],
                    alert.get("feature") or alert.get("metric") or "",
                    alert["severity"],
                    _parse_ms(alert["detected_at"]),
                    alert["source"]["topic"],
                    alert["source"]["offset"],
                )
            )
        batch.clear()

    for record in records(job.spec, job.n):
        batch.append(record)
        n_records += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    return RunResult(
        job, fired, resolved, dead, n_records, predictions, labeled, time.perf_counter() - started
    )


def _parse_ms(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def delay_of(fired: Fired, change_at: int) -> int:
    """Predictions from the change (inclusive) to the alert's event time (inclusive)."""
    change_ms = START_MS + change_at * STEP_MS
    return (fired.detected_ms - change_ms) // STEP_MS + 1


def is_expected(scenario: Scenario, fired: Fired) -> bool:
    if fired.kind not in scenario.expected_kinds:
        return False
    if scenario.subject is not None and fired.subject != scenario.subject:
        return False
    return scenario.detector is None or fired.detector == scenario.detector


STATIONARY = Scenario("stationary", "Stationary, all labelled", 0, frozenset())
ACCURACY_DROP = Scenario(
    "accuracy", "Accuracy 0.90 → 0.81", 1000, frozenset({"concept_drift", "kpi_threshold"})
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


SHIFT_FEATURES = ("n01_normal", "n05_lognormal")
SHARE_FEATURES = ("c1_4cat", "c4_8cat")
NULL_FEATURES = ("n09_exponential", "c2_5cat")


def plan(args: argparse.Namespace) -> list[Job]:
    jobs: list[Job] = [Job(STATIONARY, StreamSpec(seed=0), args.stationary_events)]
    jobs += [
        Job(STATIONARY, StreamSpec(seed=seed), args.extra_stationary_events)
        for seed in range(1, 1 + args.extra_stationary_seeds)
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
    return jobs


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: Scenario
    results: list[RunResult]
    delays: list[int] = field(default_factory=list)
    misses: int = 0
    false_before: list[tuple[int, Fired]] = field(default_factory=list)
    unexpected_after: list[tuple[int, Fired]] = field(default_factory=list)
    first_by_kind: dict[str, list[int]] = field(default_factory=dict)

    @property
    def stationary(self) -> bool:
        return self.scenario.key == STATIONARY.key

    @property
    def events(self) -> int:
        return sum(r.job.n for r in self.results)

    @property
    def false_count(self) -> int:
        return len(self.false_before) + len(self.unexpected_after)

    @property
    def meets(self) -> bool:
        if self.stationary:
            return self.false_count == 0
        return (
            self.misses == 0
            and all(d <= self.scenario.floor for d in self.delays)
            and self.false_count == 0
        )


def summarise(scenario: Scenario, results: list[RunResult], horizon: int) -> Row:
    row = Row(scenario, sorted(results, key=lambda r: r.job.spec.seed))
    for result in row.results:
        spec = result.job.spec
        if spec.change_at is None:
            row.false_before += [(spec.seed, f) for f in result.fired]
            continue
        change_ms = START_MS + spec.change_at * STEP_MS
        first: int | None = None
        firsts: dict[str, int] = {}
        for fired in result.fired:
            if fired.detected_ms < change_ms:
                row.false_before.append((spec.seed, fired))
            elif is_expected(scenario, fired):
                delay = delay_of(fired, spec.change_at)
                first = delay if first is None else min(first, delay)
                identity = f"{fired.kind}/{fired.severity}"
                firsts[identity] = min(delay, firsts.get(identity, delay))
            else:
                row.unexpected_after.append((spec.seed, fired))
        for identity, delay in firsts.items():
            row.first_by_kind.setdefault(identity, []).append(delay)
        if first is None or first > horizon:
            row.misses += 1
        else:
            row.delays.append(first)
    return row


def _fmt(n: float | None) -> str:
    return "—" if n is None else f"{n:,.0f}"


def _describe(fired: Fired) -> str:
    return f"{fired.kind}/{fired.detector}/{fired.subject}/{fired.severity}"


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
        "miss. *False / misattributed*: firing alerts before the change (any kind), plus firing "
        "alerts after it other than the expected one (another kind, or the expected kind on "
        "another feature); the model's score and prediction do not depend on the features and "
        "the label only on the prediction, so no other alert is legitimate.",
        "",
        "| scenario | feature | floor | seeds | events | detected | median delay | max delay "
        "| false / misattributed | meets floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.scenario
        if row.stationary:
            floor = "0 false alarms"
            detected = median = worst = "n/a"
        else:
            floor = f"delay ≤ {s.floor:,}, no misattribution"
            detected = f"{len(row.delays)} of {len(row.results)}"
            median = _fmt(statistics.median(row.delays)) if row.delays else "—"
            worst = _fmt(max(row.delays)) if row.delays else "—"
        feature = s.subject or ("any" if row.stationary else "—")
        lines.append(
            f"| {s.title} | {feature} | {floor} | {len(row.results)} | {row.events:,} | "
            f"{detected} | {median} | {worst} | {row.false_count} | "
            f"{'yes' if row.meets else '**no**'} |"
        )
    lines += ["", "## Stationary streams", ""]
    for row in rows:
        if not row.stationary:
            continue
        lines.append("| seed | events | records | false alarms | by kind |")
        lines.append("|---|---|---|---|---|")
        for result in row.results:
            kinds = Counter(f.kind for f in result.fired)
            by_kind = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"
            lines.append(
                f"| {result.job.spec.seed} | {result.job.n:,} | {result.records:,} | "
                f"{len(result.fired)} | {by_kind} |"
            )
        total = len(row.false_before)
        lines += [
            "",
            f"{total} false alarms in {row.events:,} stationary events "
            f"({total / row.events * 1e6:.2f} per million events). Kinds watched: every kind "
            "the monitor emits (concept_drift, kpi_threshold, data_drift, prediction_drift, "
            "data_quality).",
        ]
    lines += [
        "",
        "## Delays per seed",
        "",
        "| scenario | feature | first expected alert per seed (predictions) "
        "| median by kind/severity |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if row.stationary:
            continue
        per_seed = []
        for result in row.results:
            spec = result.job.spec
            assert spec.change_at is not None
            delays = [
                delay_of(f, spec.change_at)
                for f in result.fired
                if is_expected(row.scenario, f) and delay_of(f, spec.change_at) >= 1
            ]
            per_seed.append(_fmt(min(delays)) if delays else "miss")
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
        "",
        "## False and misattributed alerts",
        "",
    ]
    bad = [(row, seed, f, "before") for row in rows for seed, f in row.false_before]
    bad += [(row, seed, f, "after") for row in rows for seed, f in row.unexpected_after]
    if not bad:
        lines.append("None.")
    else:
        lines += [
            "| scenario | seed | when | alert (kind/detector/subject/severity) | event index |",
            "|---|---|---|---|---|",
        ]
        for row, seed, f, when in bad:
            spec_change = next(r.job.spec.change_at for r in row.results if r.job.spec.seed == seed)
            at = (f.detected_ms - START_MS) // STEP_MS
            when_text = (
                "stationary"
                if spec_change is None
                else f"{'before' if when == 'before' else 'after'} the change at {spec_change:,}"
            )
            lines.append(
                f"| {row.scenario.title} | {seed} | {when_text} | {_describe(f)} | {at:,} |"
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
        "(every prediction is labelled). Accuracy 0.90, positive rate 0.30, score = the "
        "prediction's side of 0.5 with confidence 0.5 + 0.5·Beta(2, 1).",
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
    text = f"quality: {met} of {len(rows)} floors met"
    if missed:
        parts = []
        for r in missed:
            name = r.scenario.title + (f" ({r.scenario.subject})" if r.scenario.subject else "")
            bits = []
            if r.misses:
                bits.append(f"{r.misses} misses")
            late = [d for d in r.delays if d > r.scenario.floor]
            if late:
                bits.append(f"max delay {max(late):,} > {r.scenario.floor:,}")
            if r.false_count:
                bits.append(f"{r.false_count} false/misattributed")
            parts.append(f"{name}: {', '.join(bits)}")
        text += "; MISSED: " + "; ".join(parts)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the Markdown report here")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per change scenario")
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=5_000, help="events after the change")
    parser.add_argument("--stationary-events", type=int, default=1_000_000)
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
        # Longest first, so the 1M-event stream does not end up running alone at the end.
        for result in pool.imap_unordered(run_job, sorted(jobs, key=lambda j: -j.n)):
            results.append(result)
            job = result.job
            print(
                f"  [{len(results):3d}/{len(jobs)}] {job.scenario.key:<22} seed {job.spec.seed:<5}"
                f" {job.n:>9,} events {result.seconds:6.1f} s, {len(result.fired)} firing",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started
    rows = [
        summarise(s, [r for r in results if r.job.scenario == s], args.horizon) for s in scenarios
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
