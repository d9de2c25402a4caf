"""What every signal of a generation shares: the protocol, the shared and the per-batch context.

A signal turns one kind of measurement into alert events. Prediction-side signals observe a
:class:`FeatureBatch` (a ``PredictionBatch`` with its features columnarized once for all of
them), label-side signals a ``LabeledBatch``. All of them book their alerts in the one
:class:`~detectors.book.AlertBook` of their generation, through a :class:`SignalContext`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from driftline.detectors.alerting import AlertRule, Transition
from driftline.detectors.alerts import AlertKind
from driftline.detectors.batch import PredictionBatch
from driftline.detectors.book import AlertBook
from driftline.detectors.columns import FeatureColumns, FeatureKind
from driftline.detectors.settings import DriftSettings, MonitorSettings, QualityLevels
from driftline.detectors.trace import Series, TracePoint

__all__ = [
    "FLOAT_OR_NONE",
    "FeatureBatch",
    "Signal",
    "SignalContext",
    "Task",
    "numbers",
    "positive_scores",
    "rounded",
    "z_quantile",
]

Task = Literal["classification", "regression"]
# Exact types a score list may hold to go straight into a float array (None becomes NaN).
FLOAT_OR_NONE = frozenset({float, type(None)})

_B_contra = TypeVar("_B_contra", contravariant=True)


class Signal(Protocol[_B_contra]):
    """One signal of a generation: what it observes becomes alert events."""

    def observe(self, batch: _B_contra) -> list[dict[str, Any]]:
        """The alert events (transitions of its alerts) that ``batch`` raised, in order."""
        ...


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """A batch of predictions as every prediction-side signal reads it.

    Parameters
    ----------
    predictions
        The batch.
    columns
        Its feature rows, columnarized once for all signals.
    kinds
        The kind of every feature the generation knows.
    """

    predictions: PredictionBatch
    columns: FeatureColumns
    kinds: Mapping[str, FeatureKind]


class SignalContext:
    """What the signals of one generation share: its alert book, its rules and its version.

    Parameters
    ----------
    model_id
        The model the alerts are about.
    settings
        Its effective settings.
    model_version
        The version the alerts are stamped with (the generation changes it).
    """

    def __init__(
        self, model_id: str, settings: MonitorSettings, model_version: str | None = None
    ) -> None:
        self.model_id = model_id
        self.settings = settings
        self.model_version = model_version
        self.book = AlertBook(model_id)
        self._rules: dict[tuple[Any, ...], AlertRule] = {}

    def rule(
        self,
        key: tuple[Any, ...],
        *,
        settings: DriftSettings | None = None,
        level: float = 0.0,
        levels: QualityLevels | None = None,
        base: float = 0.0,
    ) -> AlertRule:
        """The alert rule of a drift level or a quality rate, built once and then shared."""
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        if settings is not None:  # drift: fires on -log10(p) above the corrected level
            rule = AlertRule(
                direction="above",
                warning=level,
                for_updates=settings.for_evaluations,
                resolve_updates=settings.resolve_evaluations,
            )
        else:
            assert levels is not None
            q = self.settings.data_quality
            rule = AlertRule(
                direction="above",
                warning=None if levels.warning is None else base + levels.warning,
                critical=None if levels.critical is None else base + levels.critical,
                z=z_quantile(q.confidence),
                min_samples=q.min_samples,
                resolve_updates=q.resolve_evaluations,
            )
        self._rules[key] = rule
        return rule

    def alert(self, kind: AlertKind, transition: Transition, **fields: Any) -> dict[str, Any]:
        """The alert event of ``transition``, stamped with the current model version."""
        return self.book.alert(kind, transition, model_version=self.model_version, **fields)

    def point(
        self,
        time_ms: int,
        series: Series,
        name: str,
        value: float,
        *,
        warning: float | None = None,
        critical: float | None = None,
        reference: float | None = None,
        metric: str | None = None,
    ) -> TracePoint:
        """An evaluation for the trace recorder, stamped with the model and current version."""
        return TracePoint(
            self.model_id,
            self.model_version,
            time_ms,
            series,
            name,
            value,
            warning=warning,
            critical=critical,
            reference=reference,
            metric=metric,
        )


@lru_cache(maxsize=64)
def z_quantile(confidence: float) -> float:
    """The one-sided normal quantile of a confidence level."""
    return NormalDist().inv_cdf(confidence)


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Finite floats rounded to 6 places, other floats as None, anything else unchanged."""
    return {
        k: (
            round(v, 6)
            if isinstance(v, float) and math.isfinite(v)
            else (None if isinstance(v, float) else v)
        )
        for k, v in values.items()
    }


def positive_scores(scores: Sequence[object], positive: object) -> np.ndarray:
    """Each event's probability of the positive class: a numeric score as it is, an object of
    class probabilities by the positive class's key, NaN without either."""
    if FLOAT_OR_NONE.issuperset(map(type, scores)):
        return np.array(scores, dtype=np.float64)  # None becomes NaN
    key = str(positive)
    out = np.full(len(scores), np.nan)
    for i, score in enumerate(scores):
        if isinstance(score, float):
            out[i] = score
        elif isinstance(score, dict):
            value = score.get(key)
            if value is not None:
                out[i] = value
    return out


def numbers(values: Sequence[object]) -> np.ndarray:
    """``values`` as floats: numbers (bools too) as they are, anything else as NaN."""
    if _PLAIN_NUMBERS.issuperset(map(type, values)):
        try:
            return np.array(values, dtype=np.float64)  # float(v) of each, in one C loop
        except OverflowError:
            pass
    return np.fromiter((_number(v) for v in values), np.float64, len(values))


_PLAIN_NUMBERS = frozenset({float, int, bool})


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan
