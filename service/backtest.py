"""What the thresholds buy: driftline's alerts against two trivial policies on the labelled history.

The labelled history is cut into non-overlapping KPI windows (the KPI window of ``kpis``, taken
from the evaluations ``driftline report`` recorded). A window is *degraded* when its KPI is worse
than the warning level of the configured threshold; consecutive degraded windows are one
*degradation period*. Against those periods:

- **driftline**: the alerts it published. A period is detected when an alert of the model is
  firing at some time in it; the delay runs from the period's start (the end of the window before
  its first degraded window) to the first such firing.
- **never alert**: no alert, every period missed.
- **alert on every window below the reference**: one alert per window whose KPI is worse than the
  reference at all, so every period is caught at its first window's end, and every unlucky window
  outside the periods is an alert too.

Degradation here is what the labels measured, with no confidence bound: an estimate, not ground
truth, and only where there are labels. A data-drift alert outside every period is counted, not
called false: the data may have changed without the KPI moving (yet).

Pure functions over trace points and the emitted events; no Kafka.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.detectors.alerts import alert_identity
from driftline.detectors.settings import HIGHER_IS_WORSE, KpiSettings
from driftline.detectors.trace import TracePoint
from driftline.service.summary import parse_time_ms

__all__ = [
    "KpiWindow",
    "ModelBacktest",
    "Period",
    "PolicyResult",
    "backtest",
    "firing_intervals",
    "kpi_windows",
]

NEVER = "never alert"
EVERY_WINDOW = "alert on every window below the reference"
CONFIGURED = "driftline (this configuration)"


@dataclass(frozen=True, slots=True)
class KpiWindow:
    """One non-overlapping window of the labelled history, as the KPI evaluation measured it."""

    start_ms: int  # the end of the window before it (the first window: its first evaluation)
    end_ms: int
    value: float
    reference: float
    warning: float | None
    below_reference: bool  # worse than the reference, by any amount
    degraded: bool  # worse than the warning level


@dataclass(frozen=True, slots=True)
class Period:
    """A run of consecutive degraded windows."""

    start_ms: int
    end_ms: int
    windows: int
    detected_at_ms: int | None  # the first driftline alert firing in it; None: missed

    @property
    def delay_ms(self) -> int | None:
        return None if self.detected_at_ms is None else self.detected_at_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class PolicyResult:
    policy: str
    alerts: int  # alerts that started firing
    periods_detected: int
    periods_missed: int
    alerts_outside_periods: int
    median_delay_ms: float | None


@dataclass(frozen=True, slots=True)
class ModelBacktest:
    model_id: str
    metric: str | None  # the KPI the periods are measured on; None: no labelled KPI
    windows: tuple[KpiWindow, ...]
    periods: tuple[Period, ...]
    policies: tuple[PolicyResult, ...]


def kpi_windows(points: Sequence[TracePoint], settings: KpiSettings) -> list[KpiWindow]:
    """Non-overlapping windows from one KPI's evaluations, in time order.

    Count windows: every ``size / every``-th evaluation. Time windows: the first evaluation at
    least ``duration_s`` after the last one taken (or after the first evaluation).
    """
    usable = [p for p in points if p.reference is not None]
    if not usable:
        return []
    worse_above = usable[0].name in HIGHER_IS_WORSE
    stride = max(1, settings.size // settings.every) if settings.window == "count" else 1
    span_ms = 0 if settings.window == "count" else int((settings.duration_s or 0) * 1000)
    taken: list[TracePoint] = []
    last_ms = usable[0].time_ms
    for index, point in enumerate(usable):
        if settings.window == "count":
            if index % stride == stride - 1:
                taken.append(point)
        elif point.time_ms - last_ms >= span_ms:
            taken.append(point)
            last_ms = point.time_ms
    windows = []
    start = usable[0].time_ms
    for point in taken:
        assert point.reference is not None
        if worse_above:
            below = point.value > point.reference
            degraded = point.warning is not None and point.value > point.warning
        else:
            below = point.value < point.reference
            degraded = point.warning is not None and point.value < point.warning
        windows.append(
            KpiWindow(
                start, point.time_ms, point.value, point.reference, point.warning, below, degraded
            )
        )
        start = point.time_ms
    return windows


def firing_intervals(alerts: Iterable[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """``[fired, resolved)`` in event time of every alert identity's firings; an alert still
    firing at the end runs to infinity."""
    opened: dict[tuple[str, str, str, str], int] = {}
    intervals: list[tuple[int, float]] = []
    for alert in alerts:
        if alert.get("kind") == "incident" or "status" not in alert:
            continue
        identity = alert_identity(alert)
        at = parse_time_ms(alert["detected_at"])
        if alert["status"] == "firing":
            opened.setdefault(identity, at)
        elif identity in opened:
            intervals.append((opened.pop(identity), at))
    intervals.extend((start, float("inf")) for start in opened.values())
    return sorted(intervals)


def backtest(
    model_id: str,
    points: Sequence[TracePoint],
    alerts: Sequence[Mapping[str, Any]],
    settings: KpiSettings,
) -> ModelBacktest:
    """The three policies on one model's labelled history (``points``: its KPI evaluations of
    the first thresholded metric; ``alerts``: its published alerts)."""
    windows = kpi_windows(points, settings)
    intervals = firing_intervals(alerts)
    periods = _periods(windows, intervals)
    # An alert firing at some time during a period is about it, even if it fired before.
    outside = sum(
        not any(fired <= p.end_ms and resolved > p.start_ms for p in periods)
        for fired, resolved in intervals
    )
    delays = [p.delay_ms for p in periods if p.delay_ms is not None]
    configured = PolicyResult(
        CONFIGURED,
        alerts=len(intervals),
        periods_detected=sum(p.detected_at_ms is not None for p in periods),
        periods_missed=sum(p.detected_at_ms is None for p in periods),
        alerts_outside_periods=outside,
        median_delay_ms=statistics.median(delays) if delays else None,
    )
    never = PolicyResult(NEVER, 0, 0, len(periods), 0, None)
    below = [w for w in windows if w.below_reference]
    first_window = [
        next(w.end_ms - p.start_ms for w in windows if w.degraded and w.end_ms >= p.start_ms)
        for p in periods
    ]
    every = PolicyResult(
        EVERY_WINDOW,
        alerts=len(below),
        periods_detected=len(periods),
        periods_missed=0,
        alerts_outside_periods=sum(not w.degraded for w in below),
        median_delay_ms=statistics.median(first_window) if first_window else None,
    )
    metric = points[0].name if points else None
    return ModelBacktest(model_id, metric, tuple(windows), periods, (configured, never, every))


def _periods(
    windows: Sequence[KpiWindow], intervals: Sequence[tuple[int, float]]
) -> tuple[Period, ...]:
    runs: list[list[KpiWindow]] = []
    for window in windows:
        if not window.degraded:
            continue
        if runs and runs[-1][-1].end_ms == window.start_ms:
            runs[-1].append(window)
        else:
            runs.append([window])
    periods = []
    for run in runs:
        start, end = run[0].start_ms, run[-1].end_ms
        # Firing at some time in [start, end]: fired inside it, or fired before and not resolved.
        overlapping = [
            max(fired, start) for fired, resolved in intervals if fired <= end and resolved > start
        ]
        periods.append(Period(start, end, len(run), min(overlapping) if overlapping else None))
    return tuple(periods)
