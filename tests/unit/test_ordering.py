"""``OutcomeOrder``: pairs go out in the order of their outcomes; a waiting outcome holds the
ones read after it until its prediction comes, expires, or is late by ``max_skew_ms``."""

from __future__ import annotations

from typing import NamedTuple

from driftline.service.ordering import OutcomeOrder

SKEW = 60_000


class Record(NamedTuple):
    topic: str
    offset: int


def labels(order: OutcomeOrder, watermark: int) -> list[int]:
    return [p.record.offset for p in order.release(watermark, SKEW)]


def test_pairs_behind_a_waiting_outcome_wait_for_it_and_then_go_out_in_order() -> None:
    order = OutcomeOrder()
    assert order.add("m", Record("o", 0), 1_000, ("pair",))  # nothing held: out at once
    order.wait(("m", "e1"), "m", Record("o", 1), 2_000)
    assert not order.add("m", Record("o", 2), 3_000, ("pair",))
    assert not order.add("n", Record("o", 3), 3_100, ("pair",))
    assert order.first == ("o", 1) and order.first_held == ("o", 2)
    assert labels(order, watermark=2_500) == []  # its prediction may still come in order
    out = order.complete(("m", "e1"), ("pair-1",))
    assert [p.record.offset for p in out] == [1, 2, 3]
    assert order.first is None and order.first_held is None and len(order) == 0


def test_a_waiting_outcome_behind_the_first_completes_without_going_out_early() -> None:
    order = OutcomeOrder()
    order.wait(("m", "e1"), "m", Record("o", 0), 1_000)
    order.wait(("m", "e2"), "m", Record("o", 1), 1_100)
    assert order.complete(("m", "e2"), ("pair-2",)) == []  # e1 still holds it
    assert [p.labeled for p in order.complete(("m", "e1"), ("pair-1",))] == [
        ("pair-1",),
        ("pair-2",),
    ]


def test_a_prediction_later_than_max_skew_stops_holding_the_others() -> None:
    order = OutcomeOrder()
    order.wait(("m", "late"), "m", Record("o", 0), 1_000)
    order.add("m", Record("o", 1), 1_200, ("pair",))
    assert labels(order, watermark=1_000 + SKEW) == []  # not yet past it
    assert labels(order, watermark=1_001 + SKEW) == [1]
    late = order.complete(("m", "late"), ("pair-late",))
    assert [(p.record.offset, p.unordered) for p in late] == [(0, True)]  # out when it comes


def test_an_expired_outcome_is_dropped_from_the_order() -> None:
    order = OutcomeOrder()
    order.wait(("m", "orphan"), "m", Record("o", 0), 1_000)
    order.add("m", Record("o", 1), 1_100, ("pair",))
    order.drop(("m", "orphan"))
    assert labels(order, watermark=0) == [1]


def test_a_removed_model_leaves_the_order_and_holds_nothing() -> None:
    order = OutcomeOrder()
    order.wait(("gone", "e1"), "gone", Record("o", 0), 1_000)
    order.add("gone", Record("o", 1), 1_100, ("pair",))
    order.add("kept", Record("o", 2), 1_200, ("pair",))
    order.drop_model("gone")
    assert labels(order, watermark=0) == [2]
