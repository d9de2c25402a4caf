"""The report's plots: one figure per model, five panels on the event-time axis, as inline SVG.

matplotlib rather than a JavaScript plotting library: the SVG it writes is static markup, so the
report is one file that needs no script and no network to open, prints as it looks, and stays
small (a model's figure is about 100 KB; plotly's bundled JavaScript alone is 3.5 MB). The Figure
API is used directly, without pyplot's global state.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from driftline.detectors.trace import TracePoint
from driftline.service.backtest import ModelBacktest
from driftline.service.report import ModelTrace
from driftline.service.summary import parse_time_ms

__all__ = ["PANELS", "model_figure"]

PANELS = ("kpis", "label-coverage", "data-drift", "prediction-drift", "data-quality")

# The panel an alert kind is drawn on.
_PANEL_OF_KIND = {
    "kpi_threshold": 0,
    "concept_drift": 0,
    "estimated_performance": 0,
    "data_drift": 2,
    "prediction_drift": 3,
    "data_quality": 4,
}
_SEVERITY_COLOR = {"warning": "#e08a00", "critical": "#c62828"}
_TOP_FEATURES = 5
_TOP_QUALITY = 6


def model_figure(trace: ModelTrace, result: ModelBacktest) -> str:
    """The model's five panels as an ``<svg>`` element."""
    with rc_context({"svg.hashsalt": trace.model_id, "svg.fonttype": "path", "font.size": 9}):
        figure = Figure(figsize=(12, 13), layout="constrained")
        axes = figure.subplots(5, 1, sharex=True, height_ratios=[3, 1.3, 2.2, 1.6, 1.8])
        _kpis(axes[0], trace.series("kpi"), trace.series("estimated"), result)
        _coverage(axes[1], trace.series("label_coverage"))
        fired = {a.get("feature") for a in trace.alerts if a.get("kind") == "data_drift"}
        _drift(axes[2], trace.series("data_drift"), fired, "data drift: −log10(p) per feature")
        predicted = {a.get("feature") for a in trace.alerts if a.get("kind") == "prediction_drift"}
        _drift(axes[3], trace.series("prediction_drift"), predicted, "prediction drift: −log10(p)")
        _quality(axes[4], trace.series("data_quality"))
        _marks(axes, trace)
        for ax, panel in zip(axes, PANELS, strict=True):
            # An id per panel in the SVG: a reader (or a test) can find each one in the page.
            ax.set_gid(f"{trace.model_id}-{panel}")
        axes[-1].xaxis_date()
        # matplotlib.dates carries no type annotations.
        formatter = DateFormatter("%m-%d %H:%M")  # type: ignore[no-untyped-call]
        axes[-1].xaxis.set_major_formatter(formatter)
        axes[-1].set_xlabel("event time (UTC)")
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]


_MS_PER_DAY = 86_400_000  # matplotlib's date unit: days since 1970-01-01 (its default epoch)


def _day(ms: float) -> float:
    return ms / _MS_PER_DAY


def _times(points: Sequence[TracePoint]) -> np.ndarray:
    return _days([p.time_ms for p in points])


def _days(times_ms: Sequence[int]) -> np.ndarray:
    return np.array(times_ms, dtype=np.float64) / _MS_PER_DAY


def _empty(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title, loc="left")
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="#5a6475")
    ax.set_yticks([])


def _levels(ax: Axes, points: Sequence[TracePoint], label: str) -> None:
    """The warning and critical levels as steps: a relative threshold moves with the reference
    of each model version."""
    times = _times(points)
    for attribute, color, name in (
        ("warning", _SEVERITY_COLOR["warning"], "warning"),
        ("critical", _SEVERITY_COLOR["critical"], "critical"),
    ):
        values = np.array(
            [np.nan if getattr(p, attribute) is None else getattr(p, attribute) for p in points]
        )
        if np.isfinite(values).any():
            ax.step(times, values, where="post", color=color, lw=1, ls=":", label=f"{label} {name}")


def _kpis(
    ax: Axes, points: Sequence[TracePoint], estimated: Sequence[TracePoint], result: ModelBacktest
) -> None:
    title = "rolling KPIs, reference and thresholds"
    if not points and not estimated:
        _empty(ax, title, "no labelled KPI evaluations (no outcomes, or reference not yet full)")
        return
    if estimated:
        # The label-free estimate (CBPE) is drawn on the prediction time of its window: it is
        # there before the labels are, and where they never come.
        ax.plot(
            _times(estimated),
            [p.value for p in estimated],
            color="#7b1fa2",
            lw=1.1,
            ls="-.",
            label="estimated accuracy (no labels)",
        )
        if not points:
            _levels(ax, estimated, "estimated")
    for name, series in _grouped(points, lambda p: p.name).items():
        times = _times(series)
        ax.plot(times, [p.value for p in series], lw=1.4, label=name)
        references = [np.nan if p.reference is None else p.reference for p in series]
        ax.step(
            times,
            references,
            where="post",
            color="#5a6475",
            lw=1,
            ls="--",
            label=f"{name} reference",
        )
        _levels(ax, series, name)
    for period in result.periods:
        ax.axvspan(
            _day(period.start_ms),
            _day(period.end_ms),
            color="#ffcc80",
            alpha=0.35,
            lw=0,
        )
    ax.set_title(
        title + ("  (shaded: labelled degradation periods)" if result.periods else ""), loc="left"
    )
    ax.legend(loc="lower left", fontsize=7, ncols=4)


def _coverage(ax: Axes, points: Sequence[TracePoint]) -> None:
    title = "label coverage (labelled / labelled + expired)"
    if not points:
        _empty(ax, title, "no outcomes")
        return
    # Recorded at KPI evaluations and as predictions expire: two streams, merged in time.
    ordered = sorted(points, key=lambda p: p.time_ms)
    ax.plot(_times(ordered), [p.value for p in ordered], color="#1565c0", lw=1.2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, loc="left")


def _drift(ax: Axes, points: Sequence[TracePoint], fired: set[Any], title: str) -> None:
    if not points:
        _empty(ax, title, "no drift evaluations (reference not yet full, or disabled)")
        return
    by_name = _grouped(points, lambda p: p.name)
    ranked = sorted(by_name, key=lambda n: -max(p.value for p in by_name[n]))
    chosen = [n for n in ranked if n in fired] + [n for n in ranked if n not in fired]
    chosen = chosen[: max(_TOP_FEATURES, len(fired))]
    for name in chosen:
        series = by_name[name]
        mark = " (alerted)" if name in fired else ""
        ax.plot(_times(series), [p.value for p in series], lw=1.2, label=f"{name}{mark}")
    level = by_name[chosen[0]]
    ax.step(
        _times(level),
        np.array([np.nan if p.warning is None else p.warning for p in level]),
        where="post",
        color="#000",
        lw=0.8,
        ls="--",
        label="fires above",
    )
    if max(p.value for n in chosen for p in by_name[n]) > 30:
        # A strong drift reaches -log10(p) in the hundreds; logarithmic above 10 keeps the
        # level it fires at (a few units) readable beside it.
        ax.set_yscale("symlog", linthresh=10)
        ax.yaxis.set_major_formatter(ScalarFormatter())
    shown = "" if len(by_name) <= len(chosen) else f" (top {len(chosen)} of {len(by_name)})"
    ax.set_title(title + shown, loc="left")
    ax.legend(loc="upper left", fontsize=7, ncols=3)


def _quality(ax: Axes, points: Sequence[TracePoint]) -> None:
    title = "data-quality rates"
    by_name = _grouped(points, lambda p: f"{p.metric} {p.name}")
    live = {n: s for n, s in by_name.items() if max(p.value for p in s) > 0}
    if not points:
        _empty(ax, title, "no quality evaluations (reference not yet full, or disabled)")
        return
    if not live:
        # Nothing but zeros: each rate's worst feature, flat at 0, says so on the plot.
        for metric, series in _grouped(points, lambda p: p.metric or "").items():
            worst: dict[int, float] = {}
            for point in series:
                worst[point.time_ms] = max(worst.get(point.time_ms, 0.0), point.value)
            ax.plot(
                _days(list(worst)),
                list(worst.values()),
                lw=1.2,
                label=f"{metric}, worst feature",
            )
        ax.set_title(title + " (every rate 0 throughout)", loc="left")
        ax.legend(loc="upper left", fontsize=7, ncols=4)
        return
    ranked = sorted(live, key=lambda n: -max(p.value for p in live[n]))[:_TOP_QUALITY]
    for name in ranked:
        series = live[name]
        ax.plot(_times(series), [p.value for p in series], lw=1.2, label=name)
    _levels(ax, live[ranked[0]], ranked[0].split()[0])
    shown = "" if len(live) <= len(ranked) else f" (top {len(ranked)} of {len(live)} non-zero)"
    ax.set_title(title + shown, loc="left")
    ax.legend(loc="upper left", fontsize=7, ncols=3)


def _marks(axes: Sequence[Axes], trace: ModelTrace) -> None:
    """Alerts as vertical lines on their panel (solid: firing, dashed green: resolved) and
    incidents as red bands on every panel."""
    for alert in trace.alerts:
        panel = _PANEL_OF_KIND.get(alert.get("kind", ""))
        if panel is None:
            continue
        at = _day(parse_time_ms(alert["detected_at"]))
        if alert["status"] == "firing":
            color = _SEVERITY_COLOR.get(alert.get("severity", ""), "#c62828")
            axes[panel].axvline(at, color=color, lw=1.1, alpha=0.9)
        else:
            axes[panel].axvline(at, color="#2e7d32", lw=1, ls="--", alpha=0.8)
    end = trace.last_time_ms
    for incident in trace.incidents:
        if incident.get("status") != "opened" or not incident.get("opened_at"):
            continue
        opened = parse_time_ms(incident["opened_at"])
        closed = _closed_at(trace.incidents, incident["incident_id"]) or end or opened
        for ax in axes:
            ax.axvspan(
                _day(opened),
                _day(closed),
                color="#ef9a9a",
                alpha=0.18,
                lw=0,
            )


def _closed_at(incidents: Iterable[dict[str, Any]], incident_id: str) -> int | None:
    for event in incidents:
        if event.get("incident_id") == incident_id and event.get("closed_at"):
            return parse_time_ms(event["closed_at"])
    return None


def _grouped(points: Iterable[TracePoint], key: Any) -> dict[str, list[TracePoint]]:
    grouped: dict[str, list[TracePoint]] = defaultdict(list)
    for point in points:
        grouped[key(point)].append(point)
    return dict(grouped)
