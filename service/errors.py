"""The service's one small exception hierarchy."""

from __future__ import annotations


class DriftlineError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(DriftlineError):
    """The configuration is invalid. The message names the key and the problem."""


class KafkaError(DriftlineError):
    """A Kafka operation failed; ``code`` keeps librdkafka's error code name."""

    def __init__(self, message: str, code: str | None = None, retriable: bool = False) -> None:
        super().__init__(message if code is None else f"{message} [{code}]")
        self.code = code
        self.retriable = retriable


class TopologyError(DriftlineError):
    """The input topics are not usable (missing, or not co-partitioned)."""


class SnapshotError(DriftlineError):
    """A state snapshot failed its signature check or could not be decoded."""
