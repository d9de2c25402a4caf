"""Alerts held for the other stream (``detectors.held``): booked in the order of their marks
whatever the schedule; held until the other stream passes them, the end of a replay, or (live)
``max_buffer_ms`` once the other topic has nothing left to read; kept in the state."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.held import UNBOUNDED, HeldAlerts
from driftline.service.pipeline import InputRecord, Pipeline, Role, Seen
from driftline.service.state_format import StateCodec, from_tree, to_tree
from driftline.service.synthetic import ModelStream

from .test_buffering import Clock, config, records


def stream(marks: list[int], side: str) -> list[tuple[int, int, dict[str, Any]]]:
    return [(m, i, {"side": side, "i": i}) for i, m in enumerate(marks)]


def marks() -> st.SearchStrategy[list[int]]:
    """Non-decreasing marks (a stream's watermark at each alert), ties included."""
    return st.lists(st.integers(0, 5), max_size=12).map(
        lambda steps: [sum(steps[: i + 1]) for i in range(len(steps))]
    )


@settings(max_examples=300, deadline=None)
@given(marks(), marks(), st.randoms(use_true_random=False))
def test_any_schedule_books_in_the_order_of_the_marks(
    prediction_marks: list[int], label_marks: list[int], rng: Any
) -> None:
    """Each stream's alerts arrive in calls at random points of a random schedule, with each
    stream's bound its progress so far (the mark of its next alert, or past its last one when
    it is done); releases happen at random. What comes out, in order, is the merge by mark
    (predictions first on a tie), the same for every schedule."""
    streams = {"p": stream(prediction_marks, "p"), "l": stream(label_marks, "l")}
    ideal = [
        a
        for _, _, _, a in sorted(
            [(m, 0, i, a) for m, i, a in streams["p"]] + [(m, 1, i, a) for m, i, a in streams["l"]],
            key=lambda x: x[:3],
        )
    ]
    held, out, at = HeldAlerts(), [], {"p": 0, "l": 0}

    def bound(side: str) -> int:
        items = streams[side]
        if at[side] < len(items):
            return items[at[side]][0]  # nothing later in the stream comes before its next one
        return UNBOUNDED if rng.random() < 0.5 else (items[-1][0] if items else 0)

    while at["p"] < len(streams["p"]) or at["l"] < len(streams["l"]):
        side = rng.choice([s for s in "pl" if at[s] < len(streams[s])])
        take = rng.randint(1, 3)
        part = streams[side][at[side] : at[side] + take]
        at[side] += len(part)
        (held.add_predictions if side == "p" else held.add_labels)(part)
        if rng.random() < 0.7:
            released = held.release(bound("p"), bound("l"))
            out += released
    out += held.release(UNBOUNDED, UNBOUNDED)
    assert out == ideal and not held


def test_an_alert_waits_until_the_other_stream_passes_its_mark() -> None:
    held = HeldAlerts()
    held.add_predictions([(100, 0, {"a": 1})])
    assert held.release(prediction_bound=200, label_bound=99) == []
    assert held.release(prediction_bound=200, label_bound=100) == [{"a": 1}]  # a tie: first
    held.add_labels([(300, 0, {"b": 1})])
    assert held.release(prediction_bound=300, label_bound=400) == []  # a prediction may tie
    assert held.release(prediction_bound=301, label_bound=400) == [{"b": 1}]


DRIFTING = ModelStream("a", seed=1, change_at=2500, numeric_shift={"x1": 1.5})


def predictions_only(n: int = 4000) -> list[InputRecord]:
    return [r for r in records([DRIFTING], n) if r.role == "prediction"]


def drift_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["kind"] == "data_drift"]


class CaughtUp:
    """What ``driftline run`` asks its consumer: whether a task's topic has nothing unread."""

    def __init__(self) -> None:
        self.outcomes = False

    def __call__(self, partition: int, role: Role) -> bool:
        return role == "prediction" or self.outcomes


@pytest.mark.parametrize(("max_buffer_ms", "out_at_700_ms"), [(500, True), (5000, False)])
def test_live_a_held_alert_goes_out_after_max_buffer_ms_once_the_other_topic_is_read(
    max_buffer_ms: int, out_at_700_ms: bool
) -> None:
    clock, caught_up = Clock(), CaughtUp()
    pipeline = Pipeline(config(max_buffer_ms=max_buffer_ms), clock=clock, caught_up=caught_up)
    assert pipeline.process(predictions_only()).alerts == []  # no label has passed them
    assert pipeline.tasks[0].monitors["a"].n_held
    clock.now += 0.6
    assert drift_alerts(pipeline.flush_due().alerts) == []  # outcomes still unread
    caught_up.outcomes = True
    clock.now += 0.1
    assert bool(drift_alerts(pipeline.flush_due().alerts)) is out_at_700_ms
    assert bool(pipeline.tasks[0].monitors["a"].n_held) is not out_at_700_ms


def test_in_a_replay_held_alerts_go_out_at_the_end_of_the_input() -> None:
    pipeline = Pipeline(config())
    alerts = pipeline.process(predictions_only()).alerts
    alerts += pipeline.flush().alerts  # a flush for a checkpoint keeps them held
    assert drift_alerts(alerts) == []
    alerts += pipeline.flush(end_of_input=True).alerts
    assert drift_alerts(alerts)


def test_without_state_a_shutdown_flush_lets_held_alerts_go() -> None:
    pipeline = Pipeline(config())
    pipeline.process(predictions_only())
    assert drift_alerts(pipeline.flush(release_held=True).alerts)


def test_held_alerts_are_kept_in_the_state_and_go_out_after_a_restore() -> None:
    original = Pipeline(config())
    original.process(predictions_only())
    original.flush()
    codec = StateCodec(None)
    restored = Pipeline(config())
    task = original.tasks[0]
    parts = from_tree(codec.decode(codec.encode({"t": to_tree((task.join, task.outcomes))}))["t"])
    roots = {"settings": task.monitors["a"].settings, "profile": None}
    record = codec.encode({"m": to_tree(task.monitors["a"], roots)})
    monitor = from_tree(codec.decode(record)["m"], roots)
    restored.restore(0, tuple(parts), {"a": (monitor, Seen(0, 0, 0))})
    expected = original.flush(end_of_input=True).alerts
    got = restored.flush(end_of_input=True).alerts
    assert drift_alerts(expected)
    assert orjson.dumps(got) == orjson.dumps(expected)
