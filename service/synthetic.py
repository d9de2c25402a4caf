"""Seeded synthetic prediction/outcome streams with known change points.

Used by ``make demo``, ``make quality``, the benchmarks and the integration tests, so all of them
speak about the same kind of stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.detectors.events import Labeled, Prediction, Source

CATEGORIES = ("a", "b", "c", "d", "e", "f")


@dataclass(frozen=True)
class ModelStream:
    """A classification model whose stream may change at ``change_at`` (event index)."""

    model_id: str
    seed: int = 0
    numeric_features: int = 4
    categorical_features: int = 2
    accuracy: float = 0.92
    change_at: int | None = None
    accuracy_after: float | None = None
    # feature name -> mean shift in standard deviations after the change
    numeric_shift: dict[str, float] = field(default_factory=dict)
    # feature name -> share of category "a" after the change
    category_share: dict[str, float] = field(default_factory=dict)
    # feature name -> null rate after the change
    null_rate: dict[str, float] = field(default_factory=dict)
    start_ms: int = 1_790_000_000_000
    step_ms: int = 100
    label_delay_ms: int = 500
    model_version: str = "v1"


def categorical_shares(first: float = 0.15) -> np.ndarray:
    rest = (1.0 - first) / (len(CATEGORIES) - 1)
    return np.array([first] + [rest] * (len(CATEGORIES) - 1))


def generate(
    spec: ModelStream, n: int, offset: int = 0
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``n`` (prediction, outcome) event pairs, events ``offset .. offset+n-1``."""
    rng = np.random.default_rng([spec.seed, offset])
    index = np.arange(offset, offset + n)
    after = np.zeros(n, bool) if spec.change_at is None else index >= spec.change_at
    numeric = rng.standard_normal((n, spec.numeric_features))
    for j in range(spec.numeric_features):
        shift = spec.numeric_shift.get(f"x{j}", 0.0)
        numeric[after, j] += shift
    base = categorical_shares()
    cats = np.empty((n, spec.categorical_features), dtype=object)
    for j in range(spec.categorical_features):
        name = f"c{j}"
        codes = rng.choice(len(CATEGORIES), size=n, p=base)
        if name in spec.category_share and after.any():
            changed = categorical_shares(spec.category_share[name])
            codes[after] = rng.choice(len(CATEGORIES), size=int(after.sum()), p=changed)
        cats[:, j] = np.array(CATEGORIES)[codes]
    accuracy = np.full(n, spec.accuracy)
    if spec.accuracy_after is not None:
        accuracy[after] = spec.accuracy_after
    label = rng.random(n) < 0.3
    correct = rng.random(n) < accuracy
    predicted = np.where(correct, label, ~label)
    noise = rng.uniform(0.0, 0.35, n)
    score = np.where(predicted, 1.0 - noise, noise)
    nulls = {name: rng.random(n) < rate for name, rate in spec.null_rate.items()}
    for i in range(n):
        event_id = f"{spec.model_id}-{index[i]}"
        ts = spec.start_ms + int(index[i]) * spec.step_ms
        features: dict[str, Any] = {
            f"x{j}": round(float(numeric[i, j]), 6) for j in range(spec.numeric_features)
        }
        for j in range(spec.categorical_features):
            features[f"c{j}"] = cats[i, j]
        if after[i]:
            for name, mask in nulls.items():
                if mask[i]:
                    features[name] = None
        prediction = {
            "event_id": event_id,
            "model_id": spec.model_id,
            "model_version": spec.model_version,
            "timestamp": ts,
            "features": features,
            "prediction": int(predicted[i]),
            "score": round(float(score[i]), 6),
        }
        outcome = {
            "event_id": event_id,
            "model_id": spec.model_id,
            "timestamp": ts + spec.label_delay_ms,
            "label": int(label[i]),
        }
        yield prediction, outcome


def as_events(
    pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]], offset: int = 0
) -> tuple[list[Prediction], list[Labeled]]:
    """(prediction, outcome) event documents as a monitor's events: each prediction, and the
    same prediction labelled by its outcome. Pair ``i`` was read at offset ``offset + i`` of
    partition 0 of topics "predictions" and "outcomes"."""
    predictions: list[Prediction] = []
    labeled: list[Labeled] = []
    for at, (p, o) in enumerate(pairs, start=offset):
        predictions.append(
            Prediction(
                p["event_id"],
                p["model_id"],
                p["model_version"],
                p["timestamp"],
                p["features"],
                p["prediction"],
                p["score"],
                None,
                Source("predictions", 0, at),
            )
        )
        labeled.append(
            Labeled(
                p["event_id"],
                p["model_id"],
                p["model_version"],
                p["prediction"],
                p["score"],
                o["label"],
                p["timestamp"],
                o["timestamp"],
                Source("outcomes", 0, at),
            )
        )
    return predictions, labeled
