"""The prediction–outcome join of one task (one partition of both input topics).

Both sides are buffered: the two topics are fetched independently, so either side may be read far
ahead of the other (always during catch-up). Time is event time, and each side is aged by the
*other* side's watermark (the newest timestamp read from it): a prediction stops waiting once the
outcomes of its partition have moved ``max_wait_ms`` past it, and an outcome once the predictions
have. Reading one topic ahead therefore never expires entries whose partner is merely unread, and
a replay ages entries exactly as the live service did. Buffers keep arrival order (dicts), which
is event-time order up to producer disorder, so expiry pops from the front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from detectors.events import Labeled, Outcome, Prediction

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class Expired:
    """What left the buffers unmatched.

    Predictions lower label coverage; outcomes become dead letters.
    """

    predictions: list[Prediction] = field(default_factory=list)
    # Each unmatched outcome with the opaque handle it was buffered with (the raw record, which
    # the service dead-letters unchanged).
    outcomes: list[tuple[Outcome, object]] = field(default_factory=list)
    # Entries pushed out by the size cap rather than by age (a subset of the lists above).
    evicted: int = 0


class JoinBuffer:
    """Buffers predictions waiting for outcomes and outcomes waiting for predictions.

    Parameters
    ----------
    max_wait_ms
        How long (event time) an entry waits for its partner before it expires.
    max_entries
        Cap on entries per side; the oldest entry is evicted (and expires) beyond it.
    """

    def __init__(self, max_wait_ms: int, max_entries: int) -> None:
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be non-negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_wait_ms = max_wait_ms
        self.max_entries = max_entries
        self._predictions: dict[tuple[str, str], tuple[int, Prediction]] = {}
        self._outcomes: dict[tuple[str, str], tuple[int, tuple[Outcome, object]]] = {}
        self._prediction_watermark_ms = 0
        self._outcome_watermark_ms = 0

    @property
    def watermark_ms(self) -> int:
        """The newest event time read from either topic of this task."""
        return max(self._prediction_watermark_ms, self._outcome_watermark_ms)

    @property
    def prediction_watermark_ms(self) -> int:
        return self._prediction_watermark_ms

    @property
    def outcome_watermark_ms(self) -> int:
        return self._outcome_watermark_ms

    @property
    def waiting_predictions(self) -> int:
        return len(self._predictions)

    @property
    def waiting_outcomes(self) -> int:
        return len(self._outcomes)

    def contains_prediction(self, model_id: str, event_id: str) -> bool:
        return (model_id, event_id) in self._predictions

    def add_prediction(self, prediction: Prediction, expired: Expired) -> Labeled | None:
        """Buffer ``prediction``, or pair it with an outcome that arrived first."""
        self._prediction_watermark_ms = max(self._prediction_watermark_ms, prediction.timestamp_ms)
        key = (prediction.model_id, prediction.event_id)
        waiting = self._outcomes.pop(key, None)
        if waiting is not None:
            return pair(prediction, waiting[1][0])
        self._predictions[key] = (prediction.timestamp_ms, prediction)
        if len(self._predictions) > self.max_entries:
            _, (_, oldest) = _pop_first(self._predictions)
            expired.predictions.append(oldest)
            expired.evicted += 1
        return None

    def add_outcome(
        self, outcome: Outcome, expired: Expired, handle: object = None
    ) -> Labeled | None:
        """Pair ``outcome`` with its buffered prediction, or buffer it until that comes."""
        self._outcome_watermark_ms = max(self._outcome_watermark_ms, outcome.timestamp_ms)
        key = (outcome.model_id, outcome.event_id)
        waiting = self._predictions.pop(key, None)
        if waiting is not None:
            return pair(waiting[1], outcome)
        self._outcomes[key] = (outcome.timestamp_ms, (outcome, handle))
        if len(self._outcomes) > self.max_entries:
            _, (_, oldest) = _pop_first(self._outcomes)
            expired.outcomes.append(oldest)
            expired.evicted += 1
        return None

    def expire(self, expired: Expired) -> None:
        """Move every entry that waited longer than ``max_wait_ms`` into ``expired``."""
        _expire_front(
            self._predictions, self._outcome_watermark_ms - self.max_wait_ms, expired.predictions
        )
        _expire_front(
            self._outcomes, self._prediction_watermark_ms - self.max_wait_ms, expired.outcomes
        )

    def drop_model(self, model_id: str) -> None:
        """Forget a model's waiting entries (the model was removed from monitoring)."""
        for buffer in (self._predictions, self._outcomes):
            for key in [k for k in buffer if k[0] == model_id]:
                del buffer[key]


def _expire_front(buffer: dict[Any, tuple[int, Any]], horizon_ms: int, sink: list[Any]) -> None:
    while buffer:
        key = next(iter(buffer))
        timestamp_ms, entry = buffer[key]
        if timestamp_ms >= horizon_ms:
            return
        del buffer[key]
        sink.append(entry)


def pair(prediction: Prediction, outcome: Outcome) -> Labeled:
    return Labeled(
        event_id=prediction.event_id,
        model_id=prediction.model_id,
        model_version=prediction.model_version,
        prediction=prediction.prediction,
        score=prediction.score,
        label=outcome.label,
        predicted_at_ms=prediction.timestamp_ms,
        labeled_at_ms=outcome.timestamp_ms,
        source=outcome.source,
    )


def self_labeled(outcome: Outcome) -> Labeled:
    """An outcome that carries its own prediction: no join needed."""
    return Labeled(
        event_id=outcome.event_id,
        model_id=outcome.model_id,
        model_version=outcome.model_version,
        prediction=outcome.prediction,
        score=outcome.score,
        label=outcome.label,
        predicted_at_ms=outcome.timestamp_ms,
        labeled_at_ms=outcome.timestamp_ms,
        source=outcome.source,
    )


def _pop_first(buffer: dict[K, V]) -> tuple[K, V]:
    key = next(iter(buffer))
    return key, buffer.pop(key)
