"""``AlertBook``: the alerts of one generation, whatever signal raised them.

Every signal (data and prediction drift, data quality, concept drift, KPI thresholds) turns its
measurements into transitions of alert identities — (kind, detector, feature or metric) — and
the book keeps what those identities need between measurements: the state machine of each one
that is breaching, firing or cooling down, and every alert now firing, which a superseding
model version closes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from driftline.detectors.alerting import AlertRule, AlertState, Transition
from driftline.detectors.alerts import AlertKind, make_alert, subject_of
from driftline.detectors.events import Source

__all__ = ["AlertBook", "Identity"]

Identity = tuple[str, str, str]
"""(kind, detector, feature or metric)."""
Resolution = Literal["recovered", "superseded"]


class AlertBook:
    """Alert states and firing alerts of one model version.

    Parameters
    ----------
    model_id
        The model the alerts are about.

    Examples
    --------
    >>> from driftline.detectors.alerting import AlertRule
    >>> from driftline.detectors.events import Source
    >>> book = AlertBook("m")
    >>> rule = AlertRule("above", warning=0.1)
    >>> identity = ("data_quality", "null_rate", "x")
    >>> book.transitions(identity, rule, 0.05, 500), identity in book
    ([], False)
    >>> (t,) = book.transitions(identity, rule, 0.3, 500)
    >>> alert = book.alert(
    ...     "data_quality", t, model_version="v1", detector="null_rate", feature="x",
    ...     value=0.3, threshold=0.1, window=(500, None, 9), reference={}, evidence={},
    ...     trigger_ms=9, source=Source("predictions", 0, 9),
    ... )
    >>> sorted(book.firing)
    [('data_quality', 'null_rate', 'x', 'warning')]
    >>> [a["resolution"] for a in book.supersede(10, Source("predictions", 0, 10), "v2", "v1")]
    ['superseded']
    """

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._states: dict[Identity, AlertState] = {}
        # Every firing alert by (kind, detector, feature or metric, severity).
        self._open: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    @property
    def firing(self) -> frozenset[tuple[str, str, str, str]]:
        """(kind, detector, feature or metric, severity) of every alert now firing."""
        return frozenset(self._open)

    def __contains__(self, identity: object) -> bool:
        """Whether the identity has a state (it is breaching, firing or cooling down)."""
        return identity in self._states

    def transitions(
        self, identity: Identity, rule: AlertRule, value: float, n_samples: int, se: float = 0.0
    ) -> list[Transition]:
        """Update the alert state of one identity with a new value; its transitions.

        A state exists only while it counts towards something (a breach, a firing, a cooldown):
        an idle state is the same as none, so thousands of models x features x measures cost
        memory only where something is happening.
        """
        state = self._states.get(identity)
        # A rule's levels can move (a new feature tightens the Bonferroni level); a state that is
        # firing keeps its rule so that it resolves against the level it fired at.
        if state is None or (state.rule is not rule and not state.firing and state.rule != rule):
            if not AlertState.would_start(rule, value, n_samples, se):
                self._states.pop(identity, None)
                return []
            state = self._states[identity] = AlertState(rule)
        transitions = state.update(value, n_samples, se)
        if state.idle:
            del self._states[identity]
        return transitions

    def firing_rule(self, identity: Identity) -> AlertRule | None:
        """The rule of the identity's state when it is firing."""
        state = self._states.get(identity)
        return state.rule if state is not None and state.firing else None

    def alert(
        self,
        kind: AlertKind,
        transition: Transition,
        *,
        model_version: str | None,
        detector: str,
        feature: str | None = None,
        metric: str | None = None,
        value: float | None,
        threshold: float | None,
        window: tuple[int, int | None, int | None],
        reference: dict[str, Any],
        evidence: dict[str, Any],
        trigger_ms: int,
        source: Source,
        resolution: Resolution = "recovered",
        segment: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The alert event of a transition; the book records what now fires."""
        subject = subject_of(feature, metric, segment)
        key = (kind, detector, subject, transition.severity)
        alert = make_alert(
            model_id=self.model_id,
            model_version=model_version,
            kind=kind,
            status=transition.status,
            severity=transition.severity,
            detector=detector,
            feature=feature,
            metric=metric,
            value=value,
            threshold=threshold,
            window_size=window[0],
            first_ms=window[1],
            last_ms=window[2],
            reference=reference,
            evidence=evidence,
            detected_ms=trigger_ms,
            source=source,
            resolution=resolution if transition.status == "resolved" else None,
            segment=segment,
        )
        if transition.status == "firing":
            self._open[key] = alert
        else:
            self._open.pop(key, None)
        return alert

    def supersede(
        self, trigger_ms: int, source: Source, successor: str | None, model_version: str | None
    ) -> list[dict[str, Any]]:
        """Resolve every firing alert as superseded by ``successor``; every state closes."""
        for state in self._states.values():
            state.close()
        alerts: list[dict[str, Any]] = []
        for key in sorted(self._open, key=lambda k: (k[0], k[1], k[2], k[3] != "critical")):
            fired = self._open[key]
            alerts.append(
                self.alert(
                    fired["kind"],
                    Transition("resolved", fired["severity"], math.nan, math.nan),
                    model_version=model_version,
                    detector=fired["detector"],
                    feature=fired.get("feature"),
                    metric=fired.get("metric"),
                    value=None,
                    threshold=fired["threshold"],
                    window=(0, None, None),
                    reference=fired["reference"],
                    evidence={"superseded_by": successor, "fired_at": fired["detected_at"]},
                    trigger_ms=trigger_ms,
                    source=source,
                    resolution="superseded",
                    segment=fired.get("segment"),
                )
            )
        return alerts
