"""Alert state machines: turn a stream of values or detector signals into firing/resolved events.

Each severity is its own alert identity, as in Alertmanager: for one severity the emitted
statuses strictly alternate ``firing``, ``resolved``, ``firing``, ... starting with ``firing``.
A ``critical`` alert is therefore never "upgraded" from a ``warning`` one; both fire, and each
resolves on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = ["AlertRule", "AlertState", "Severity", "Transition"]

Severity = Literal["warning", "critical"]
Status = Literal["firing", "resolved"]

SEVERITIES: tuple[Severity, ...] = ("warning", "critical")

# Within one update: de-escalate before escalating, the most severe resolve first and fire last.
_ORDER: dict[tuple[Status, Severity], int] = {
    ("resolved", "critical"): 0,
    ("resolved", "warning"): 1,
    ("firing", "warning"): 2,
    ("firing", "critical"): 3,
}


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an alert's status.

    ``threshold`` is the severity's level: the one breached when firing, the one the value is
    back past when resolving.
    """

    status: Status
    severity: Severity
    value: float
    threshold: float


def _check_level(name: str, level: float | None) -> None:
    if level is not None and not math.isfinite(level):
        raise ValueError(f"{name}: must be a finite number or None, got {level!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Levels and timing of a threshold alert on an estimate (a KPI, a rate) and its error.

    A severity fires when its level is breached *beyond the estimate's sampling error*: the
    confidence bound nearest to the level, ``value + z·se`` for ``"below"`` (``value - z·se`` for
    ``"above"``), lies past the level. It resolves when the opposite bound is back past the
    level: ``value - z·se >= level`` for ``"below"`` (``value + z·se <= level`` for ``"above"``).
    The gap between the two conditions is ``2·z·se``, so a KPI that hovers at its level, moved
    only by sampling noise, neither fires nor resolves on noise; with ``z = 0`` (or ``se = 0``)
    the rule compares the point value and resolves as soon as it no longer breaches.

    Parameters
    ----------
    direction
        ``"below"``: the value breaches a level when it is lower (accuracy, coverage);
        ``"above"``: when it is higher (null rate, error).
    warning
        Level of the ``warning`` severity, or None for no warning.
    critical
        Level of the ``critical`` severity, or None for no critical. It must be more severe than
        ``warning``: lower for ``"below"``, higher for ``"above"``.
    z
        Width of the one-sided confidence bound, in standard errors (2.326 for 99 %).
    min_samples
        Updates computed from fewer samples are ignored entirely: they neither fire, resolve, nor
        count towards ``for_updates``, ``resolve_updates`` or ``cooldown``.
    for_updates
        Number of consecutive breaching updates before a severity fires (Prometheus ``for:``).
    resolve_updates
        Number of consecutive clearing updates before a firing severity resolves.
    cooldown
        Number of updates after a severity resolved during which it may not fire again. A
        severity's cooldown does not hold back the other severity.

    Examples
    --------
    An accuracy of 0.84 measured with a standard error of 0.012 is not established below 0.85;
    0.80 is. Recovery needs 0.88 - 2.326 × 0.012 >= 0.85 twice in a row.

    >>> rule = AlertRule("below", warning=0.85, z=2.326, resolve_updates=2)
    >>> state = AlertState(rule)
    >>> for value in (0.84, 0.80, 0.86, 0.88, 0.88):
    ...     for t in state.update(value, n_samples=1000, se=0.012):
    ...         print(value, t.status, t.severity, f"{t.threshold:g}")
    0.8 firing warning 0.85
    0.88 resolved warning 0.85

    """

    direction: Literal["below", "above"]
    warning: float | None = None
    critical: float | None = None
    z: float = 0.0
    min_samples: int = 0
    for_updates: int = 1
    resolve_updates: int = 1
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction: must be 'below' or 'above', got {self.direction!r}")
        if self.warning is None and self.critical is None:
            raise ValueError("warning, critical: at least one level must be set")
        _check_level("warning", self.warning)
        _check_level("critical", self.critical)
        if self.warning is not None and self.critical is not None:
            if self.direction == "below" and not self.critical < self.warning:
                raise ValueError(
                    f"critical: must be below warning for direction 'below', "
                    f"got critical={self.critical} and warning={self.warning}"
                )
            if self.direction == "above" and not self.critical > self.warning:
                raise ValueError(
                    f"critical: must be above warning for direction 'above', "
                    f"got critical={self.critical} and warning={self.warning}"
                )
        if not (math.isfinite(self.z) and self.z >= 0):
            raise ValueError(f"z: must be finite and >= 0, got {self.z!r}")
        _check_count("min_samples", self.min_samples, 0)
        _check_count("for_updates", self.for_updates, 1)
        _check_count("resolve_updates", self.resolve_updates, 1)
        _check_count("cooldown", self.cooldown, 0)

    def level(self, severity: Severity) -> float | None:
        """The level of a severity, or None when the rule does not define it."""
        return self.warning if severity == "warning" else self.critical

    def breaches(self, value: float, level: float, se: float = 0.0) -> bool:
        """Whether ``value`` is past ``level`` beyond its sampling error."""
        margin = self.z * se if self.z else 0.0
        return value + margin < level if self.direction == "below" else value - margin > level

    def clears(self, value: float, level: float, se: float = 0.0) -> bool:
        """Whether ``value`` is back past ``level`` beyond its sampling error."""
        margin = self.z * se if self.z else 0.0
        return value - margin >= level if self.direction == "below" else value + margin <= level


class AlertState:
    """The alert state of one value under an :class:`AlertRule`, one identity per severity.

    Parameters
    ----------
    rule
        Levels and timing.

    Examples
    --------
    Persistence: three breaching updates in a row before firing.

    >>> state = AlertState(AlertRule("above", critical=0.05, for_updates=3))
    >>> [len(state.update(v, n_samples=500)) for v in (0.06, 0.07, 0.01, 0.06, 0.08, 0.09)]
    [0, 0, 0, 0, 0, 1]
    >>> sorted(state.firing)
    ['critical']

    """

    # A model holds one state per feature and measure: kept small (slots, per-severity lists
    # indexed like SEVERITIES) because there are thousands of models.
    __slots__ = ("_clear_streak", "_cooldown_left", "_firing", "_levels", "_rule", "_streak")

    def __init__(self, rule: AlertRule) -> None:
        if not isinstance(rule, AlertRule):
            raise ValueError(f"rule: expected an AlertRule, got {type(rule).__name__}")
        self._rule = rule
        self._levels = _levels_of(rule)
        self._firing = [False, False]
        self._streak = [0, 0]
        self._clear_streak = [0, 0]
        self._cooldown_left = [0, 0]

    @property
    def rule(self) -> AlertRule:
        """The rule this state evaluates."""
        return self._rule

    @property
    def idle(self) -> bool:
        """Nothing is firing, breaching or cooling down: the state of a fresh ``AlertState``."""
        return not (any(self._firing) or any(self._streak) or any(self._cooldown_left))

    @staticmethod
    def would_start(rule: AlertRule, value: float | None, n_samples: int, se: float = 0.0) -> bool:
        """Whether ``update`` would change a fresh state of ``rule``: only a breach does."""
        if (
            value is None
            or math.isnan(value)
            or se is None
            or math.isnan(se)
            or n_samples < rule.min_samples
        ):
            return False
        return any(rule.breaches(value, level, se) for _, _, level in _levels_of(rule))

    @property
    def firing(self) -> frozenset[Severity]:
        """The severities currently firing."""
        return frozenset(s for s, on in zip(SEVERITIES, self._firing, strict=True) if on)

    def update(self, value: float | None, n_samples: int, se: float = 0.0) -> list[Transition]:
        """Evaluate one new value; return the transitions it causes, in emission order.

        Resolves come before firings and the most severe resolves first; a value that crosses
        both levels fires ``warning`` then ``critical``.

        Parameters
        ----------
        value
            The new value. NaN and None (a KPI that is undefined, as ``metrics()`` reports it)
            are ignored, like an update with too few samples.
        n_samples
            How many samples the value was computed from, compared with ``rule.min_samples``.
        se
            The value's standard error (NaN or None: the update is ignored).

        """
        if se is not None and se < 0:
            raise ValueError(f"se: must be >= 0, got {se!r}")
        rule = self._rule
        if (
            value is None
            or math.isnan(value)
            or se is None
            or math.isnan(se)
            or n_samples < rule.min_samples
        ):
            return []
        out: list[Transition] = []
        firing, streak, clear_streak, cooldown_left = (
            self._firing,
            self._streak,
            self._clear_streak,
            self._cooldown_left,
        )
        for i, severity, level in self._levels:
            breach = rule.breaches(value, level, se)
            streak[i] = streak[i] + 1 if breach else 0
            blocked = cooldown_left[i] > 0
            if blocked:
                cooldown_left[i] -= 1
            if firing[i]:
                clear = rule.clears(value, level, se)
                clear_streak[i] = clear_streak[i] + 1 if clear else 0
                if clear_streak[i] >= rule.resolve_updates:
                    firing[i] = False
                    cooldown_left[i] = rule.cooldown
                    out.append(Transition("resolved", severity, value, level))
            elif not blocked and streak[i] >= rule.for_updates:
                firing[i] = True
                clear_streak[i] = 0
                out.append(Transition("firing", severity, value, level))
        if len(out) > 1:
            out.sort(key=lambda t: _ORDER[t.status, t.severity])
        return out

    def close(self) -> list[Transition]:
        """Resolve every firing severity at once (the model version it judged was superseded)."""
        out = [
            Transition("resolved", s, math.nan, level)
            for i, s, level in self._levels
            if self._firing[i]
        ]
        self._firing = [False, False]
        self._streak = [0, 0]
        self._clear_streak = [0, 0]
        out.sort(key=lambda t: _ORDER[t.status, t.severity])
        return out

    def __repr__(self) -> str:
        return f"AlertState(rule={self._rule!r}, firing={sorted(self.firing)})"


@lru_cache(maxsize=4096)
def _levels_of(rule: AlertRule) -> tuple[tuple[int, Severity, float], ...]:
    """(index, severity, level) of each level a rule sets; shared by the states of one rule."""
    return tuple(
        (i, s, level) for i, s in enumerate(SEVERITIES) if (level := rule.level(s)) is not None
    )
