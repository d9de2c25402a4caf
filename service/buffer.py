"""Per-model micro-batches: a model's events wait here until there are enough to observe at once.

With many models each model's share of a Kafka batch is tiny, and a monitor call has a fixed cost
(column building, cadence bookkeeping) whatever its size. A model's events are therefore buffered
until ``processing.min_model_batch`` of them are waiting, or the oldest has waited
``processing.max_buffer_ms`` (processing time, in the live service only). Every detector's
decisions are independent of how its stream is cut into calls, so buffering changes when alerts
go out, never which.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import numpy as np

from driftline.detectors.batch import ExpiredBatch, LabeledBatch, PredictionBatch, Sources

_INT64 = np.int64
_PREDICTION_FIELDS = attrgetter("model_version", "timestamp", "features", "prediction", "score")


class ModelBuffer:
    """The events of one model read since its last monitor call.

    Predictions are kept as their decoded structs; labelled events as
    ``(version, prediction, score, predicted_at_ms, label, labeled_at_ms, topic, offset)``;
    expired predictions as ``(version, timestamp_ms, position)`` (after the first ``position``
    labelled events). ``records`` are the raw inputs behind them, dead-lettered if the model's
    processing fails. ``prediction_marks`` and ``label_marks`` are the event time each stream of
    the task had reached at each event (``detectors.held``).
    """

    __slots__ = (
        "expired",
        "label_marks",
        "labeled",
        "n",
        "prediction_marks",
        "prediction_offsets",
        "prediction_topic",
        "predictions",
        "records",
        "since",
    )

    def __init__(self) -> None:
        self.predictions: list[Any] = []
        self.prediction_offsets: list[int] = []
        self.prediction_topic = ""
        self.prediction_marks: list[int] = []
        self.labeled: list[tuple[Any, ...]] = []
        self.label_marks: list[int] = []
        self.expired: list[tuple[str | None, int, int]] = []
        self.records: list[Any] = []
        self.n = 0
        # Processing time of the oldest waiting event (None when empty or when not timed).
        self.since: float | None = None

    # add_prediction and add_labeled run once per record: the bookkeeping of _added is
    # repeated in them rather than called.
    def add_prediction(self, doc: Any, record: Any, now: float | None, mark: int) -> None:
        if not self.predictions:
            self.prediction_topic = record.topic
        self.predictions.append(doc)
        self.prediction_offsets.append(record.offset)
        self.prediction_marks.append(mark)
        self.records.append(record)
        if not self.n:
            self.since = now
        self.n += 1

    def add_labeled(
        self, labeled: tuple[Any, ...], record: Any, now: float | None, mark: int
    ) -> None:
        """A labelled event; ``record`` is the outcome read now, or None when the outcome was
        read earlier and waited in the join for this prediction."""
        self.labeled.append(labeled)
        self.label_marks.append(mark)
        if record is not None:
            self.records.append(record)
        if not self.n:
            self.since = now
        self.n += 1

    def add_expired(self, version: str | None, timestamp_ms: int, now: float | None) -> None:
        """A prediction that expired now: after the labelled events waiting so far."""
        self.expired.append((version, timestamp_ms, len(self.labeled)))
        self._added(now)

    def _added(self, now: float | None) -> None:
        if not self.n:
            self.since = now
        self.n += 1

    def clear(self) -> None:
        self.predictions = []
        self.prediction_offsets = []
        self.prediction_marks = []
        self.labeled = []
        self.label_marks = []
        self.expired = []
        self.records = []
        self.n = 0
        self.since = None

    def first_offsets(self) -> dict[str, int]:
        """The lowest offset of each input topic among the waiting records: the first of each,
        since records arrive in offset order per partition."""
        out: dict[str, int] = {}
        for record in self.records:
            if record.topic not in out:
                out[record.topic] = record.offset
                if len(out) == 2:  # a task reads two topics
                    break
        return out

    def marks(self) -> tuple[np.ndarray, np.ndarray]:
        """The marks of the waiting predictions and labelled events, as arrays."""
        return (
            np.array(self.prediction_marks, _INT64),
            np.array(self.label_marks, _INT64),
        )

    def batches(self, partition: int) -> tuple[PredictionBatch, LabeledBatch, ExpiredBatch]:
        """The waiting events as one columnar batch per kind."""
        docs = self.predictions
        n = len(docs)
        if n:
            versions, timestamps, rows, predictions, scores = zip(
                *map(_PREDICTION_FIELDS, docs), strict=True
            )
        else:
            versions = timestamps = rows = predictions = scores = ()
        prediction_batch = PredictionBatch(
            versions,
            np.fromiter(timestamps, _INT64, n),
            rows,
            predictions,
            scores,
            Sources(self.prediction_topic, partition, np.array(self.prediction_offsets, _INT64)),
        )
        m = len(self.labeled)
        if m:
            (lv, lp, ls, predicted_at, labels, labeled_at, topics, offsets, segments) = zip(
                *self.labeled, strict=True
            )
            topic: str | tuple[str, ...] = topics[0] if topics.count(topics[0]) == m else topics
        else:
            lv = lp = ls = predicted_at = labels = labeled_at = offsets = segments = ()
            topic = ""
        labeled_batch = LabeledBatch(
            lv,
            lp,
            labels,
            ls,
            np.fromiter(predicted_at, _INT64, m),
            np.fromiter(labeled_at, _INT64, m),
            Sources(topic, partition, np.fromiter(offsets, _INT64, m)),
            segments=segments if segments.count(None) != m else None,
        )
        k = len(self.expired)
        ev, et, positions = zip(*self.expired, strict=True) if k else ((), (), ())
        expired_batch = ExpiredBatch(
            ev, np.fromiter(et, _INT64, k), np.fromiter(positions, _INT64, k)
        )
        return prediction_batch, labeled_batch, expired_batch
