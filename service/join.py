"""The prediction–outcome join of one task (one partition of both input topics).

Both sides are buffered: the two topics are fetched independently, so either side may be read far
ahead of the other (always during catch-up). Time is event time, and each side is aged by the
*other* side: an outcome stops waiting once the predictions of its partition (the newest
timestamp read from them) have moved ``max_wait_ms`` past it, and a prediction once the label
stream has (the watermark of the outcomes handed out in order, ``service.ordering``: the caller
passes it, at each outcome it hands out, so an expiry falls at the same place among the labels
whatever the interleaving). Reading one topic ahead therefore never expires entries whose
partner is merely unread, and a replay ages entries exactly as the live service did. Buffers keep
arrival order (dicts), which is event-time order up to producer disorder, so expiry pops from
the front.

Entries are opaque to the join: the pipeline keeps in them what it needs of a waiting event (a
few scalars of a prediction, the raw record of an outcome), never the whole decoded event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]
"""(model_id, event_id)."""

_NEVER = 2**62


@dataclass(slots=True)
class Expired:
    """What left the buffers unmatched, as ``(key, entry)``.

    Predictions lower label coverage; outcomes become dead letters.
    """

    predictions: list[tuple[Key, Any]] = field(default_factory=list)
    outcomes: list[tuple[Key, Any]] = field(default_factory=list)
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

    Examples
    --------
    >>> join, expired = JoinBuffer(max_wait_ms=1000, max_entries=10), Expired()
    >>> join.add_outcome(("m", "e1"), 400, "outcome-1", expired) is None
    True
    >>> join.add_prediction(("m", "e1"), 100, "prediction-1", expired)
    'outcome-1'
    >>> join.add_prediction(("m", "e2"), 500, "prediction-2", expired) is None
    True
    >>> join.add_outcome(("m", "e3"), 2000, "outcome-3", expired)
    >>> join.expire_predictions(2000, expired)  # e2 ages by the label stream
    >>> expired.predictions
    [(('m', 'e2'), 'prediction-2')]
    """

    def __init__(self, max_wait_ms: int, max_entries: int) -> None:
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be non-negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_wait_ms = max_wait_ms
        self.max_entries = max_entries
        self._predictions: dict[Key, tuple[int, Any]] = {}
        self._outcomes: dict[Key, tuple[int, Any]] = {}
        self._prediction_watermark_ms = 0
        self._outcome_watermark_ms = 0
        # At most the timestamp of the buffer's front: an expiry check below it is skipped
        # without a look at the buffer (a dict finds its front in time proportional to the
        # entries removed before it, and the label stream checks at every outcome).
        self._oldest_prediction_ms = _NEVER

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

    def contains_prediction(self, key: Key) -> bool:
        return key in self._predictions

    def add_prediction(self, key: Key, timestamp_ms: int, entry: Any, expired: Expired) -> Any:
        """Buffer a prediction; or, when its outcome arrived first, return that outcome's entry."""
        self._prediction_watermark_ms = max(self._prediction_watermark_ms, timestamp_ms)
        waiting = self._outcomes.pop(key, None)
        if waiting is not None:
            return waiting[1]
        buffer = self._predictions
        buffer[key] = (timestamp_ms, entry)
        self._oldest_prediction_ms = min(self._oldest_prediction_ms, timestamp_ms)
        if len(buffer) > self.max_entries:
            expired.predictions.append(_pop_first(buffer))
            expired.evicted += 1
        return None

    def add_outcome(self, key: Key, timestamp_ms: int, entry: Any, expired: Expired) -> Any:
        """Return the entry of the outcome's waiting prediction, or buffer the outcome."""
        self._outcome_watermark_ms = max(self._outcome_watermark_ms, timestamp_ms)
        waiting = self._predictions.pop(key, None)
        if waiting is not None:
            return waiting[1]
        buffer = self._outcomes
        buffer[key] = (timestamp_ms, entry)
        if len(buffer) > self.max_entries:
            expired.outcomes.append(_pop_first(buffer))
            expired.evicted += 1
        return None

    def expire_predictions(self, label_watermark_ms: int, expired: Expired) -> None:
        """Move the predictions the label stream has passed by ``max_wait_ms`` into
        ``expired`` (from the front: arrival order)."""
        horizon_ms = label_watermark_ms - self.max_wait_ms
        if horizon_ms <= self._oldest_prediction_ms:
            return
        buffer = self._predictions
        _expire_front(buffer, horizon_ms, expired.predictions)
        self._oldest_prediction_ms = buffer[next(iter(buffer))][0] if buffer else _NEVER

    def expire_outcomes(self, expired: Expired) -> None:
        """Move the outcomes the predictions have passed by ``max_wait_ms`` into ``expired``."""
        _expire_front(
            self._outcomes, self._prediction_watermark_ms - self.max_wait_ms, expired.outcomes
        )

    def drop_model(self, model_id: str) -> None:
        """Forget a model's waiting entries (the model was removed from monitoring)."""
        for buffer in (self._predictions, self._outcomes):
            for key in [k for k in buffer if k[0] == model_id]:
                del buffer[key]


def _expire_front(
    buffer: dict[Key, tuple[int, Any]], horizon_ms: int, sink: list[tuple[Key, Any]]
) -> None:
    while buffer:
        key = next(iter(buffer))
        timestamp_ms, entry = buffer[key]
        if timestamp_ms >= horizon_ms:
            return
        del buffer[key]
        sink.append((key, entry))


def _pop_first(buffer: dict[Key, tuple[int, Any]]) -> tuple[Key, Any]:
    key = next(iter(buffer))
    return key, buffer.pop(key)[1]
