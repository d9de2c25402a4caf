"""Synthetic input of the benchmarks: many models at once, drawn in bulk.

Every model is the 20-feature model of ``make quality`` (``bench/quality.py``: 15 numeric features
of five shapes, 5 categorical with 3-8 categories, a binary prediction with a probability score,
accuracy 0.90). Its draws are made for all models and events in one numpy call per feature, so
1,000 models cost no more than one model with 1,000 times the events (``quality.generate_chunk``
pays about 9 ms of set-up per call). Seeded: the same arguments give the same bytes.

The stream is in event order: event *j* of every model (model 0 first), then the outcomes of event
*j - LABEL_LAG* of every model; the outcomes of the last events close the stream. Event times
step ``STEP_MS`` per event; an outcome is ``LABEL_DELAY_MS`` after its prediction. With
``live=True`` the ``timestamp`` of every value is the placeholder ``TS_MARK`` instead, for the
producer to replace by the wall time at which it produces the message (``stamp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import quality as q
from driftline.service.pipeline import InputRecord, Role
from driftline.service.replay import json_bytes

TS_MARK = 9_999_999_999_999
_MARK_BYTES = b'"timestamp":' + str(TS_MARK).encode()
_SHIFTED = "n01_normal"


@dataclass(frozen=True)
class Change:
    """From event ``at`` on, the model's accuracy is ``accuracy`` and feature n01_normal is
    shifted by ``shift`` standard deviations."""

    at: int
    accuracy: float = 0.81
    shift: float = 0.5


@dataclass
class Stream:
    """The messages of a run in the order they are produced, and the same messages as the
    ``InputRecord`` s the service would read (offsets as Kafka assigns them)."""

    topics: tuple[str, str]
    partitions: int
    model_ids: list[str]
    roles: list[Role]
    partition_of: list[int]
    keys: list[bytes]
    values: list[bytes]

    @property
    def total(self) -> int:
        return len(self.values)

    @property
    def bytes(self) -> int:
        return sum(map(len, self.values))

    def records(self) -> list[InputRecord]:
        offsets: dict[tuple[str, int], int] = {}
        out = []
        for role, partition, key, value in zip(
            self.roles, self.partition_of, self.keys, self.values, strict=True
        ):
            topic = self.topics[0] if role == "prediction" else self.topics[1]
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            out.append(InputRecord(role, topic, partition, offset, key, value))
        return out


def stamp(value: bytes, now_ms: int) -> bytes:
    """A live value with its timestamp placeholder replaced by ``now_ms``."""
    return value.replace(_MARK_BYTES, b'"timestamp":%d' % now_ms, 1)


def generate(
    models: int,
    events: int,
    *,
    topics: tuple[str, str],
    partitions: int,
    prefix: str = "bench-m",
    seed: int = 500,
    changes: dict[int, Change] | None = None,
    live: bool = False,
) -> Stream:
    """``events`` predictions and outcomes of each of ``models`` models; model *k* is
    ``f"{prefix}{k}"`` on partition ``k % partitions`` and changes as ``changes[k]`` says."""
    changes = changes or {}
    n = models * events
    rng = np.random.default_rng([seed, models, events])
    model_of = np.tile(np.arange(models), events)  # row r = event j of model k: r = j * models + k
    event_of = np.repeat(np.arange(events), models)
    accuracy = np.full(n, q.ACCURACY)
    shift = np.zeros(n)
    for k, change in changes.items():
        after = (model_of == k) & (event_of >= change.at)
        accuracy[after] = change.accuracy
        shift[after] = change.shift
    numeric = np.empty((n, len(q.NUMERIC)))
    for c, feature in enumerate(q.NUMERIC):
        numeric[:, c] = feature.draw(rng, n)
        if feature.name == _SHIFTED:
            numeric[:, c] += shift * feature.std
    numeric_rows: list[list[Any]] = np.round(numeric, 4).tolist()
    categorical = [
        np.array(f.categories, dtype=object)[rng.choice(len(f.categories), n, p=list(f.shares))]
        for f in q.CATEGORICAL
    ]
    cat_rows: list[list[Any]] = np.stack(categorical, axis=1).tolist()
    predicted = rng.random(n) < q.POSITIVE_RATE
    label = np.where(rng.random(n) < accuracy, predicted, ~predicted)
    confidence = 0.5 + 0.5 * rng.beta(q.CONFIDENCE_BETA, 1.0, n)
    scores: list[float] = np.round(np.where(predicted, confidence, 1.0 - confidence), 6).tolist()
    predicted_list: list[int] = predicted.astype(int).tolist()
    labels: list[int] = label.astype(int).tolist()

    model_ids = [f"{prefix}{k}" for k in range(models)]
    keys = [m.encode() for m in model_ids]
    names = q.FEATURE_NAMES
    dumps = json_bytes  # a run holds up to a million values
    predictions: list[bytes] = []
    outcomes: list[bytes] = []
    for r in range(n):
        j, k = divmod(r, models)
        model_id = model_ids[k]
        ts = TS_MARK if live else q.START_MS + j * q.STEP_MS
        event_id = f"{model_id}-{j}"
        predictions.append(
            dumps(
                {
                    "event_id": event_id,
                    "model_id": model_id,
                    "model_version": "v1",
                    "timestamp": ts,
                    "features": dict(zip(names, numeric_rows[r] + cat_rows[r], strict=True)),
                    "prediction": predicted_list[r],
                    "score": scores[r],
                }
            )
        )
        outcomes.append(
            dumps(
                {
                    "event_id": event_id,
                    "model_id": model_id,
                    "timestamp": ts if live else ts + q.LABEL_DELAY_MS,
                    "label": labels[r],
                }
            )
        )

    stream = Stream(topics, partitions, model_ids, [], [], [], [])
    lag = q.LABEL_LAG

    def add(role: Role, k: int, value: bytes) -> None:
        stream.roles.append(role)
        stream.partition_of.append(k % partitions)
        stream.keys.append(keys[k])
        stream.values.append(value)

    for j in range(events + lag):
        if j < events:
            base = j * models
            for k in range(models):
                add("prediction", k, predictions[base + k])
        if j >= lag:
            base = (j - lag) * models
            for k in range(models):
                add("outcome", k, outcomes[base + k])
    return stream
