"""``driftline report``: the curves are the ones the decisions were made from, recording them
changes no decision, and the page needs nothing from the network."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.detectors.trace import SeriesTrace, TracePoint, recorder
from driftline.service.config import load_config
from driftline.service.replay import replay
from driftline.service.report import Report, build_report, render_report
from driftline.service.synthetic import ModelStream, generate
from tests.unit.test_replay_cli import write_records

CHANGE_AT = 7000  # after the data reference (the first 5,000 events) is full
STEP_MS = ModelStream("x").step_ms


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "records.jsonl"
    write_records(
        path,
        [
            ModelStream(
                "credit",
                seed=11,
                change_at=CHANGE_AT,
                accuracy_after=0.7,
                numeric_shift={"x1": 1.0},
                null_rate={"x2": 0.2},
            ),
            ModelStream("fraud", seed=12),
        ],
        12000,
    )
    return path


@pytest.fixture(scope="module")
def report(records: Path) -> Report:
    return build_report(load_config(None, environ={}), records)


def test_recording_the_curves_changes_no_decision(records: Path, report: Report) -> None:
    out = io.BytesIO()
    with records.open("rb") as source:
        replay(load_config(None, environ={}), source, out)
    replayed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    reported = [e for m in report.models for e in (*m.alerts, *m.incidents)]

    def key(event: dict[str, object]) -> bytes:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)

    assert sorted(map(key, reported)) == sorted(map(key, replayed))
    assert len(replayed) > 0
    assert recorder() is None  # the recorder is gone after the report


def test_the_degrading_model_has_every_curve_and_its_kpi_crosses_its_levels(
    report: Report,
) -> None:
    credit = {m.model_id: m for m in report.models}["credit"]
    change_ms = ModelStream("credit").start_ms + CHANGE_AT * STEP_MS
    every = ("kpi", "label_coverage", "data_drift", "prediction_drift", "data_quality", "estimated")
    for series in every:
        assert credit.series(series), series
    for point in credit.series("estimated"):
        # The label-free estimate's levels: 3 and 6 points under its own reference.
        assert point.reference is not None and point.warning is not None
        assert point.warning == pytest.approx(point.reference - 0.03)
    accuracy = [p for p in credit.series("kpi") if p.name == "accuracy"]
    for point in accuracy:
        # The relative threshold: 5 and 10 points under the reference of the model version.
        assert point.reference is not None
        assert point.warning == pytest.approx(point.reference - 0.05)
        assert point.critical == pytest.approx(point.reference - 0.10)
    assert min(p.value for p in accuracy if p.time_ms < change_ms) > accuracy[0].critical
    assert min(p.value for p in accuracy) < accuracy[0].critical
    x1 = [p for p in credit.series("data_drift") if p.name == "x1"]
    assert max(p.value for p in x1 if p.time_ms > change_ms) > x1[-1].warning
    nulls = [p for p in credit.series("data_quality") if p.name == "x2" and p.metric == "null_rate"]
    assert max(p.value for p in nulls if p.time_ms < change_ms) == 0.0
    assert max(p.value for p in nulls) > 0.15


def test_the_backtest_finds_the_degradation_and_driftline_catches_it(report: Report) -> None:
    change_ms = ModelStream("credit").start_ms + CHANGE_AT * STEP_MS
    credit = report.backtests["credit"]
    (period,) = credit.periods
    assert period.detected_at_ms is not None
    # The period starts at the window boundary before the change or just after it.
    assert abs(period.start_ms - change_ms) <= 1000 * STEP_MS
    configured, never, every = credit.policies
    assert configured.periods_detected == 1 and never.periods_missed == 1
    assert every.alerts > configured.alerts_outside_periods
    fraud = report.backtests["fraud"]
    assert fraud.periods == ()
    assert fraud.policies[0].alerts == 0  # the stable model: driftline stays quiet


def test_the_page_is_self_contained(report: Report) -> None:
    page = render_report(report)
    assert page.count("<svg") == len(report.models) == 2
    assert 'id="model-credit"' in page and 'id="model-fraud"' in page
    assert "<script" not in page.lower()
    # Nothing to fetch: no external sources, styles or imports. (The SVG namespace URIs are
    # names, not requests.)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page)
    assert "<link" not in page.lower()


def test_label_coverage_falls_when_the_outcomes_stop(tmp_path: Path) -> None:
    """With no outcome of a model after event 3,000 it has no KPI evaluation any more; its
    coverage curve still follows its predictions as they expire unlabelled. (They expire by the
    label stream of their partition, here another model's outcomes, 30 s of event time on.)"""
    quiet, busy = ModelStream("quiet", seed=13), ModelStream("busy", seed=14)
    stop_ms = quiet.start_ms + 3000 * STEP_MS
    path = tmp_path / "records.jsonl"
    with path.open("wb") as out:
        for pairs in zip(generate(quiet, 6000), generate(busy, 6000), strict=True):
            for prediction, outcome in pairs:
                key = prediction["model_id"]
                out.write(orjson.dumps({"topic": "predictions", "key": key, "value": prediction}))
                out.write(b"\n")
                if key == "busy" or prediction["timestamp"] < stop_ms:
                    out.write(orjson.dumps({"topic": "outcomes", "key": key, "value": outcome}))
                    out.write(b"\n")
    config = load_config(None, environ={"DRIFTLINE_PROCESSING__JOIN_WAIT_S": "30"})
    traces = {m.model_id: m for m in build_report(config, path).models}
    coverage = sorted(traces["quiet"].series("label_coverage"), key=lambda p: p.time_ms)
    assert max(p.time_ms for p in traces["quiet"].series("kpi")) < stop_ms + 1000
    assert coverage[0].value == 1.0
    after = [p for p in coverage if p.time_ms > stop_ms + 200_000]
    assert after and after[-1].value < 0.05
    assert min(p.value for p in traces["busy"].series("label_coverage")) == 1.0


def test_plots_caps_the_figures_at_the_models_that_matter_most(report: Report) -> None:
    page = render_report(report, max_plots=1)
    assert page.count("<svg") == 1
    assert 'id="model-credit"' in page and 'id="model-fraud"' not in page
    assert "<td>fraud</td>" in page  # still in the tables, without a link to a figure
    assert "1 quieter models are in the tables only" in page


def test_plots_must_be_at_least_one(records: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "driftline.service.cli", "report", "--input", str(records),
         "--output", str(tmp_path / "r.html"), "--plots", "0"],
        check=False,  # the assertion shows stderr
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--plots" in done.stderr and "at least 1" in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_regression_model_is_backtested_on_its_error(tmp_path: Path) -> None:
    """RMSE is worse upwards: its degradation periods are where it rises above its level."""
    rng = np.random.default_rng(5)
    start_ms, change = ModelStream("x").start_ms, 7000
    path = tmp_path / "regression.jsonl"
    with path.open("wb") as out:
        for i in range(12000):
            x = rng.standard_normal(3)
            truth = float(x.sum())
            noise = 0.3 if i < change else 0.9  # the error triples at the change
            features = {name: round(float(v), 5) for name, v in zip("abc", x, strict=True)}
            prediction = {
                "event_id": f"r{i}", "model_id": "price", "model_version": "v1",
                "timestamp": start_ms + i * STEP_MS, "features": features,
                "prediction": round(truth + float(rng.normal(0, noise)), 5),
            }  # fmt: skip
            outcome = {
                "event_id": f"r{i}", "model_id": "price",
                "timestamp": start_ms + i * STEP_MS + 500, "label": round(truth, 5) + 1e-7,
            }  # fmt: skip
            for topic, event in (("predictions", prediction), ("outcomes", outcome)):
                out.write(orjson.dumps({"topic": topic, "key": "price", "value": event}) + b"\n")
    report = build_report(load_config(None, environ={}), path)
    price = report.backtests["price"]
    assert price.metric == "rmse"
    (period,) = price.periods
    assert period.detected_at_ms is not None
    assert abs(period.start_ms - (start_ms + change * STEP_MS)) <= 1000 * STEP_MS
    assert all(w.value > w.reference for w in price.windows if w.degraded)
    assert report.models[0].series("estimated") == []  # no label-free estimate for regression
    assert render_report(report).count("<svg") == 1


def test_a_series_gives_back_every_point_as_recorded_in_a_third_of_the_memory() -> None:
    """The trace keeps a series column by column: every point comes back equal, optional levels
    absent or present, NaN and infinite values included, and 20,000 points of 21 names take
    less than 100 bytes each (about 70; as TracePoint objects with their own floats, 280)."""
    rng = np.random.default_rng(5)
    names = [f"feature_{i:02d}" for i in range(21)]

    def point(i: int) -> TracePoint:
        optional = [float(x) if rng.random() < 0.5 else None for x in rng.normal(size=3)]
        value = (math.nan, math.inf, float(i))[i % 3] if i % 97 == 0 else float(rng.normal())
        return TracePoint(
            "m",
            None if i % 5 == 0 else "v2",
            1_000 * i,
            "data_drift",
            "".join(names[i % 21]),  # a new str object per point, as decoded names are
            value,
            *optional,
            metric=None if i % 2 else "null_rate",
        )

    recorded = [point(i) for i in range(20_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    series = SeriesTrace("data_drift")
    for p in recorded:
        series.append(p)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    back = series.points()
    assert len(series) == len(back) == len(recorded)
    for got, want in zip(back, recorded, strict=True):
        if math.isnan(want.value):  # NaN equals nothing, itself included
            assert math.isnan(got.value)
            assert dataclasses.replace(got, value=0.0) == dataclasses.replace(want, value=0.0)
        else:
            assert got == want
    assert series.last_time_ms == 19_999_000
    assert held / len(recorded) < 100, f"{held / len(recorded):.0f} bytes a point"
