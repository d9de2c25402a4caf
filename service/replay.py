"""The file adapter: the same pipeline as the Kafka service, fed from JSON lines.

Each input line is ``{"topic": "predictions" | "outcomes", "key": ..., "value": {event}}``. An
alert's ``source.offset`` is the 0-based line number of the record that triggered it, and the same
input gives byte-identical output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from driftline.service.config import Config
from driftline.service.pipeline import (
    BatchResult,
    DeadLetter,
    InputRecord,
    Pipeline,
    ProfileLoader,
    Role,
)

_ROLES: dict[str, Role] = {"predictions": "prediction", "outcomes": "outcome"}


def read_records(lines: Iterable[bytes]) -> Iterator[InputRecord | DeadLetter]:
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            envelope = orjson.loads(stripped)
            topic = envelope["topic"]
            role = _ROLES[topic]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad = InputRecord("prediction", "replay", 0, number, None, stripped)
            yield DeadLetter(bad, "invalid_json", "replay line is not a {topic, key, value} record")
            continue
        key = envelope.get("key")
        value = envelope.get("value")
        yield InputRecord(
            role=role,
            topic=topic,
            partition=0,
            offset=number,
            key=None if key is None else str(key).encode(),
            # The event is re-serialised so the decoder sees exactly what Kafka would carry.
            value=None if value is None else json_bytes(value),
        )


def json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON, in bytes that hold only their length: orjson's own keep a
    4-8 KB allocation whatever their length, and a model's buffer holds its records until it
    is observed (a replay, or a benchmark's input, holds many)."""
    return bytes(memoryview(orjson.dumps(value)))


def replay(
    config: Config,
    source: IO[bytes],
    sink: IO[bytes],
    profile_loader: ProfileLoader | None = None,
    dead_letters: IO[bytes] | None = None,
    *,
    emitted: list[dict[str, Any]] | None = None,
) -> tuple[int, int, int]:
    """Run the pipeline over ``source``; write alerts as JSON lines. Returns counts
    (records, alerts, dead letters). Everything written to ``sink`` is also appended to
    ``emitted`` when given (``--summary``)."""
    pipeline = Pipeline(config, profile_loader=profile_loader)
    pipeline.assign([0])
    batch_size = config.processing.replay_batch_size
    counts = [0, 0, 0]
    batch: list[InputRecord] = []

    def write(result: BatchResult) -> None:
        for alert in result.alerts:
            sink.write(orjson.dumps(alert, option=orjson.OPT_SORT_KEYS) + b"\n")
        counts[1] += len(result.alerts)
        if emitted is not None:
            emitted.extend(result.alerts)
        for letter in result.dead_letters:
            _write_dead_letter(letter, dead_letters)
        counts[2] += len(result.dead_letters)

    for item in read_records(source):
        counts[0] += 1
        if isinstance(item, DeadLetter):
            _write_dead_letter(item, dead_letters)
            counts[2] += 1
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            write(pipeline.process(batch))
            batch.clear()
    write(pipeline.process(batch))
    # The events still waiting in models' buffers (``processing.min_model_batch``).
    write(pipeline.flush(end_of_input=True))
    return counts[0], counts[1], counts[2]


def _write_dead_letter(letter: DeadLetter, sink: IO[bytes] | None) -> None:
    if sink is None:
        return
    record = letter.record
    sink.write(
        orjson.dumps(
            {
                "reason": letter.reason,
                "detail": letter.detail,
                "line": record.offset,
                "topic": record.topic,
                "value": (record.value or b"").decode("utf-8", "replace"),
            },
            option=orjson.OPT_SORT_KEYS,
        )
        + b"\n"
    )
