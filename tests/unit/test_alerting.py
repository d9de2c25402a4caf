"""Alert state machines: alternation, persistence, hysteresis, cooldown, minimum samples."""

from __future__ import annotations

import itertools
import math
import pickle
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.alerting import (
    AlertRule,
    AlertState,
    Severity,
    SignalAlertState,
    Transition,
)

SEVERITIES: tuple[Severity, ...] = ("warning", "critical")

# --- strategies -------------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn) -> AlertRule:
    direction = draw(st.sampled_from(["below", "above"]))
    a = draw(st.integers(-5, 5))
    b = draw(st.integers(-5, 5).filter(lambda v: v != a))
    mild, severe = (max(a, b), min(a, b)) if direction == "below" else (min(a, b), max(a, b))
    levels = draw(st.sampled_from(["both", "warning", "critical"]))
    return AlertRule(
        direction,
        warning=float(mild) if levels in ("both", "warning") else None,
        critical=float(severe) if levels in ("both", "critical") else None,
        hysteresis=draw(st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        min_samples=draw(st.integers(0, 4)),
        for_updates=draw(st.integers(1, 4)),
        cooldown=draw(st.integers(0, 4)),
    )


# Values on a half-unit grid hit the levels and the resolve levels exactly.
values = st.one_of(
    st.integers(-14, 14).map(lambda v: v / 2),
    st.floats(-8, 8, allow_nan=False),
    st.just(math.nan),
)
updates = st.lists(st.tuples(values, st.integers(0, 6)), max_size=60)


@dataclass
class Step:
    value: float
    n_samples: int
    transitions: list[Transition]


def run(rule: AlertRule, seq: list[tuple[float, int]]) -> list[Step]:
    state = AlertState(rule)
    return [Step(v, n, state.update(v, n)) for v, n in seq]


def counted(rule: AlertRule, step: Step) -> bool:
    return not math.isnan(step.value) and step.n_samples >= rule.min_samples


# --- AlertRule validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"direction": "sideways", "warning": 1.0}, "direction"),
        ({"direction": "below"}, "warning, critical"),
        ({"direction": "below", "warning": 0.8, "critical": 0.9}, "critical"),
        ({"direction": "above", "warning": 0.5, "critical": 0.5}, "critical"),
        ({"direction": "below", "warning": math.nan}, "warning"),
        ({"direction": "below", "critical": math.inf}, "critical"),
        ({"direction": "below", "warning": 1.0, "hysteresis": -0.1}, "hysteresis"),
        ({"direction": "below", "warning": 1.0, "min_samples": -1}, "min_samples"),
        ({"direction": "below", "warning": 1.0, "for_updates": 0}, "for_updates"),
        ({"direction": "below", "warning": 1.0, "cooldown": -2}, "cooldown"),
        ({"direction": "below", "warning": 1.0, "cooldown": 1.5}, "cooldown"),
    ],
)
def test_rule_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        AlertRule(**kwargs)  # type: ignore[arg-type]


# --- AlertState properties --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_statuses_alternate_per_severity_starting_with_firing(
    rule: AlertRule, seq: list[tuple[float, int]]
) -> None:
    state = AlertState(rule)
    last: dict[Severity, str] = {}
    for v, n in seq:
        for t in state.update(v, n):
            expected = "resolved" if last.get(t.severity) == "firing" else "firing"
            assert t.status == expected
            last[t.severity] = t.status
        assert state.firing == {s for s, status in last.items() if status == "firing"}


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_ignored_updates_change_nothing(rule: AlertRule, seq: list[tuple[float, int]]) -> None:
    """NaN values and updates below min_samples neither fire nor resolve, nor count."""
    steps = run(rule, seq)
    assert all(not s.transitions for s in steps if not counted(rule, s))
    kept = [(s.value, s.n_samples) for s in steps if counted(rule, s)]
    assert [s.transitions for s in steps if counted(rule, s)] == [
        s.transitions for s in run(rule, kept)
    ]


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_fires_only_after_for_updates_consecutive_breaches(
    rule: AlertRule, seq: list[tuple[float, int]]
) -> None:
    steps = [s for s in run(rule, seq) if counted(rule, s)]
    for i, step in enumerate(steps):
        for t in step.transitions:
            if t.status != "firing":
                continue
            level = rule.level(t.severity)
            assert level is not None and t.threshold == level
            window = steps[max(0, i - rule.for_updates + 1) : i + 1]
            assert len(window) == rule.for_updates
            assert all(rule.breaches(s.value, level) for s in window)


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_resolves_only_past_the_hysteresis(rule: AlertRule, seq: list[tuple[float, int]]) -> None:
    for step in run(rule, seq):
        for t in step.transitions:
            if t.status != "resolved":
                continue
            level = rule.level(t.severity)
            assert level is not None
            if rule.direction == "below":
                assert t.threshold == level + rule.hysteresis
                assert step.value >= level + rule.hysteresis
            else:
                assert t.threshold == level - rule.hysteresis
                assert step.value <= level - rule.hysteresis


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_fires_and_resolves_whenever_due(rule: AlertRule, seq: list[tuple[float, int]]) -> None:
    """Liveness: a severity that is due to fire (or to resolve) does, at that update."""
    state = AlertState(rule)
    streak = dict.fromkeys(SEVERITIES, 0)
    quiet_since_resolve: dict[Severity, int | None] = dict.fromkeys(SEVERITIES)
    for v, n in seq:
        before = state.firing
        out = {(t.status, t.severity) for t in state.update(v, n)}
        if math.isnan(v) or n < rule.min_samples:
            continue
        for s in SEVERITIES:
            level = rule.level(s)
            if level is None:
                continue
            streak[s] = streak[s] + 1 if rule.breaches(v, level) else 0
            since = quiet_since_resolve[s]
            cooled = since is None or since >= rule.cooldown
            if since is not None:
                quiet_since_resolve[s] = since + 1
            if s in before and rule.clears(v, level):
                assert ("resolved", s) in out
                quiet_since_resolve[s] = 0
            elif s not in before and cooled and streak[s] >= rule.for_updates:
                assert ("firing", s) in out
            else:
                assert not any(sev == s for _, sev in out)


@settings(max_examples=200, deadline=None)
@given(rules(), updates, st.integers(0, 60))
def test_deterministic_and_pickles_mid_stream(
    rule: AlertRule, seq: list[tuple[float, int]], cut: int
) -> None:
    a, b = AlertState(rule), AlertState(rule)
    out_a = [a.update(v, n) for v, n in seq[:cut]]
    out_b = [b.update(v, n) for v, n in seq[:cut]]
    assert out_a == out_b
    c = pickle.loads(pickle.dumps(a))
    assert [a.update(v, n) for v, n in seq[cut:]] == [c.update(v, n) for v, n in seq[cut:]]
    assert a.firing == c.firing


# --- AlertState examples ----------------------------------------------------------------------


def test_crossing_both_levels_fires_warning_then_critical() -> None:
    state = AlertState(AlertRule("below", warning=0.9, critical=0.8))
    assert state.update(0.7, 100) == [
        Transition("firing", "warning", 0.7, 0.9),
        Transition("firing", "critical", 0.7, 0.8),
    ]
    assert state.firing == {"warning", "critical"}
    assert state.update(0.75, 100) == []


def test_recovering_past_both_levels_resolves_critical_then_warning() -> None:
    state = AlertState(AlertRule("above", warning=0.1, critical=0.2, hysteresis=0.05))
    state.update(0.3, 10)
    assert state.update(0.17, 10) == []  # below 0.2 but not past 0.15: both stay
    assert state.update(0.04, 10) == [
        Transition("resolved", "critical", 0.04, 0.15000000000000002),
        Transition("resolved", "warning", 0.04, 0.05),
    ]


def test_critical_resolves_while_warning_keeps_firing() -> None:
    state = AlertState(AlertRule("below", warning=0.9, critical=0.8))
    state.update(0.7, 1)
    assert state.update(0.85, 1) == [Transition("resolved", "critical", 0.85, 0.8)]
    assert state.firing == {"warning"}


def test_min_samples_holds_back_firing_and_resolving() -> None:
    state = AlertState(AlertRule("below", critical=0.5, min_samples=100))
    assert state.update(0.1, 99) == []
    assert state.update(0.1, 100) == [Transition("firing", "critical", 0.1, 0.5)]
    assert state.update(0.9, 10) == []
    assert state.firing == {"critical"}


def test_nan_and_none_are_ignored_and_do_not_break_a_streak() -> None:
    state = AlertState(AlertRule("above", critical=1.0, for_updates=2))
    assert state.update(2.0, 1) == []
    assert state.update(math.nan, 1) == []
    assert state.update(None, 1) == []
    assert [t.status for t in state.update(3.0, 1)] == ["firing"]


def test_cooldown_blocks_refiring_for_that_many_updates() -> None:
    state = AlertState(AlertRule("above", warning=1.0, cooldown=2))
    seq = [2.0, 0.0, 2.0, 2.0, 2.0]
    statuses = [[t.status for t in state.update(v, 1)] for v in seq]
    assert statuses == [["firing"], ["resolved"], [], [], ["firing"]]


def test_warning_cooldown_does_not_hold_back_critical() -> None:
    state = AlertState(AlertRule("below", warning=0.9, critical=0.5, cooldown=5))
    state.update(0.8, 1)
    state.update(0.95, 1)
    assert state.update(0.4, 1) == [Transition("firing", "critical", 0.4, 0.5)]


def test_alert_state_rejects_a_non_rule() -> None:
    with pytest.raises(ValueError, match="rule"):
        AlertState({"direction": "below"})  # type: ignore[arg-type]


# --- SignalAlertState -------------------------------------------------------------------------


def reference_signal_run(
    quiet: int, cooldown: int, signals: set[tuple[int, Severity]], n: int
) -> list[tuple[int, str, str]]:
    """Update-by-update statement of the rule, the oracle for the batched implementation."""
    out: list[tuple[int, str, str]] = []
    firing: set[Severity] = set()
    since_signal = dict.fromkeys(SEVERITIES, 0)
    may_fire_from = dict.fromkeys(SEVERITIES, 0)
    for t in range(n):
        for s in ("critical", "warning"):  # resolves first, most severe first
            if (t, s) not in signals:
                since_signal[s] += 1
                if s in firing and since_signal[s] >= quiet:
                    firing.discard(s)
                    may_fire_from[s] = t + cooldown + 1
                    out.append((t, "resolved", s))
        for s in SEVERITIES:  # then firings, warning first
            if (t, s) in signals:
                since_signal[s] = 0
                if s not in firing and t >= may_fire_from[s]:
                    firing.add(s)
                    out.append((t, "firing", s))
    return out


signal_streams = st.tuples(
    st.integers(1, 6),
    st.integers(0, 5),
    st.sets(st.tuples(st.integers(0, 79), st.sampled_from(SEVERITIES)), max_size=30),
    st.lists(st.integers(0, 30), max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(signal_streams)
def test_signal_state_matches_update_by_update_rule_for_any_batching(
    stream: tuple[int, int, set[tuple[int, Severity]], list[int]],
) -> None:
    quiet, cooldown, signals, cuts = stream
    n = 80
    bounds = sorted({0, n, *(min(c * 3, n) for c in cuts)})
    state = SignalAlertState(quiet, cooldown)
    got: list[tuple[int, str, str]] = []
    for lo, hi in itertools.pairwise(bounds):
        batch = [(i - lo, s) for i, s in signals if lo <= i < hi]
        got += [(lo + i, t.status, t.severity) for i, t in state.update(batch, hi - lo)]
    assert got == reference_signal_run(quiet, cooldown, signals, n)
    assert state.n_seen == n


@settings(max_examples=200, deadline=None)
@given(signal_streams)
def test_signal_state_alternates_per_severity(
    stream: tuple[int, int, set[tuple[int, Severity]], list[int]],
) -> None:
    quiet, cooldown, signals, _ = stream
    state = SignalAlertState(quiet, cooldown)
    last: dict[str, str] = {}
    for i, t in state.update(sorted(signals), 80):
        assert t.status == ("resolved" if last.get(t.severity) == "firing" else "firing")
        last[t.severity] = t.status
        assert 0 <= i < 80


def test_signal_state_example() -> None:
    state = SignalAlertState(quiet_updates=3, cooldown=2)
    out = state.update([(0, "warning"), (1, "warning"), (1, "critical"), (9, "critical")], 10)
    assert [(i, t.status, t.severity) for i, t in out] == [
        (0, "firing", "warning"),
        (1, "firing", "critical"),
        (4, "resolved", "critical"),
        (4, "resolved", "warning"),
        (9, "firing", "critical"),
    ]
    assert state.firing == {"critical"}
    # The quiet period runs on across batches.
    out = state.update([], 5)
    assert [(i, t.status, t.severity, t.value) for i, t in out] == [
        (2, "resolved", "critical", 3.0)
    ]


def test_signal_state_cooldown_swallows_early_signals() -> None:
    state = SignalAlertState(quiet_updates=1, cooldown=3)
    out = state.update([(0, "critical"), (2, "critical"), (4, "critical"), (5, "critical")], 6)
    assert [(i, t.status) for i, t in out] == [(0, "firing"), (1, "resolved"), (5, "firing")]


@pytest.mark.parametrize(
    ("signals", "n", "match"),
    [
        ([(5, "critical")], 5, "signals"),
        ([(-1, "warning")], 5, "signals"),
        ([(0, "info")], 5, "signals"),
        ([], -1, "n"),
    ],
)
def test_signal_state_rejects_bad_batches(
    signals: list[tuple[int, Severity]], n: int, match: str
) -> None:
    state = SignalAlertState(quiet_updates=2)
    with pytest.raises(ValueError, match=f"^{match}"):
        state.update(signals, n)
    assert state.n_seen == 0


@pytest.mark.parametrize(
    ("quiet", "cooldown", "field"), [(0, 0, "quiet_updates"), (1, -1, "cooldown")]
)
def test_signal_state_validation(quiet: int, cooldown: int, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        SignalAlertState(quiet, cooldown)


def test_signal_state_pickles_mid_stream() -> None:
    a = SignalAlertState(quiet_updates=4, cooldown=1)
    a.update([(3, "critical")], 5)
    b = pickle.loads(pickle.dumps(a))
    assert a.update([(6, "warning")], 10) == b.update([(6, "warning")], 10)
    assert a.firing == b.firing
