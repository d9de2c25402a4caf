"""The signals of a generation: one protocol, one alert book, the order of their alerts."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import driftline.detectors.generation
import driftline.detectors.signals.base
import driftline.detectors.signals.concept
import driftline.detectors.signals.drift
import driftline.detectors.signals.estimated
import driftline.detectors.signals.kpis
import driftline.detectors.signals.output
import driftline.detectors.signals.quality
from driftline.detectors.batch import LabeledBatch
from driftline.detectors.events import Labeled, Source
from driftline.detectors.generation import Generation
from driftline.detectors.settings import MonitorSettings
from driftline.detectors.signals import KpiSignal


@pytest.mark.parametrize(
    "module",
    [
        driftline.detectors.generation,
        driftline.detectors.signals.base,
        driftline.detectors.signals.concept,
        driftline.detectors.signals.drift,
        driftline.detectors.signals.estimated,
        driftline.detectors.signals.kpis,
        driftline.detectors.signals.output,
        driftline.detectors.signals.quality,
    ],
)
def test_doctests(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0


def _labeled(n: int) -> LabeledBatch:
    events = [
        Labeled(str(i), "m", None, i % 2, None, i % 2, i, i, Source("o", 0, i)) for i in range(n)
    ]
    return LabeledBatch.from_events(events)


@pytest.mark.parametrize(
    ("concept", "expected"), [(True, ["ConceptSignal", "KpiSignal"]), (False, ["KpiSignal"])]
)
def test_label_signals_start_with_the_first_labels(concept: bool, expected: list[str]) -> None:
    settings = MonitorSettings.model_validate({"concept_drift": {"enabled": concept}})
    generation = Generation("m", settings)
    assert generation._label_signals == ()
    assert generation.observe_labeled(_labeled(10)) == []
    assert [type(s).__name__ for s in generation._label_signals] == expected
    assert isinstance(generation._label_signals[-1], KpiSignal)


def test_signals_follow_the_settings_and_report_in_a_fixed_order() -> None:
    """Prediction side: data drift, prediction drift, quality, estimated performance; label
    side once labels come: concept drift, then KPIs. A disabled signal is not there at all, and
    a regression model has no estimated performance."""
    generation = Generation("m", MonitorSettings())
    kinds = [type(s).__name__ for s in generation._prediction_signals]
    assert kinds == ["DriftSignal", "DriftSignal", "QualitySignal", "EstimatedPerformanceSignal"]
    off = MonitorSettings.model_validate(
        {
            "prediction_drift": {"enabled": False},
            "data_quality": {"enabled": False},
            "estimated_performance": {"enabled": False},
        }
    )
    assert [type(s).__name__ for s in Generation("m", off)._prediction_signals] == ["DriftSignal"]
    regression = MonitorSettings.model_validate({"task": "regression"})
    kinds = [type(s).__name__ for s in Generation("m", regression)._prediction_signals]
    assert kinds == ["DriftSignal", "DriftSignal", "QualitySignal"]
