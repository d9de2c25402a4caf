"""The curves behind the decisions: every evaluation a signal makes, for a reader that wants them.

The service decides from evaluations and keeps none of them. ``driftline report`` plots them: a
KPI against its reference and thresholds, a feature's drift level against the level it fires at,
a quality rate against its limits. A signal hands each evaluation to :func:`recorder` when one is
installed (:func:`recording`); without one it pays one context-variable read per evaluation, not
per event, and model state holds nothing of it.

Examples
--------
>>> points = []
>>> with recording(points.append):
...     record = recorder()
...     record(TracePoint("m", None, 1_000, "kpi", "accuracy", 0.91, reference=0.93))
>>> recorder() is None
True
>>> points[0].name, points[0].value
('accuracy', 0.91)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

__all__ = ["Recorder", "Series", "SeriesTrace", "TracePoint", "recorder", "recording"]

Series = Literal[
    "kpi", "label_coverage", "data_drift", "prediction_drift", "data_quality", "estimated"
]


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One measured value of one evaluation.

    ``value`` is in the units the alert rule compares: a KPI or a rate as is, a drift test as
    ``-log10(p)`` (``warning`` is then the level it fires at). ``warning`` and ``critical`` are
    the absolute levels of the rule at that evaluation (None where it has none), ``reference``
    the value the thresholds are relative to, if any.
    """

    model_id: str
    model_version: str | None
    time_ms: int
    series: Series
    name: str
    value: float
    warning: float | None = None
    critical: float | None = None
    reference: float | None = None
    # The quality metric of a ``data_quality`` point (its ``name`` is the feature).
    metric: str | None = None


Recorder = Callable[[TracePoint], None]

_RECORDER: ContextVar[Recorder | None] = ContextVar("driftline_trace_recorder", default=None)


def recorder() -> Recorder | None:
    """The installed recorder, or None (the service's case)."""
    return _RECORDER.get()


@contextmanager
def recording(record: Recorder) -> Iterator[None]:
    """Hand every evaluation made inside the block to ``record``."""
    token = _RECORDER.set(record)
    try:
        yield
    finally:
        _RECORDER.reset(token)


_WARNING, _CRITICAL, _REFERENCE = 1, 2, 4  # which optional levels a point has


class SeriesTrace:
    """The points of one series of one model, kept column by column.

    ``driftline report`` holds every evaluation of a replay, millions for a large file: as
    columns a point costs about 70 bytes, as a :class:`TracePoint` with its own floats and int
    about 280. ``points()`` gives them back as they were recorded.

    Examples
    --------
    >>> trace = SeriesTrace("kpi")
    >>> trace.append(TracePoint("m", "v1", 1_000, "kpi", "accuracy", 0.9, warning=0.85))
    >>> trace.points() == [TracePoint("m", "v1", 1_000, "kpi", "accuracy", 0.9, warning=0.85)]
    True
    """

    __slots__ = (
        "_criticals",
        "_levels",
        "_metrics",
        "_model_id",
        "_names",
        "_references",
        "_series",
        "_strings",
        "_times",
        "_values",
        "_versions",
        "_warnings",
    )

    def __init__(self, series: Series) -> None:
        self._series = series
        self._model_id = ""
        self._versions: list[str | None] = []
        self._times = array("q")
        self._names: list[str] = []
        self._values = array("d")
        self._warnings = array("d")
        self._criticals = array("d")
        self._references = array("d")
        self._levels = bytearray()
        self._metrics: list[str | None] = []
        # One object per distinct name, version and metric, however many points repeat it.
        self._strings: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._times)

    def append(self, point: TracePoint) -> None:
        strings = self._strings
        self._model_id = point.model_id
        version, metric = point.model_version, point.metric
        self._versions.append(None if version is None else strings.setdefault(version, version))
        self._times.append(point.time_ms)
        self._names.append(strings.setdefault(point.name, point.name))
        self._values.append(point.value)
        levels = 0
        for flag, level, column in (
            (_WARNING, point.warning, self._warnings),
            (_CRITICAL, point.critical, self._criticals),
            (_REFERENCE, point.reference, self._references),
        ):
            if level is not None:
                levels |= flag
            column.append(math.nan if level is None else level)
        self._levels.append(levels)
        self._metrics.append(None if metric is None else strings.setdefault(metric, metric))

    def points(self) -> list[TracePoint]:
        """Every point, in the order recorded."""
        return [
            TracePoint(
                self._model_id,
                version,
                time_ms,
                self._series,
                name,
                value,
                warning if levels & _WARNING else None,
                critical if levels & _CRITICAL else None,
                reference if levels & _REFERENCE else None,
                metric,
            )
            for version, time_ms, name, value, warning, critical, reference, levels, metric in zip(
                self._versions,
                self._times,
                self._names,
                self._values,
                self._warnings,
                self._criticals,
                self._references,
                self._levels,
                self._metrics,
                strict=True,
            )
        ]

    @property
    def last_time_ms(self) -> int | None:
        """The latest event time of a point, or None without points."""
        return max(self._times) if self._times else None
