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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

__all__ = ["Recorder", "Series", "TracePoint", "recorder", "recording"]

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
