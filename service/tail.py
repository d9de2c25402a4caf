"""``driftline alerts``: read the alerts topic (alerts and incident events) as a subscriber would.

It reads with ``isolation.level=read_committed`` under a throw-away consumer group, from the
beginning of the topic, keeps the events of ``--model`` and ``--kind`` (``incident`` for incident
events), and prints them: one readable line per event on a terminal, JSON lines otherwise (for
``jq`` and scripts). Without ``--follow`` it stops once it has read everything there is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException

from driftline.service.config import Config

__all__ = ["describe", "read_alerts"]


def read_alerts(
    config: Config,
    *,
    models: list[str] | None = None,
    kinds: list[str] | None = None,
    follow: bool = False,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """The events of the alerts topic, oldest first, that match ``models`` and ``kinds``."""
    consumer = Consumer(
        {
            **config.kafka_properties(),
            "group.id": f"driftline-alerts-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([config.topics.alerts])
    at_end: set[int] = set()
    try:
        while not stopped():
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                at_end.add(message.partition() or 0)
                assigned = {p.partition for p in consumer.assignment()}
                if not follow and assigned and at_end >= assigned:
                    return
                continue
            at_end.discard(message.partition() or 0)
            event = orjson.loads(message.value() or b"null")
            if not isinstance(event, dict):
                continue
            if models and event.get("model_id") not in models:
                continue
            if kinds and event.get("kind") not in kinds:
                continue
            yield event
    finally:
        consumer.close()


def describe(event: dict[str, Any]) -> str:
    """One line for a person: when, which model, what happened.

    Examples
    --------
    >>> describe({"kind": "data_drift", "detected_at": "2026-01-01T00:00:00.000Z",
    ...           "model_id": "m", "status": "firing", "severity": "warning",
    ...           "detector": "ks", "feature": "x1", "value": 1e-7, "threshold": 5e-6})
    '2026-01-01T00:00:00.000Z  m  FIRING   warning   data_drift/ks/x1 value=1e-07 threshold=5e-06'
    """
    when, model = event.get("detected_at", "?"), event.get("model_id", "?")
    if event.get("kind") == "incident":
        kinds = ",".join(event.get("kinds") or [])
        return (
            f"{when}  {model}  INCIDENT {event.get('status', '?'):<9} "
            f"{event.get('severity', '?'):<9} {event.get('incident_id', '?')} "
            f"kinds={kinds} firing={event.get('firing')}"
        )
    subject = event.get("feature") or event.get("metric") or ""
    segment = event.get("segment")
    if segment:
        subject += "@" + ",".join(f"{k}={v}" for k, v in sorted(segment.items()))
    value, threshold = event.get("value"), event.get("threshold")
    pairs = (("value", value), ("threshold", threshold))
    numbers = " ".join(f"{name}={x:.4g}" for name, x in pairs if x is not None)
    return (
        f"{when}  {model}  {event.get('status', '?').upper():<8} {event.get('severity', '?'):<9} "
        f"{event.get('kind')}/{event.get('detector')}/{subject} {numbers}"
    ).rstrip()


def write(events: Iterator[dict[str, Any]], out: IO[bytes], readable: bool) -> int:
    """Print ``events``; the number printed."""
    n = 0
    for event in events:
        line = describe(event).encode() if readable else orjson.dumps(event)
        out.write(line + b"\n")
        out.flush()
        n += 1
    return n
