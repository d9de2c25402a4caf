"""``driftline report``: what driftline would have told you about a file of past traffic, and when.

The same pipeline as ``driftline replay`` runs over the records with a trace recorder installed
(:mod:`driftline.detectors.trace`), so the curves plotted are the values the decisions were
made from, not a re-computation. The output is one HTML file with every plot inlined as SVG
(:mod:`driftline.service.report_plots`): no script, no network, it opens anywhere and prints.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftline.detectors.trace import SeriesTrace, TracePoint, recording
from driftline.service.backtest import ModelBacktest, backtest
from driftline.service.config import Config
from driftline.service.pipeline import ProfileLoader
from driftline.service.replay import replay
from driftline.service.summary import (
    ModelSummary,
    ReplaySummary,
    summarize,
    with_inputs,
)

__all__ = ["ModelTrace", "Report", "build_report", "render_report"]


@dataclass
class ModelTrace:
    """Everything recorded about one model: its evaluations by series, and what it published."""

    model_id: str
    traces: dict[str, SeriesTrace] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def record(self, point: TracePoint) -> None:
        trace = self.traces.get(point.series)
        if trace is None:
            trace = self.traces[point.series] = SeriesTrace(point.series)
        trace.append(point)

    def series(self, name: str) -> list[TracePoint]:
        """The points of one series, in the order recorded (built on each call)."""
        trace = self.traces.get(name)
        return trace.points() if trace is not None else []

    @property
    def last_time_ms(self) -> int | None:
        """The latest event time of any point."""
        times = [t for trace in self.traces.values() if (t := trace.last_time_ms) is not None]
        return max(times, default=None)


@dataclass(frozen=True)
class Report:
    records: int
    dead_letters: int
    summary: ReplaySummary
    models: tuple[ModelTrace, ...]
    backtests: Mapping[str, ModelBacktest]
    source_name: str


def build_report(
    config: Config,
    path: Path,
    profile_loader: ProfileLoader | None = None,
    *,
    change_at_ms: int | None = None,
) -> Report:
    """Replay the records at ``path`` recording every evaluation; summarize and backtest each
    model. The file is read twice (replay, then the prediction counts of the summary), never
    held whole."""
    traces: dict[str, ModelTrace] = {}

    def trace_of(model_id: str) -> ModelTrace:
        trace = traces.get(model_id)
        if trace is None:
            trace = traces[model_id] = ModelTrace(model_id)
        return trace

    def record(point: TracePoint) -> None:
        trace_of(point.model_id).record(point)

    emitted: list[dict[str, Any]] = []
    # The alerts are kept from ``emitted``; the replay's own output is not needed.
    with recording(record), path.open("rb") as source, Path(os.devnull).open("wb") as sink:
        records, _, dead = replay(config, source, sink, profile_loader, emitted=emitted)
    for event in emitted:
        trace = trace_of(event["model_id"])
        (trace.incidents if event.get("kind") == "incident" else trace.alerts).append(event)
    with path.open("rb") as source:
        summary = with_inputs(summarize(emitted, change_at_ms=change_at_ms), source)
    backtests = {}
    for model_id, trace in traces.items():
        kpis = config.monitor_settings(model_id).kpis
        kpi_points = trace.series("kpi")
        metric = _primary_metric(kpi_points)
        points = [p for p in kpi_points if p.name == metric]
        backtests[model_id] = backtest(model_id, points, trace.alerts, kpis)
    ordered = tuple(traces[m] for m in sorted(traces))
    return Report(records, dead, summary, ordered, backtests, str(path))


def _primary_metric(points: Sequence[TracePoint]) -> str | None:
    """The KPI of the first threshold evaluated (accuracy or rmse by default)."""
    return points[0].name if points else None


def render_report(report: Report, max_plots: int = 50) -> str:
    """The report as one self-contained HTML page, with the figures of at most ``max_plots``
    models: those with the most incidents, then labelled degradation periods, then alerts (a
    figure is about 100 KB and a second to draw; every model is in the tables)."""
    # matplotlib is imported here: replay and the service do not need it.
    from driftline.service.report_plots import model_figure

    by_model = {m.model_id: m for m in report.summary.models}
    plotted = {trace.model_id for trace in _ranked(report, by_model)[:max_plots]}
    sections = [
        _model_section(
            trace,
            by_model.get(trace.model_id),
            report.backtests[trace.model_id],
            model_figure(trace, report.backtests[trace.model_id]),
        )
        for trace in report.models
        if trace.model_id in plotted
    ]
    if len(plotted) < len(report.models):
        sections.append(
            f"<p class=meta>{len(report.models) - len(plotted)} quieter models are in the tables "
            f"only: the figures are of the {len(plotted)} with the most incidents, degradation "
            "periods and alerts (<code>--plots</code> sets how many).</p>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _PAGE.format(
        title=html.escape(f"driftline report: {report.source_name}"),
        source=html.escape(report.source_name),
        records=report.records,
        dead=report.dead_letters,
        models=len(report.models),
        generated=generated,
        overview=_overview(report, by_model, plotted),
        policies=_policies(report),
        sections="\n".join(sections),
    )


def _ranked(report: Report, by_model: Mapping[str, ModelSummary]) -> list[ModelTrace]:
    def weight(trace: ModelTrace) -> tuple[int, int, int, str]:
        summary = by_model.get(trace.model_id)
        incidents = len(summary.incidents) if summary else 0
        periods = len(report.backtests[trace.model_id].periods)
        return (-incidents, -periods, -len(trace.alerts), trace.model_id)

    return sorted(report.models, key=weight)


def _link(anchor: str, plotted: bool) -> str:
    return f'<a href="#model-{anchor}">{anchor}</a>' if plotted else anchor


def _duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _overview(report: Report, by_model: Mapping[str, ModelSummary], plotted: set[str]) -> str:
    rows = []
    for trace in report.models:
        summary = by_model.get(trace.model_id)
        result = report.backtests[trace.model_id]
        configured = result.policies[0]
        incidents = summary.incidents if summary else ()
        detection = summary.detection if summary else None
        if detection is not None:
            detect = _duration(detection.delay_ms) if detection.delay_ms is not None else "missed"
            detect += " after --change-at"
        elif result.periods:
            detect = (
                f"{configured.periods_detected}/{len(result.periods)} periods, median "
                f"{_duration(configured.median_delay_ms)}"
            )
        else:
            detect = "no labelled degradation"
        first = min((i.opened_at for i in incidents if i.opened_at), default=None)
        anchor = html.escape(trace.model_id)
        rows.append(
            f"<tr><td>{_link(anchor, trace.model_id in plotted)}</td><td>{len(incidents)}</td>"
            f"<td>{html.escape(first or '—')}</td><td>{len(trace.alerts)}</td>"
            f"<td>{len(result.periods)}</td><td>{html.escape(detect)}</td></tr>"
        )
    return "\n".join(rows)


def _policies(report: Report) -> str:
    rows = []
    for trace in report.models:
        result = report.backtests[trace.model_id]
        if result.metric is None:
            rows.append(
                f"<tr><td>{html.escape(trace.model_id)}</td><td colspan=6>no labelled KPI "
                "evaluations: nothing to compare against</td></tr>"
            )
            continue
        for index, policy in enumerate(result.policies):
            model = (
                f"<td rowspan=3>{html.escape(trace.model_id)}<br><small>{result.metric}, "
                f"{len(result.windows)} windows</small></td>"
                if index == 0
                else ""
            )
            rows.append(
                f"<tr>{model}<td>{html.escape(policy.policy)}</td><td>{policy.alerts}</td>"
                f"<td>{policy.periods_detected}</td><td>{policy.periods_missed}</td>"
                f"<td>{policy.alerts_outside_periods}</td>"
                f"<td>{_duration(policy.median_delay_ms)}</td></tr>"
            )
    return "\n".join(rows)


def _model_section(
    trace: ModelTrace, summary: ModelSummary | None, result: ModelBacktest, figure: str
) -> str:
    anchor = html.escape(trace.model_id)
    incidents = summary.incidents if summary else ()
    items = (
        "".join(
            f"<li><b>{html.escape(i.incident_id[:12])}</b> {html.escape(i.severity or '')}: "
            f"opened {html.escape(i.opened_at or '?')}, "
            f"{'closed ' + html.escape(i.closed_at) if i.closed_at else 'still open'}"
            f"{' (' + html.escape(i.resolution) + ')' if i.resolution else ''}; "
            f"{html.escape(', '.join(i.kinds))}; first alert {html.escape(i.first_alert or '?')}"
            "</li>"
            for i in incidents
        )
        or "<li>no incident</li>"
    )
    periods = (
        "".join(
            f"<li>{_time(p.start_ms)} – {_time(p.end_ms)} ({p.windows} windows): "
            + (f"detected after {_duration(p.delay_ms)}" if p.delay_ms is not None else "missed")
            + "</li>"
            for p in result.periods
        )
        or "<li>none</li>"
    )
    return (
        f'<section id="model-{anchor}"><h2>{anchor}</h2>'
        f"<div class=cols><div><h3>Incidents</h3><ul>{items}</ul></div>"
        f"<div><h3>Labelled degradation periods</h3><ul>{periods}</ul></div></div>"
        f'<figure class="plot">{figure}</figure></section>'
    )


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1d2330; padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ margin-top: 36px; border-bottom: 1px solid
#d0d5de; }}
h3 {{ font-size: 15px; margin: 8px 0 4px; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
th, td {{ border: 1px solid #d0d5de; padding: 4px 10px; text-align: left; vertical-align: top; }}
th {{ background: #eef1f6; }}
.meta {{ color: #5a6475; }} .cols {{ display: flex; gap: 32px; flex-wrap: wrap; }}
.cols > div {{ flex: 1 1 420px; }} figure.plot {{ margin: 8px 0; }}
figure.plot svg {{ width: 100%; height: auto; }} small {{ color: #5a6475; }}
</style></head>
<body>
<h1>What driftline would have told you</h1>
<p class=meta>{source}: {records} records, {dead} dead letters, {models} models.
Generated {generated}. Times are event times (UTC).</p>
<h2>Models</h2>
<table><thead><tr><th>model</th><th>incidents</th><th>first incident opened</th>
<th>alert events</th><th>labelled degradation periods</th><th>time to detect</th></tr></thead>
<tbody>
{overview}
</tbody></table>
<h2>What the thresholds buy</h2>
<p>The labelled history, cut into non-overlapping KPI windows. A window is degraded when its KPI
is worse than the warning level of the configured threshold; consecutive degraded windows are one
degradation period. Detection delay runs from a period's start to the first alert firing in it.
Alerts outside every period are counted, not called false: data can drift without the KPI moving.
</p>
<table><thead><tr><th>model</th><th>policy</th><th>alerts fired</th><th>periods detected</th>
<th>periods missed</th><th>alerts outside periods</th><th>median delay</th></tr></thead>
<tbody>
{policies}
</tbody></table>
{sections}
</body></html>
"""
