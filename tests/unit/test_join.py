"""The prediction–outcome join: both arrival orders pair, ageing is by event time, caps evict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.events import Outcome, Prediction, Source
from service.join import Expired, JoinBuffer


def prediction(event_id: str, ts: int, model: str = "m") -> Prediction:
    return Prediction(event_id, model, "v1", ts, {"x": 1.0}, 1, 0.9, None, Source("p", 0, ts))


def outcome(event_id: str, ts: int, model: str = "m") -> Outcome:
    return Outcome(event_id, model, None, ts, 0, None, None, Source("o", 0, ts))


def test_outcome_after_prediction_pairs() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    assert join.add_prediction(prediction("a", 100), expired) is None
    pair = join.add_outcome(outcome("a", 400), expired)
    assert pair is not None
    assert (pair.prediction, pair.label, pair.predicted_at_ms, pair.labeled_at_ms) == (
        1,
        0,
        100,
        400,
    )
    assert pair.source == Source("o", 0, 400)
    assert join.waiting_predictions == join.waiting_outcomes == 0


def test_outcome_before_prediction_waits_and_pairs() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    assert join.add_outcome(outcome("a", 400), expired, handle="raw") is None
    assert join.waiting_outcomes == 1
    pair = join.add_prediction(prediction("a", 100), expired)
    assert pair is not None and pair.label == 0 and pair.model_version == "v1"
    assert join.waiting_outcomes == 0


def test_same_event_id_of_two_models_does_not_pair() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    join.add_prediction(prediction("a", 100, model="m1"), expired)
    assert join.add_outcome(outcome("a", 200, model="m2"), expired) is None


def test_each_side_ages_by_the_other_sides_event_time() -> None:
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    join.add_prediction(prediction("a", 100), expired)
    join.add_outcome(outcome("b", 150), expired, handle="raw-b")
    join.add_prediction(prediction("c", 1100), expired)
    join.expire(expired)
    # Predictions reached 1100: outcome "b" (150) may still find its prediction; outcomes only
    # reached 150, so prediction "a" may still get its outcome.
    assert expired.predictions == [] and expired.outcomes == []
    join.add_prediction(prediction("d", 1200), expired)
    join.expire(expired)
    assert [(o.event_id, h) for o, h in expired.outcomes] == [("b", "raw-b")]
    assert expired.predictions == []
    join.add_outcome(outcome("x", 1150), expired)
    join.expire(expired)
    assert [p.event_id for p in expired.predictions] == ["a"]
    assert join.waiting_predictions == 2


def test_catch_up_with_one_topic_read_ahead_loses_no_pair() -> None:
    """All predictions are read before any outcome (a restart after a long backlog): nothing
    expires while the outcomes are unread, and every outcome then finds its prediction."""
    join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10_000), Expired()
    for i in range(5000):
        join.add_prediction(prediction(str(i), i * 100), expired)
    join.expire(expired)
    assert expired.predictions == []
    pairs = [join.add_outcome(outcome(str(i), i * 100 + 50), expired) for i in range(5000)]
    join.expire(expired)
    assert all(p is not None for p in pairs) and expired.outcomes == []


def test_cap_evicts_the_oldest_entry() -> None:
    join, expired = JoinBuffer(max_wait_ms=10**9, max_entries=2), Expired()
    for i in range(3):
        join.add_prediction(prediction(str(i), i), expired)
    assert [p.event_id for p in expired.predictions] == ["0"]
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
            result = join.add_prediction(prediction(str(i), i), expired)
        else:
            i = pending_o.pop()
            result = join.add_outcome(outcome(str(i), i), expired)
        if result is not None:
            pairs.append(result.event_id)
    assert sorted(pairs, key=int) == [str(i) for i in range(20)]
    assert join.waiting_predictions == join.waiting_outcomes == 0


def test_side_ahead_names_the_topic_beyond_the_allowed_skew() -> None:
    from service.balance import side_ahead

    assert side_ahead(100_000, 0, max_skew_ms=60_000) == "prediction"
    assert side_ahead(0, 100_000, max_skew_ms=60_000) == "outcome"
    assert side_ahead(100_000, 50_000, max_skew_ms=60_000) is None
    assert side_ahead(50_000, 110_000, max_skew_ms=60_000) is None
