"""Signed task snapshots in a compacted Kafka topic.

A snapshot holds one task's state (join buffer, model monitors) and the input offsets it
corresponds to. It is pickled, compressed and signed with HMAC-SHA256; a snapshot whose signature
does not verify is refused and never unpickled, because unpickling runs code. On assignment the
newest snapshot of each task is restored and its input partitions are read again from the
snapshot's offsets, so detectors continue where they were (events between the snapshot and the
last commit are processed again; their alerts repeat with the same ``alert_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from service.errors import SnapshotError
from service.pipeline import Task

_MAGIC = b"DLS1"
_MAC_SIZE = hashlib.sha256().digest_size


@dataclass(frozen=True)
class TaskSnapshot:
    partition: int
    # input topic -> next offset to read: the position the state corresponds to
    offsets: dict[str, int]
    task: Task


class SnapshotCodec:
    """Pickle + zlib + HMAC-SHA256. ``decode`` verifies before it unpickles anything."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the snapshot HMAC key must have at least 16 bytes")
        self._key = key

    def encode(self, snapshot: TaskSnapshot) -> bytes:
        body = zlib.compress(pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL), 3)
        return _MAGIC + hmac.new(self._key, body, hashlib.sha256).digest() + body

    def decode(self, data: bytes) -> TaskSnapshot:
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _MAC_SIZE:
            raise SnapshotError("not a driftline snapshot")
        mac = data[len(_MAGIC) : len(_MAGIC) + _MAC_SIZE]
        body = data[len(_MAGIC) + _MAC_SIZE :]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise SnapshotError("snapshot signature does not verify (wrong key or tampered)")
        snapshot = pickle.loads(zlib.decompress(body))  # signature verified above
        if not isinstance(snapshot, TaskSnapshot):
            raise SnapshotError("signed payload is not a task snapshot")
        return snapshot


def snapshot_key(group_id: str, partition: int) -> bytes:
    return f"{group_id}/task-{partition}".encode()


def read_latest(
    consumer_config: dict[str, Any], topic: str, keys: Iterable[bytes], timeout_s: float
) -> dict[bytes, bytes]:
    """The newest value of each of ``keys`` in ``topic`` (read from the beginning to its end)."""
    wanted = set(keys)
    found: dict[bytes, bytes] = {}
    consumer = Consumer(
        {**consumer_config, "group.id": "driftline-state-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return found
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                ends[partition] = high
        if not ends:
            return found
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        remaining = dict(ends)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise SnapshotError(f"reading {topic} did not reach its end in {timeout_s:g} s")
            messages = consumer.consume(1000, 0.2)
            for message in messages:
                if message.error() is not None:
                    continue
                key, value = message.key(), message.value()
                if key in wanted:
                    if value is None:
                        found.pop(key, None)
                    else:
                        found[key] = value
            # Positions, not message offsets: compaction leaves gaps before the end offset.
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= remaining[tp.partition]:
                    del remaining[tp.partition]
    except KafkaException as exc:
        raise SnapshotError(f"cannot read state topic {topic}: {exc}") from exc
    finally:
        consumer.close()
    return found
