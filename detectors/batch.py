"""Columnar batches: one model's events as arrays and lists, built once and read by every signal.

The service decodes a Kafka batch, routes it by model and joins it by index; what reaches a
``ModelMonitor`` is one ``PredictionBatch``, one ``LabeledBatch`` and one ``ExpiredBatch`` per call,
never a Python object per event. Sources (where an event was read) are kept as an offsets array
and only become a ``Source`` when an alert points at one of them.

``from_events`` builds a batch from the per-event dataclasses of ``detectors.events``, for tests,
docs and callers that hold events one by one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.detectors.events import FeatureValue, Labeled, Prediction, Score, Source
from driftline.detectors.labels import labels_equal

__all__ = ["ExpiredBatch", "LabeledBatch", "PredictionBatch", "Sources", "version_runs"]

_INT64 = np.int64


@dataclass(frozen=True, slots=True)
class Sources:
    """Where each event of a batch was read: a topic and partition (one for the whole batch, or
    one per event) and an offset per event."""

    topic: str | Sequence[str]
    partition: int | Sequence[int]
    offsets: np.ndarray

    def at(self, i: int) -> Source:
        topic = self.topic if isinstance(self.topic, str) else self.topic[i]
        partition = self.partition if isinstance(self.partition, int) else self.partition[i]
        return Source(topic, int(partition), int(self.offsets[i]))

    def take(self, start: int, stop: int) -> Sources:
        return Sources(
            self.topic if isinstance(self.topic, str) else self.topic[start:stop],
            self.partition if isinstance(self.partition, int) else self.partition[start:stop],
            self.offsets[start:stop],
        )

    @classmethod
    def of(cls, sources: Sequence[Source]) -> Sources:
        topics = [s.topic for s in sources]
        partitions = [s.partition for s in sources]
        uniform = bool(sources) and topics.count(topics[0]) == len(topics)
        same_partition = bool(sources) and partitions.count(partitions[0]) == len(partitions)
        return cls(
            topics[0] if uniform else topics,
            partitions[0] if same_partition else partitions,
            np.fromiter((s.offset for s in sources), _INT64, len(sources)),
        )


def _equal_versions(versions: Sequence[str | None]) -> bool:
    return not versions or versions.count(versions[0]) == len(versions)


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """Predictions of one model, in read order.

    Attributes
    ----------
    versions
        ``model_version`` of each prediction (None when the event had none).
    timestamps
        Event time, epoch ms (int64).
    rows
        The ``features`` object of each prediction, as decoded (column typing is the reader's,
        because a feature's kind belongs to the model's generation).
    predictions, scores
        The ``prediction`` and ``score`` values as decoded.
    sources
        Where each prediction was read.

    Examples
    --------
    >>> import numpy as np
    >>> batch = PredictionBatch(
    ...     ["v1", "v1"], np.array([10, 20]), [{"a": 1.0}, {"a": 2.0}], [0, 1], [0.2, 0.9],
    ...     Sources("predictions", 0, np.array([5, 6])),
    ... )
    >>> batch.n, batch.sources.at(1)
    (2, Source(topic='predictions', partition=0, offset=6))
    >>> batch.take(1, 2).rows
    [{'a': 2.0}]
    """

    versions: Sequence[str | None]
    timestamps: np.ndarray
    rows: Sequence[dict[str, FeatureValue]]
    predictions: Sequence[object]
    scores: Sequence[Score]
    sources: Sources

    @property
    def n(self) -> int:
        return len(self.rows)

    def take(self, start: int, stop: int) -> PredictionBatch:
        return PredictionBatch(
            self.versions[start:stop],
            self.timestamps[start:stop],
            self.rows[start:stop],
            self.predictions[start:stop],
            self.scores[start:stop],
            self.sources.take(start, stop),
        )

    @classmethod
    def from_events(cls, events: Sequence[Prediction]) -> PredictionBatch:
        return cls(
            [p.model_version for p in events],
            np.fromiter((p.timestamp_ms for p in events), _INT64, len(events)),
            [p.features for p in events],
            [p.prediction for p in events],
            [p.score for p in events],
            Sources.of([p.source for p in events]),
        )


@dataclass(frozen=True, slots=True)
class LabeledBatch:
    """Predictions joined with their outcomes (the error stream) of one model, in join order.

    ``sources`` are the outcomes' (what completed each pair). ``correct`` (classification: the
    prediction equals the label in canonical form) is computed once, on first use.
    ``expired``: predictions of the same version that expired without an outcome among these
    events, each after the first ``positions[i]`` of them (the label tracker takes them in that
    order); None when they come separately. ``segments``: each prediction's ``segment``
    object (None for one without), or None when no prediction of the batch had one.

    Examples
    --------
    >>> import numpy as np
    >>> batch = LabeledBatch(
    ...     [None] * 3, [1, 0, "1"], [1, 1, 1], [None] * 3, np.array([1, 2, 3]),
    ...     np.array([4, 5, 6]), Sources("outcomes", 0, np.array([0, 1, 2])),
    ... )
    >>> batch.correct.tolist()
    [True, False, False]
    """

    versions: Sequence[str | None]
    predictions: Sequence[object]
    labels: Sequence[object]
    scores: Sequence[Score]
    predicted_at: np.ndarray
    labeled_at: np.ndarray
    sources: Sources
    expired: ExpiredBatch | None = None
    segments: Sequence[dict[str, str] | None] | None = None
    _cache: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cache", {})

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> np.ndarray:
        cache = self._cache
        assert cache is not None
        value: np.ndarray | None = cache.get("correct")
        if value is None:
            value = cache["correct"] = labels_equal(self.predictions, self.labels)
        return value

    def take(self, start: int, stop: int) -> LabeledBatch:
        return LabeledBatch(
            self.versions[start:stop],
            self.predictions[start:stop],
            self.labels[start:stop],
            self.scores[start:stop],
            self.predicted_at[start:stop],
            self.labeled_at[start:stop],
            self.sources.take(start, stop),
            segments=None if self.segments is None else self.segments[start:stop],
        )

    def select(self, rows: Sequence[int]) -> LabeledBatch:
        """The events at ``rows`` (increasing), in that order."""
        index = np.asarray(rows, dtype=np.intp)
        sources = self.sources
        topic = sources.topic
        partition = sources.partition
        return LabeledBatch(
            [self.versions[i] for i in rows],
            [self.predictions[i] for i in rows],
            [self.labels[i] for i in rows],
            [self.scores[i] for i in rows],
            self.predicted_at[index],
            self.labeled_at[index],
            Sources(
                topic if isinstance(topic, str) else [topic[i] for i in rows],
                partition if isinstance(partition, int) else [partition[i] for i in rows],
                sources.offsets[index],
            ),
            segments=None if self.segments is None else [self.segments[i] for i in rows],
        )

    @classmethod
    def from_events(cls, events: Sequence[Labeled]) -> LabeledBatch:
        n = len(events)
        segments = [x.segment for x in events]
        return cls(
            [x.model_version for x in events],
            [x.prediction for x in events],
            [x.label for x in events],
            [x.score for x in events],
            np.fromiter((x.predicted_at_ms for x in events), _INT64, n),
            np.fromiter((x.labeled_at_ms for x in events), _INT64, n),
            Sources.of([x.source for x in events]),
            segments=segments if any(s is not None for s in segments) else None,
        )


@dataclass(frozen=True, slots=True)
class ExpiredBatch:
    """Predictions of one model whose outcome never came (they lower label coverage).

    ``positions``: where each expired among the labelled events of the same call (after the
    first ``positions[i]`` of them; non-decreasing), when the caller knows it.
    """

    versions: Sequence[str | None]
    timestamps: np.ndarray
    positions: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.versions)

    def take(self, start: int, stop: int) -> ExpiredBatch:
        return ExpiredBatch(
            self.versions[start:stop],
            self.timestamps[start:stop],
            None if self.positions is None else self.positions[start:stop],
        )

    @classmethod
    def from_events(cls, events: Sequence[Prediction]) -> ExpiredBatch:
        return cls(
            [p.model_version for p in events],
            np.fromiter((p.timestamp_ms for p in events), _INT64, len(events)),
        )


def version_runs(
    versions: Sequence[str | None], current: str | None
) -> Iterator[tuple[str | None, int, int]]:
    """(version, start, stop) of each run of one version; an event without a version belongs to
    ``current``, the version judged when the batch arrived.

    >>> list(version_runs(["a", "a", "b", None], "a"))
    [('a', 0, 2), ('b', 2, 3), ('a', 3, 4)]
    >>> list(version_runs([None, None], "v1"))
    [('v1', 0, 2)]
    """
    n = len(versions)
    if n == 0:
        return
    if _equal_versions(versions):
        yield (versions[0] if versions[0] is not None else current), 0, n
        return
    start = 0
    version = current
    for i, given in enumerate(versions):
        v = given if given is not None else current
        if i > start and v != version:
            yield version, start, i
            start = i
        version = v
    yield version, start, n
