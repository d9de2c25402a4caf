"""The events the core is fed: decoded, validated and (for outcomes) joined by the service."""

from __future__ import annotations

from dataclasses import dataclass

FeatureValue = float | int | str | bool | None
Score = float | dict[str, float] | None


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event was read: the coordinates an alert points back to."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Prediction:
    event_id: str
    model_id: str
    model_version: str | None
    timestamp_ms: int
    features: dict[str, FeatureValue]
    prediction: object
    score: Score
    segment: dict[str, str] | None
    source: Source


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str
    model_id: str
    model_version: str | None
    timestamp_ms: int
    label: object
    # An outcome that carries its own prediction needs no join.
    prediction: object | None
    score: Score
    source: Source

    @property
    def self_contained(self) -> bool:
        return self.prediction is not None


@dataclass(frozen=True, slots=True)
class Labeled:
    """A prediction joined with its outcome: one element of the error stream."""

    event_id: str
    model_id: str
    model_version: str | None
    prediction: object
    score: Score
    label: object
    predicted_at_ms: int
    labeled_at_ms: int
    # The outcome that completed the pair: it is what "triggered" a label-side alert.
    source: Source
    segment: dict[str, str] | None = None  # the prediction's
