"""The report's comparison with the trivial policies, on hand-made KPI histories."""

from __future__ import annotations

from typing import Any

from driftline.detectors.alerts import iso_ms
from driftline.detectors.settings import KpiSettings
from driftline.detectors.trace import TracePoint
from driftline.service.backtest import (
    CONFIGURED,
    EVERY_WINDOW,
    NEVER,
    backtest,
    firing_intervals,
    kpi_windows,
)

COUNT = KpiSettings(window="count", size=1000, every=50)  # 20 evaluations per window
# One value per non-overlapping window: window 2 is a little below the reference (not
# degraded), windows 5-7 below the warning level (one degradation period).
WINDOW_VALUES = [0.9, 0.9, 0.89, 0.9, 0.9, 0.7, 0.7, 0.7, 0.9, 0.9]


def history(
    values: list[float], metric: str = "accuracy", reference: float = 0.9, warning: float = 0.85
) -> list[TracePoint]:
    """20 evaluations per window, one per second, each window at its value."""
    return [
        TracePoint(
            "m", "v1", (20 * w + i) * 1000, "kpi", metric, value,
            warning=warning, critical=None, reference=reference,
        )
        for w, value in enumerate(values)
        for i in range(20)
    ]  # fmt: skip


def alert(status: str, at_ms: int, kind: str = "kpi_threshold", **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "detector": "relative_threshold",
        "metric": "accuracy",
        "severity": "warning",
        "status": status,
        "detected_at": iso_ms(at_ms),
        **fields,
    }


def test_windows_do_not_overlap_and_mark_below_and_degraded() -> None:
    windows = kpi_windows(history(WINDOW_VALUES), COUNT)
    assert [w.end_ms for w in windows] == [(20 * k + 19) * 1000 for k in range(10)]
    assert [w.start_ms for w in windows[1:]] == [w.end_ms for w in windows[:-1]]
    assert [k for k, w in enumerate(windows) if w.below_reference] == [2, 5, 6, 7]
    assert [k for k, w in enumerate(windows) if w.degraded] == [5, 6, 7]


def test_the_three_policies_on_one_degradation_period() -> None:
    alerts = [
        alert("firing", 30_000),  # before the period, resolved before it: outside
        alert("resolved", 40_000),
        alert("firing", 120_000, kind="concept_drift", detector="adwin"),  # inside
        alert("resolved", 170_000, kind="concept_drift", detector="adwin"),
    ]
    result = backtest("m", history(WINDOW_VALUES), alerts, COUNT)
    (period,) = result.periods
    assert (period.start_ms, period.end_ms, period.windows) == (99_000, 159_000, 3)
    assert period.detected_at_ms == 120_000 and period.delay_ms == 21_000
    configured, never, every = result.policies
    assert configured.policy == CONFIGURED and never.policy == NEVER
    assert every.policy == EVERY_WINDOW
    assert (configured.alerts, configured.periods_detected, configured.periods_missed) == (2, 1, 0)
    assert configured.alerts_outside_periods == 1
    assert configured.median_delay_ms == 21_000
    assert (never.alerts, never.periods_detected, never.periods_missed) == (0, 0, 1)
    # One alert per window below the reference (windows 2, 5, 6, 7); window 2 is outside.
    assert (every.alerts, every.periods_detected, every.alerts_outside_periods) == (4, 1, 1)
    # It alerts at the end of the period's first window.
    assert every.median_delay_ms == 119_000 - 99_000


def test_an_alert_still_firing_when_the_period_starts_detects_it_at_once() -> None:
    alerts = [alert("firing", 90_000)]  # never resolved: runs to the end
    result = backtest("m", history(WINDOW_VALUES), alerts, COUNT)
    (period,) = result.periods
    assert period.delay_ms == 0
    assert result.policies[0].alerts_outside_periods == 0


def test_a_period_without_an_alert_is_missed() -> None:
    result = backtest("m", history(WINDOW_VALUES), [alert("firing", 170_000)], COUNT)
    (period,) = result.periods
    assert period.detected_at_ms is None
    assert result.policies[0].periods_missed == 1
    assert result.policies[0].alerts_outside_periods == 1


def test_higher_is_worse_metrics_degrade_upwards() -> None:
    values = [1.0, 1.0, 1.1, 1.0, 1.6, 1.6, 1.0]
    points = history(values, metric="rmse", reference=1.0, warning=1.25)
    windows = kpi_windows(points, COUNT)
    assert [k for k, w in enumerate(windows) if w.below_reference] == [2, 4, 5]
    assert [k for k, w in enumerate(windows) if w.degraded] == [4, 5]


def test_time_windows_take_one_evaluation_per_duration() -> None:
    settings = KpiSettings(window="time", duration_s=10, every=50)
    windows = kpi_windows(history([0.9] * 5), settings)
    # 100 evaluations, one per second from 0 s: a window ends every 10 s after the first.
    assert [w.end_ms for w in windows] == [10_000 * k for k in range(1, 10)]
    assert windows[0].start_ms == 0


def test_without_labelled_evaluations_there_is_nothing_to_compare() -> None:
    unreferenced = [
        TracePoint("m", None, 1000 * i, "kpi", "accuracy", 0.9, reference=None) for i in range(50)
    ]
    for points in ([], unreferenced):
        result = backtest("m", points, [alert("firing", 10)], COUNT)
        assert result.windows == () and result.periods == ()
        assert result.policies[2].alerts == 0


def test_firing_intervals_pair_each_identity_and_skip_incident_events() -> None:
    events = [
        alert("firing", 1_000),
        alert("firing", 2_000, severity="critical"),
        {"kind": "incident", "status": "opened", "opened_at": iso_ms(1_000)},
        alert("resolved", 5_000),
    ]
    assert firing_intervals(events) == [(1_000, 5_000), (2_000, float("inf"))]
