"""The prediction–outcome join: both arrival orders pair, ageing is by event time, caps evict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.service.join import Expired, JoinBuffer


def add_prediction(join: JoinBuffer, event_id: str, ts: int, expired: Expired, model: str = "m"):
    return join.add_prediction((model, event_id), ts, ("prediction", event_id, ts), expired)


def add_outcome(join: JoinBuffer, event_id: str, ts: int, expired: Expired, model: str = "m"):
    return join.add_outcome((model, event_id), ts, ("outcome", event_id, ts), expired)


def expire(join: JoinBuffer, expired: Expired) -> None:
    """Age both sides; the label stream's watermark is the outcomes' here (the pipeline passes
    the watermark of the outcomes handed out in order)."""
    join.expire_outcomes(expired)
    join.expire_predictions(join.outcome_watermark_ms, expired)


def test_outcome_after_prediction_pairs() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    assert add_prediction(join, "a", 100, expired) is None
    assert add_outcome(join, "a", 400, expired) == ("prediction", "a", 100)
    assert join.waiting_predictions == join.waiting_outcomes == 0


def test_outcome_before_prediction_waits_and_pairs() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    assert add_outcome(join, "a", 400, expired) is None
    assert join.waiting_outcomes == 1
    assert add_prediction(join, "a", 100, expired) == ("outcome", "a", 400)
    assert join.waiting_outcomes == 0


def test_same_event_id_of_two_models_does_not_pair() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    add_prediction(join, "a", 100, expired, model="m1")
    assert add_outcome(join, "a", 200, expired, model="m2") is None
    assert join.contains_prediction(("m1", "a")) and not join.contains_prediction(("m2", "a"))


def test_each_side_ages_by_the_other_sides_event_time() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    add_prediction(join, "a", 100, expired)
    add_outcome(join, "b", 150, expired)
    add_prediction(join, "c", 1100, expired)
    expire(join, expired)
    # Predictions reached 1100: outcome "b" (150) may still find its prediction; outcomes only
    # reached 150, so prediction "a" may still get its outcome.
    assert expired.predictions == [] and expired.outcomes == []
    add_prediction(join, "d", 1200, expired)
    expire(join, expired)
    assert expired.outcomes == [(("m", "b"), ("outcome", "b", 150))]
    assert expired.predictions == []
    add_outcome(join, "x", 1150, expired)
    expire(join, expired)
    assert [key[1] for key, _ in expired.predictions] == ["a"]
    assert join.waiting_predictions == 2


def test_catch_up_with_one_topic_read_ahead_loses_no_pair() -> None:
    """All predictions are read before any outcome (a restart after a long backlog): nothing
    expires while the outcomes are unread, and every outcome then finds its prediction."""
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10_000), Expired()
    for i in range(5000):
        add_prediction(join, str(i), i * 100, expired)
    expire(join, expired)
    assert expired.predictions == []
    pairs = [add_outcome(join, str(i), i * 100 + 50, expired) for i in range(5000)]
    expire(join, expired)
    assert all(p is not None for p in pairs) and expired.outcomes == []


def test_an_expiry_check_skipped_below_the_oldest_prediction_misses_none() -> None:
    """The check at each outcome skips the buffer while the label stream is below its oldest
    waiting prediction; a prediction older than the front, read later, lowers that bound."""
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    add_prediction(join, "a", 5000, expired)
    join.expire_predictions(5500, expired)
    assert expired.predictions == []
    add_prediction(join, "late", 100, expired)  # out of order in its partition
    add_prediction(join, "b", 6000, expired)
    assert add_outcome(join, "a", 5200, expired) is not None  # the front leaves
    join.expire_predictions(1200, expired)
    assert [key[1] for key, _ in expired.predictions] == ["late"]
    join.expire_predictions(7001, expired)
    assert [key[1] for key, _ in expired.predictions] == ["late", "b"]
    assert join.waiting_predictions == 0


def test_cap_evicts_the_oldest_entry() -> None:
    join, expired = JoinBuffer(max_wait_ms=10**9, max_entries=2), Expired()
    for i in range(3):
        add_prediction(join, str(i), i, expired)
    assert [key[1] for key, _ in expired.predictions] == ["0"]
    assert expired.evicted == 1 and join.waiting_predictions == 2


@settings(max_examples=200, deadline=None)
@given(st.permutations(list(range(20))), st.lists(st.booleans(), min_size=40, max_size=40))
def test_every_pair_matches_in_any_arrival_order(order: list[int], sides: list[bool]) -> None:
    """Interleave 20 predictions and their 20 outcomes in any order: all 20 pairs come out."""
    join, expired = JoinBuffer(max_wait_ms=10**9, max_entries=100), Expired()
    pending_p, pending_o = list(order), list(reversed(order))
    pairs = []
    for take_prediction in sides:
        if (take_prediction and pending_p) or not pending_o:
            i = pending_p.pop()
            result = add_prediction(join, str(i), i, expired)
        else:
            i = pending_o.pop()
            result = add_outcome(join, str(i), i, expired)
        if result is not None:
            pairs.append(result[1])
    assert sorted(pairs, key=int) == [str(i) for i in range(20)]
    assert join.waiting_predictions == join.waiting_outcomes == 0


def test_side_ahead_names_the_topic_beyond_the_allowed_skew() -> None:
    from driftline.service.balance import side_ahead

    assert side_ahead(100_000, 0, max_skew_ms=60_000) == "prediction"
    assert side_ahead(0, 100_000, max_skew_ms=60_000) == "outcome"
    assert side_ahead(100_000, 50_000, max_skew_ms=60_000) is None
    assert side_ahead(50_000, 110_000, max_skew_ms=60_000) is None
