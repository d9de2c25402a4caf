"""Alert state machines: alternation, persistence, confidence bounds, resolve runs, cooldown,
minimum samples, close."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.alerting import AlertRule, AlertState, Severity, Transition

SEVERITIES: tuple[Severity, ...] = ("warning", "critical")
Z_VALUES = (0.0, 1.0, 2.326)

# --- the rule, restated from its specification (the oracle) -----------------------------------


def breaches(rule: AlertRule, value: float, level: float, se: float) -> bool:
    """The bound nearest the level is past it."""
    if rule.direction == "below":
        return value + rule.z * se < level
    return value - rule.z * se > level


def clears(rule: AlertRule, value: float, level: float, se: float) -> bool:
    """The opposite bound is back past the level."""
    if rule.direction == "below":
        return value - rule.z * se >= level
    return value + rule.z * se <= level


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
        z=draw(st.sampled_from(Z_VALUES)),
        min_samples=draw(st.integers(0, 4)),
        for_updates=draw(st.integers(1, 4)),
        resolve_updates=draw(st.integers(1, 4)),
        cooldown=draw(st.integers(0, 4)),
    )


# Values on a half-unit grid hit the levels exactly; standard errors of 0.5 and 1 put the bounds
# on the same grid (with z = 1), so bound == level is exercised too. One draw in ten is NaN.
@st.composite
def values(draw: st.DrawFn) -> float:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return math.nan
    if kind <= 2:
        return draw(st.floats(-8, 8, allow_nan=False))
    return draw(st.integers(-14, 14)) / 2


@st.composite
def standard_errors(draw: st.DrawFn) -> float:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return math.nan
    if kind <= 3:
        return 0.0
    if kind <= 6:
        return draw(st.sampled_from([0.25, 0.5, 1.0]))
    return draw(st.floats(0, 2, allow_nan=False))


Update = tuple[float, int, float]


def flatten(runs: list[tuple[Update, int]]) -> list[Update]:
    return [update for update, times in runs for _ in range(times)][:60]


# Runs of repeated updates, so that for_updates breaches and resolve_updates clears in a row
# happen often enough to exercise both.
updates = st.lists(
    st.tuples(st.tuples(values(), st.integers(0, 6), standard_errors()), st.integers(1, 6)),
    max_size=30,
).map(flatten)


@dataclass
class Step:
    value: float
    n_samples: int
    se: float
    transitions: list[Transition]


def run(rule: AlertRule, seq: list[Update], state: AlertState | None = None) -> list[Step]:
    state = AlertState(rule) if state is None else state
    return [Step(v, n, se, state.update(v, n, se)) for v, n, se in seq]


def counted(rule: AlertRule, step: Step) -> bool:
    return (
        not math.isnan(step.value)
        and not math.isnan(step.se)
        and (step.n_samples >= rule.min_samples)
    )


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
        ({"direction": "below", "warning": 1.0, "z": -0.1}, "z"),
        ({"direction": "below", "warning": 1.0, "z": math.nan}, "z"),
        ({"direction": "below", "warning": 1.0, "z": math.inf}, "z"),
        ({"direction": "below", "warning": 1.0, "min_samples": -1}, "min_samples"),
        ({"direction": "below", "warning": 1.0, "for_updates": 0}, "for_updates"),
        ({"direction": "below", "warning": 1.0, "resolve_updates": 0}, "resolve_updates"),
        ({"direction": "below", "warning": 1.0, "resolve_updates": 1.5}, "resolve_updates"),
        ({"direction": "below", "warning": 1.0, "cooldown": -2}, "cooldown"),
        ({"direction": "below", "warning": 1.0, "cooldown": 1.5}, "cooldown"),
    ],
)
def test_rule_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        AlertRule(**kwargs)  # type: ignore[arg-type]


def test_rule_has_no_hysteresis_any_more() -> None:
    with pytest.raises(TypeError):
        AlertRule("below", warning=1.0, hysteresis=0.1)  # type: ignore[call-arg]


# --- AlertState properties --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_statuses_alternate_per_severity_starting_with_firing(
    rule: AlertRule, seq: list[Update]
) -> None:
    state = AlertState(rule)
    last: dict[Severity, str] = {}
    for v, n, se in seq:
        for t in state.update(v, n, se):
            expected = "resolved" if last.get(t.severity) == "firing" else "firing"
            assert t.status == expected
            last[t.severity] = t.status
        assert state.firing == {s for s, status in last.items() if status == "firing"}


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_ignored_updates_change_nothing(rule: AlertRule, seq: list[Update]) -> None:
    """NaN values, NaN standard errors and updates below min_samples neither fire nor resolve,
    nor count towards for_updates, resolve_updates or cooldown."""
    steps = run(rule, seq)
    assert all(not s.transitions for s in steps if not counted(rule, s))
    kept = [(s.value, s.n_samples, s.se) for s in steps if counted(rule, s)]
    assert [s.transitions for s in steps if counted(rule, s)] == [
        s.transitions for s in run(rule, kept)
    ]


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_fires_only_after_for_updates_consecutive_breaches_of_the_bound(
    rule: AlertRule, seq: list[Update]
) -> None:
    steps = [s for s in run(rule, seq) if counted(rule, s)]
    for i, step in enumerate(steps):
        for t in step.transitions:
            if t.status != "firing":
                continue
            level = rule.level(t.severity)
            assert level is not None
            assert (t.threshold, t.value) == (level, step.value)
            window = steps[max(0, i - rule.for_updates + 1) : i + 1]
            assert len(window) == rule.for_updates
            assert all(breaches(rule, s.value, level, s.se) for s in window)


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_resolves_only_after_resolve_updates_consecutive_clears_of_the_bound(
    rule: AlertRule, seq: list[Update]
) -> None:
    steps = [s for s in run(rule, seq) if counted(rule, s)]
    fired_at: dict[Severity, int] = {}
    for i, step in enumerate(steps):
        for t in step.transitions:
            level = rule.level(t.severity)
            assert level is not None
            if t.status == "firing":
                fired_at[t.severity] = i
                continue
            assert (t.threshold, t.value) == (level, step.value)
            window = steps[i - rule.resolve_updates + 1 : i + 1]
            # The clearing run lies wholly after the update that fired.
            assert i - rule.resolve_updates + 1 > fired_at[t.severity]
            assert all(clears(rule, s.value, level, s.se) for s in window)


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_fires_and_resolves_whenever_due(rule: AlertRule, seq: list[Update]) -> None:
    """Liveness: a severity due to fire (or to resolve) does, at that update, and nothing else
    happens to it. The emission order is resolves first (critical, then warning), then firings
    (warning, then critical)."""
    state = AlertState(rule)
    streak = dict.fromkeys(SEVERITIES, 0)
    clear_streak = dict.fromkeys(SEVERITIES, 0)
    quiet_since_resolve: dict[Severity, int | None] = dict.fromkeys(SEVERITIES)
    order = [("resolved", "critical"), ("resolved", "warning")]
    order += [("firing", "warning"), ("firing", "critical")]
    for v, n, se in seq:
        before = state.firing
        out = [(t.status, t.severity) for t in state.update(v, n, se)]
        if math.isnan(v) or math.isnan(se) or n < rule.min_samples:
            assert out == []
            continue
        expected = []
        for s in SEVERITIES:
            level = rule.level(s)
            if level is None:
                continue
            streak[s] = streak[s] + 1 if breaches(rule, v, level, se) else 0
            since = quiet_since_resolve[s]
            cooled = since is None or since >= rule.cooldown
            if since is not None:
                quiet_since_resolve[s] = since + 1
            if s in before:
                clear_streak[s] = clear_streak[s] + 1 if clears(rule, v, level, se) else 0
                if clear_streak[s] >= rule.resolve_updates:
                    expected.append(("resolved", s))
                    quiet_since_resolve[s] = 0
            elif cooled and streak[s] >= rule.for_updates:
                expected.append(("firing", s))
                clear_streak[s] = 0
        assert out == sorted(expected, key=order.index)


@settings(max_examples=200, deadline=None)
@given(rules(), updates, st.integers(0, 60))
def test_deterministic_and_pickles_mid_stream(rule: AlertRule, seq: list[Update], cut: int) -> None:
    a, b = AlertState(rule), AlertState(rule)
    out_a = [a.update(v, n, se) for v, n, se in seq[:cut]]
    out_b = [b.update(v, n, se) for v, n, se in seq[:cut]]
    assert out_a == out_b
    c = pickle.loads(pickle.dumps(a))
    rest = seq[cut:]
    assert [a.update(v, n, se) for v, n, se in rest] == [c.update(v, n, se) for v, n, se in rest]
    assert a.firing == c.firing


@st.composite
def hovering(draw: st.DrawFn) -> tuple[AlertRule, float, list[tuple[float, float]]]:
    """A one-level rule with z > 0 and values strictly within ±z·se of the level."""
    direction = draw(st.sampled_from(["below", "above"]))
    level = float(draw(st.integers(-5, 5)))
    severity = draw(st.sampled_from(SEVERITIES))
    rule = AlertRule(
        direction,
        **{severity: level},  # type: ignore[arg-type]
        z=draw(st.sampled_from([1.0, 2.326])),
        for_updates=draw(st.integers(1, 3)),
        resolve_updates=draw(st.integers(1, 3)),
    )
    se = st.floats(0.01, 2.0)
    # A margin of 1 % of the half-width keeps the values clear of rounding at the bounds.
    u = st.floats(-0.99, 0.99)
    points = draw(st.lists(st.tuples(u, se), min_size=1, max_size=40))
    return rule, level, [(level + k * rule.z * s, s) for k, s in points]


@settings(max_examples=300, deadline=None)
@given(hovering())
def test_a_value_hovering_within_the_bound_never_fires_nor_resolves(
    case: tuple[AlertRule, float, list[tuple[float, float]]],
) -> None:
    rule, level, points = case
    quiet = AlertState(rule)
    assert all(quiet.update(v, 1, se) == [] for v, se in points)
    assert quiet.firing == frozenset()

    firing = AlertState(rule)
    far = level - 100.0 if rule.direction == "below" else level + 100.0
    for _ in range(rule.for_updates):
        firing.update(far, 1, 0.0)
    assert len(firing.firing) == 1
    assert all(firing.update(v, 1, se) == [] for v, se in points)
    assert len(firing.firing) == 1


@settings(max_examples=300, deadline=None)
@given(rules(), updates)
def test_close_resolves_everything_firing_most_severe_first(
    rule: AlertRule, seq: list[Update]
) -> None:
    state = AlertState(rule)
    run(rule, seq, state)
    firing = state.firing
    closed = state.close()
    assert [t.severity for t in closed] == [s for s in ("critical", "warning") if s in firing]
    assert all(t.status == "resolved" and math.isnan(t.value) for t in closed)
    assert all(t.threshold == rule.level(t.severity) for t in closed)
    assert state.firing == frozenset()
    assert state.close() == []


# --- AlertState examples ----------------------------------------------------------------------


def test_crossing_both_levels_fires_warning_then_critical() -> None:
    state = AlertState(AlertRule("below", warning=0.9, critical=0.8))
    assert state.update(0.7, 100) == [
        Transition("firing", "warning", 0.7, 0.9),
        Transition("firing", "critical", 0.7, 0.8),
    ]
    assert state.firing == {"warning", "critical"}
    assert state.update(0.75, 100) == []


def test_a_breach_within_the_standard_error_does_not_fire() -> None:
    rule = AlertRule("below", warning=0.85, z=2.326)
    state = AlertState(rule)
    assert state.update(0.84, 1000, se=0.012) == []  # 0.84 + 0.028 >= 0.85
    assert state.update(0.80, 1000, se=0.012) == [Transition("firing", "warning", 0.80, 0.85)]


def test_with_zero_standard_error_the_point_value_decides() -> None:
    state = AlertState(AlertRule("above", critical=0.05, z=2.326))
    assert state.update(0.051, 10, se=0.0) == [Transition("firing", "critical", 0.051, 0.05)]
    assert state.update(0.05, 10, se=0.0) == [Transition("resolved", "critical", 0.05, 0.05)]


def test_recovering_past_both_bounds_resolves_critical_then_warning() -> None:
    state = AlertState(AlertRule("above", warning=0.1, critical=0.2, z=2.0))
    state.update(0.3, 10, se=0.01)
    assert state.update(0.19, 10, se=0.01) == []  # 0.19 + 0.02 > 0.2: both stay
    assert state.update(0.05, 10, se=0.01) == [
        Transition("resolved", "critical", 0.05, 0.2),
        Transition("resolved", "warning", 0.05, 0.1),
    ]


def test_resolve_needs_resolve_updates_clears_in_a_row() -> None:
    state = AlertState(AlertRule("below", warning=0.85, z=2.326, resolve_updates=2))
    assert [t.status for t in state.update(0.80, 1000, se=0.012)] == ["firing"]
    # 0.88 - 0.028 >= 0.85 clears; 0.86 - 0.028 < 0.85 does not and restarts the run.
    statuses = [[t.status for t in state.update(v, 1000, se=0.012)] for v in (0.88, 0.86, 0.88)]
    assert statuses == [[], [], []]
    assert state.update(0.88, 1000, se=0.012) == [Transition("resolved", "warning", 0.88, 0.85)]


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
    state = AlertState(AlertRule("above", critical=1.0, for_updates=2, z=1.0))
    assert state.update(2.0, 1, se=0.1) == []
    assert state.update(math.nan, 1, se=0.1) == []
    assert state.update(None, 1, se=0.1) == []
    assert state.update(2.0, 1, se=math.nan) == []
    assert state.update(2.0, 1, se=None) == []  # type: ignore[arg-type]
    assert [t.status for t in state.update(3.0, 1, se=0.1)] == ["firing"]


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


def test_close_example() -> None:
    state = AlertState(AlertRule("below", warning=0.9, critical=0.8))
    state.update(0.7, 1)
    closed = state.close()
    assert [(t.status, t.severity, t.threshold) for t in closed] == [
        ("resolved", "critical", 0.8),
        ("resolved", "warning", 0.9),
    ]
    assert state.firing == frozenset()


def test_alert_state_rejects_a_non_rule() -> None:
    with pytest.raises(ValueError, match="rule"):
        AlertState({"direction": "below"})  # type: ignore[arg-type]
