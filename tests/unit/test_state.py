"""Snapshot signing: a verified round trip; anything unsigned or tampered is refused unread."""

from __future__ import annotations

import pickle

import pytest

from detectors.monitor import ModelMonitor
from detectors.settings import MonitorSettings
from service.errors import SnapshotError
from service.join import JoinBuffer
from service.pipeline import Task
from service.state import SnapshotCodec, TaskSnapshot


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('unpickled an unverified snapshot')",))


def snapshot() -> TaskSnapshot:
    task = Task(3, JoinBuffer(1000, 10))
    task.monitors["m"] = ModelMonitor("m", MonitorSettings())
    return TaskSnapshot(3, {"predictions": 10, "outcomes": 7}, task)


def test_round_trip_keeps_the_task() -> None:
    codec = SnapshotCodec(b"0123456789abcdef0123")
    restored = codec.decode(codec.encode(snapshot()))
    assert restored.partition == 3 and restored.offsets == {"predictions": 10, "outcomes": 7}
    assert list(restored.task.monitors) == ["m"]


def test_tampered_wrong_key_and_unsigned_payloads_are_refused_without_unpickling() -> None:
    codec = SnapshotCodec(b"0123456789abcdef0123")
    data = bytearray(codec.encode(snapshot()))
    data[-1] ^= 1
    with pytest.raises(SnapshotError, match="signature"):
        codec.decode(bytes(data))
    other = SnapshotCodec(b"another key, also long enough")
    with pytest.raises(SnapshotError, match="signature"):
        codec.decode(other.encode(snapshot()))
    # A raw pickle that would run code if loaded: refused before loading.
    with pytest.raises(SnapshotError):
        codec.decode(pickle.dumps(Boom()))


def test_short_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SnapshotCodec(b"short")
