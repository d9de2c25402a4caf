"""Alert state machines: turn a stream of values or detector signals into firing/resolved events.

Each severity is its own alert identity, as in Alertmanager: for one severity the emitted
statuses strictly alternate ``firing``, ``resolved``, ``firing``, ... starting with ``firing``.
A ``critical`` alert is therefore never "upgraded" from a ``warning`` one; both fire, and each
resolves on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["AlertRule", "AlertState", "Severity", "SignalAlertState", "Transition"]

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

    ``threshold`` is the level that was crossed: the severity's level when firing, the resolve
    level (the level moved back by the hysteresis) when resolving.
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
    """Levels and timing of a threshold alert on one value (a KPI, a rate, a drift score).

    Parameters
    ----------
    direction
        ``"below"``: the value breaches a level when it is lower (accuracy, coverage);
        ``"above"``: when it is higher (null rate, drift score).
    warning
        Level of the ``warning`` severity, or None for no warning.
    critical
        Level of the ``critical`` severity, or None for no critical. It must be more severe than
        ``warning``: lower for ``"below"``, higher for ``"above"``.
    hysteresis
        A firing severity resolves only once the value is back past its level by this much:
        ``value >= level + hysteresis`` for ``"below"``, ``value <= level - hysteresis`` for
        ``"above"``. Zero resolves as soon as the value no longer breaches.
    min_samples
        Updates computed from fewer samples are ignored entirely: they neither fire, resolve, nor
        count towards ``for_updates`` or ``cooldown``.
    for_updates
        Number of consecutive breaching updates before a severity fires (Prometheus ``for:``).
    cooldown
        Number of updates after a severity resolved during which it may not fire again. A
        severity's cooldown does not hold back the other severity, so a value that drops straight
        to ``critical`` while ``warning`` cools down fires ``critical`` alone.

    Examples
    --------
    >>> rule = AlertRule("below", warning=0.9, critical=0.8, hysteresis=0.02)
    >>> state = AlertState(rule)
    >>> for value in (0.95, 0.85, 0.75, 0.81, 0.91, 0.93):
    ...     for t in state.update(value, n_samples=1000):
    ...         print(value, t.status, t.severity, f"{t.threshold:g}")
    0.85 firing warning 0.9
    0.75 firing critical 0.8
    0.91 resolved critical 0.82
    0.93 resolved warning 0.92

    """

    direction: Literal["below", "above"]
    warning: float | None = None
    critical: float | None = None
    hysteresis: float = 0.0
    min_samples: int = 0
    for_updates: int = 1
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
        if not (math.isfinite(self.hysteresis) and self.hysteresis >= 0):
            raise ValueError(f"hysteresis: must be finite and >= 0, got {self.hysteresis!r}")
        _check_count("min_samples", self.min_samples, 0)
        _check_count("for_updates", self.for_updates, 1)
        _check_count("cooldown", self.cooldown, 0)

    def level(self, severity: Severity) -> float | None:
        """The level of a severity, or None when the rule does not define it."""
        return self.warning if severity == "warning" else self.critical

    def breaches(self, value: float, level: float) -> bool:
        """Whether ``value`` is past ``level`` in the rule's direction."""
        return value < level if self.direction == "below" else value > level

    def resolve_level(self, level: float) -> float:
        """The level a firing severity must get back to before it resolves."""
        return level + self.hysteresis if self.direction == "below" else level - self.hysteresis

    def clears(self, value: float, level: float) -> bool:
        """Whether ``value`` is back past the resolve level of ``level``."""
        back = self.resolve_level(level)
        return value >= back if self.direction == "below" else value <= back


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

    def __init__(self, rule: AlertRule) -> None:
        if not isinstance(rule, AlertRule):
            raise ValueError(f"rule: expected an AlertRule, got {type(rule).__name__}")
        self._rule = rule
        self._levels: tuple[tuple[Severity, float], ...] = tuple(
            (s, level) for s in SEVERITIES if (level := rule.level(s)) is not None
        )
        self._firing: set[Severity] = set()
        self._streak: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
        self._cooldown_left: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)

    @property
    def rule(self) -> AlertRule:
        """The rule this state evaluates."""
        return self._rule

    @property
    def firing(self) -> frozenset[Severity]:
        """The severities currently firing."""
        return frozenset(self._firing)

    def update(self, value: float | None, n_samples: int) -> list[Transition]:
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

        """
        rule = self._rule
        if value is None or math.isnan(value) or n_samples < rule.min_samples:
            return []
        out: list[Transition] = []
        for severity, level in self._levels:
            breach = rule.breaches(value, level)
            self._streak[severity] = self._streak[severity] + 1 if breach else 0
            blocked = self._cooldown_left[severity] > 0
            if blocked:
                self._cooldown_left[severity] -= 1
            if severity in self._firing:
                if rule.clears(value, level):
                    self._firing.discard(severity)
                    self._cooldown_left[severity] = rule.cooldown
                    out.append(Transition("resolved", severity, value, rule.resolve_level(level)))
            elif not blocked and self._streak[severity] >= rule.for_updates:
                self._firing.add(severity)
                out.append(Transition("firing", severity, value, level))
        out.sort(key=lambda t: _ORDER[t.status, t.severity])
        return out

    def __repr__(self) -> str:
        return f"AlertState(rule={self._rule!r}, firing={sorted(self._firing)})"


class SignalAlertState:
    """The alert state of a detector that emits signals (events) rather than a level.

    A severity fires at its first signal while not firing, and resolves after ``quiet_updates``
    consecutive updates without a signal of that severity. Updates are counted one per element
    of the stream (one labelled event for a concept-drift detector); a batch of ``n`` updates is
    evaluated at once, in time proportional to the number of signals, not to ``n``.

    Transitions carry no level: a firing has ``value = threshold = 1.0`` (one signal), a resolve
    has ``value = threshold = quiet_updates`` (that many quiet updates). Put the detector's own
    evidence into the alert.

    Parameters
    ----------
    quiet_updates
        Updates without a signal after which a firing severity resolves (>= 1).
    cooldown
        Updates after a resolve during which the same severity may not fire again.

    Examples
    --------
    >>> state = SignalAlertState(quiet_updates=100)
    >>> for i, t in state.update([(10, "critical"), (50, "critical")], n=300):
    ...     print(i, t.status, t.severity)
    10 firing critical
    150 resolved critical

    """

    def __init__(self, quiet_updates: int, cooldown: int = 0) -> None:
        _check_count("quiet_updates", quiet_updates, 1)
        _check_count("cooldown", cooldown, 0)
        self.quiet_updates = quiet_updates
        self.cooldown = cooldown
        self._n_seen = 0
        self._firing: set[Severity] = set()
        # Absolute update index of the last signal of each firing severity.
        self._last_signal: dict[Severity, int] = {}
        # First absolute update index at which a severity may fire again.
        self._may_fire_from: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)

    @property
    def firing(self) -> frozenset[Severity]:
        """The severities currently firing."""
        return frozenset(self._firing)

    @property
    def n_seen(self) -> int:
        """Updates seen so far."""
        return self._n_seen

    def update(
        self, signals: Sequence[tuple[int, Severity]], n: int
    ) -> list[tuple[int, Transition]]:
        """Advance by a batch of ``n`` updates carrying ``signals``.

        Parameters
        ----------
        signals
            ``(index within the batch, severity)`` pairs, in any order; duplicates are allowed.
        n
            Number of updates in the batch.

        Returns
        -------
        list
            ``(index within the batch, transition)`` pairs, ordered by index, then resolves before
            firings as in :meth:`AlertState.update`.

        """
        _check_count("n", n, 0)
        by_severity: dict[Severity, set[int]] = {s: set() for s in SEVERITIES}
        for index, severity in signals:
            if severity not in by_severity:
                raise ValueError(f"signals: unknown severity {severity!r}")
            if not 0 <= index < n:
                raise ValueError(f"signals: index {index} outside the batch of n={n}")
            by_severity[severity].add(int(index))
        start = self._n_seen
        out: list[tuple[int, Transition]] = []
        for severity, indices in by_severity.items():
            for index in sorted(indices):
                at = start + index
                self._resolve_if_quiet(severity, before=at, out=out, start=start)
                if severity in self._firing:
                    self._last_signal[severity] = at
                elif at >= self._may_fire_from[severity]:
                    self._firing.add(severity)
                    self._last_signal[severity] = at
                    out.append((index, Transition("firing", severity, 1.0, 1.0)))
            self._resolve_if_quiet(severity, before=start + n, out=out, start=start)
        self._n_seen = start + n
        out.sort(key=lambda it: (it[0], _ORDER[it[1].status, it[1].severity]))
        return out

    def _resolve_if_quiet(
        self, severity: Severity, before: int, out: list[tuple[int, Transition]], start: int
    ) -> None:
        """Resolve ``severity`` if its quiet period ends at an update index below ``before``."""
        if severity not in self._firing:
            return
        resolve_at = self._last_signal[severity] + self.quiet_updates
        if resolve_at < before:
            self._firing.discard(severity)
            del self._last_signal[severity]
            self._may_fire_from[severity] = resolve_at + self.cooldown + 1
            q = float(self.quiet_updates)
            out.append((resolve_at - start, Transition("resolved", severity, q, q)))

    def __repr__(self) -> str:
        return (
            f"SignalAlertState(quiet_updates={self.quiet_updates}, cooldown={self.cooldown}, "
            f"firing={sorted(self._firing)})"
        )
