"""The state format: driftline's objects round-trip exactly, and nothing foreign is ever built.

A record is read without pickle: classes are looked up only among driftline's own, functions only
in an allowlist of modules, and a record that names anything else is refused before any of it is
used.
"""

from __future__ import annotations

import pickle
import zlib
from collections import Counter, OrderedDict, deque
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
import zstandard

from driftline.detectors.events import Labeled, Source
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.settings import MonitorSettings
from driftline.service.errors import SnapshotError
from driftline.service.join import JoinBuffer
from driftline.service.pipeline import InputRecord, Pipeline, Seen
from driftline.service.state_format import (
    _ARRAY,
    _FUNCTION,
    _HELPER,
    _OBJECT,
    _REF,
    STATE_FORMAT,
    StateCodec,
    digest,
    external_paths,
    from_tree,
    to_tree,
)
from driftline.service.synthetic import ModelStream

from .test_buffering import config, records

KEY = b"0123456789abcdef0123"
LAYOUT = Path(__file__).with_name("state_layout.json")


def busy_pipeline(n: int = 4000) -> tuple[Pipeline, list[Any], list[dict[str, Any]]]:
    """A pipeline whose models went through drift, quality and accuracy changes; the rest of
    the records; the alerts so far."""
    streams = [
        ModelStream("a", seed=1, change_at=2500, accuracy_after=0.6, numeric_shift={"x1": 1.5}),
        ModelStream("b", seed=2, change_at=2500, null_rate={"x2": 0.4}, category_share={"c0": 0.6}),
    ]
    data = records(streams, n)
    pipeline = Pipeline(config())
    alerts: list[dict[str, Any]] = []
    cut = len(data) * 3 // 4
    for i in range(0, cut, 500):
        alerts += pipeline.process(data[i : min(i + 500, cut)]).alerts
    alerts += pipeline.flush().alerts
    return pipeline, data[cut:], alerts


def roots(monitor: ModelMonitor) -> dict[str, Any]:
    return {"settings": monitor.settings, "profile": monitor.profile}


def test_a_restored_monitor_decides_exactly_as_the_original() -> None:
    """Both monitors of a busy pipeline go through encode -> bytes -> decode; a second pipeline
    holding the restored monitors (and the join) emits the same alerts, bit for bit."""
    original, rest, before = busy_pipeline()
    assert {a["kind"] for a in before} >= {"data_drift", "data_quality"}
    codec = StateCodec(KEY)
    restored = Pipeline(config())
    source = original.tasks[0]
    record = codec.encode({"task": to_tree((source.join, source.outcomes))})
    monitors = {}
    for model_id, monitor in source.monitors.items():
        data = codec.encode({"monitor": to_tree(monitor, roots(monitor))})
        restored_monitor = from_tree(codec.decode(data)["monitor"], roots(monitor))
        monitors[model_id] = (restored_monitor, Seen(0, 0, 0))  # it observed nothing ahead
    restored.restore(0, tuple(from_tree(codec.decode(record)["task"])), monitors)
    expected, got = [], []
    for i in range(0, len(rest), 700):
        expected += original.process(rest[i : i + 700]).alerts
        got += restored.process(rest[i : i + 700]).alerts
    expected += original.flush(end_of_input=True).alerts
    got += restored.flush(end_of_input=True).alerts
    assert expected, "the rest of the streams must alert for this test to mean anything"
    assert orjson.dumps(got) == orjson.dumps(expected)
    for model_id, monitor in original.tasks[0].monitors.items():
        assert restored.tasks[0].monitors[model_id].kpi_snapshot() == monitor.kpi_snapshot()


def test_shared_objects_and_cycles_keep_their_identity() -> None:
    shared = np.arange(5, dtype=np.float32)
    ring: deque[Any] = deque([1, (2, 3)], maxlen=4)
    join = JoinBuffer(10, 5)
    join.cycle = join  # type: ignore[attr-defined]
    join.items = [shared, shared, ring, ring, Counter("aab"), OrderedDict(b=1, a=2)]  # type: ignore[attr-defined]
    join.keys = {("m", "e"): frozenset({1, 2}), 3: {4.5}}  # type: ignore[attr-defined]
    back = from_tree(to_tree(join))
    assert back.cycle is back
    a, b, r1, r2, counts, ordered = back.items
    assert a is b and r1 is r2 and r1.maxlen == 4 and list(r1) == [1, (2, 3)]
    assert a.dtype == np.float32 and a.tolist() == shared.tolist() and a.flags.writeable
    assert counts == Counter("aab") and type(counts) is Counter
    assert list(ordered.items()) == [("b", 1), ("a", 2)] and type(ordered) is OrderedDict
    assert back.keys == {("m", "e"): frozenset({1, 2}), 3: {4.5}}


def test_read_only_arrays_and_numpy_scalars_round_trip() -> None:
    frozen = np.arange(3, dtype=np.int64)
    frozen.flags.writeable = False
    clip = partial(np.clip, a_min=0, a_max=1)
    back = from_tree(to_tree([frozen, np.float32(1.5), np.bool_(True), clip, np.sqrt]))
    assert not back[0].flags.writeable and back[0].tolist() == [0, 1, 2]
    assert back[1] == np.float32(1.5) and type(back[1]) is np.float32
    assert type(back[2]) is np.bool_ and bool(back[2])
    assert back[3](np.array([-1.0, 0.5, 2.0])).tolist() == [0.0, 0.5, 1.0]
    assert back[4] is np.sqrt


def test_externals_are_written_as_paths_and_resolved_against_the_current_objects() -> None:
    settings = MonitorSettings()
    monitor = ModelMonitor("m", settings)
    tree = to_tree(monitor, {"settings": settings, "profile": None})
    now = MonitorSettings()
    back = from_tree(tree, {"settings": now, "profile": None})
    assert back.settings is now
    assert "settings.data_drift" in {path for path, _ in external_paths({"settings": now}).values()}
    with pytest.raises(SnapshotError, match="not configured"):
        from_tree(tree, {})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (lambda: 1, "cannot be persisted"),  # a closure
        (np.array([object()]), "object array"),
        (print, "cannot be persisted"),  # a builtin outside the allowlist
        (pytest.raises, "cannot be persisted"),  # a function of a foreign module
        (Path("x"), "cannot be persisted"),  # an object of a foreign class
    ],
)
def test_what_cannot_be_persisted_safely_is_refused_on_write(value: Any, reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        to_tree({"x": value})


@pytest.mark.parametrize(
    "tree",
    [
        [_OBJECT, "os:system"],  # a foreign class
        [_OBJECT, "pathlib:Path"],
        [_FUNCTION, "builtins:eval"],  # a foreign function
        [_FUNCTION, "os:system"],
        [_FUNCTION, "driftline.service.state_format:<locals>.f"],
        [_OBJECT, "driftline.service.state_format:no_such_class"],
        [_ARRAY, "|O", [1], b"\0" * 8, True],  # an object array
        [_HELPER, "x", ["import os"], b""],  # helper parameters that are not numbers
        [_REF, 0],  # a reference to nothing
        [99],  # an unknown tag
        [],
    ],
)
def test_a_record_naming_anything_foreign_is_refused_on_read(tree: Any) -> None:
    with pytest.raises(SnapshotError):
        from_tree(tree)


def test_signed_records_verify_and_unsigned_ones_are_refused_when_a_key_is_set() -> None:
    signed, unsigned = StateCodec(KEY), StateCodec()
    document = {"kind": "task", "x": [1, 2]}
    assert signed.decode(signed.encode(document)) == {**document, "format": STATE_FORMAT}
    assert unsigned.decode(unsigned.encode(document))["x"] == [1, 2]
    tampered = bytearray(signed.encode(document))
    tampered[-1] ^= 1
    with pytest.raises(SnapshotError, match="signature"):
        signed.decode(bytes(tampered))
    with pytest.raises(SnapshotError, match="signature"):
        StateCodec(b"another key, also long enough").decode(signed.encode(document))
    with pytest.raises(SnapshotError, match="unsigned"):
        signed.decode(unsigned.encode(document))
    with pytest.raises(SnapshotError, match="signed"):
        unsigned.decode(signed.encode(document))
    with pytest.raises(ValueError, match="16 bytes"):
        StateCodec(b"short")


def test_old_pickled_snapshots_and_other_formats_are_refused_unread() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('unpickled a state record')",))

    codec = StateCodec()
    with pytest.raises(SnapshotError, match="not a driftline state record"):
        codec.decode(b"DLS1" + b"\0" * 32 + zlib.compress(pickle.dumps(Boom())))
    with pytest.raises(SnapshotError, match="not a driftline state record"):
        codec.decode(pickle.dumps(Boom()))
    older = b"DLS2U" + zlib.compress(msgspec.msgpack.encode({"format": 2}))
    with pytest.raises(SnapshotError, match="format 2 or older"):
        codec.decode(older)
    newer = b"DLS3U" + zstandard.ZstdCompressor().compress(
        msgspec.msgpack.encode({"format": STATE_FORMAT + 1})
    )
    with pytest.raises(SnapshotError, match=f"format {STATE_FORMAT + 1}"):
        codec.decode(newer)
    with pytest.raises(SnapshotError, match="malformed"):
        codec.decode(b"DLS3U" + b"not zstd")


def test_digest_follows_the_settings() -> None:
    assert digest(MonitorSettings()) == digest(MonitorSettings())
    changed = MonitorSettings.model_validate({"data_drift": {"window_size": 500}})
    assert digest(changed) != digest(MonitorSettings())


def layout(tree: Any, out: dict[str, set[str]]) -> dict[str, set[str]]:
    """Class name -> attribute names, of every object in a tree."""
    if isinstance(tree, list) and tree:
        if tree[0] == _OBJECT:
            out.setdefault(tree[1], set()).update(tree[2::2])
            for value in tree[3::2]:
                layout(value, out)
        else:
            for value in tree[1:]:
                layout(value, out)
    return out


def current_layout() -> dict[str, Any]:
    """The attribute layout of every class a busy pipeline persists, and of a segmented
    model's."""
    pipeline, _, _ = busy_pipeline()
    found: dict[str, set[str]] = {}
    task = pipeline.tasks[0]
    # The task record: its join and its outcome order, here with an outcome waiting in it.
    task.outcomes.wait(("a", "e"), "a", InputRecord("outcome", "o", 0, 9, None, b"{}"), 0)
    layout(to_tree((task.join, task.outcomes)), found)
    segmented = ModelMonitor("s", MonitorSettings.model_validate({"segments": ["region"]}))
    segmented.observe_labeled(
        [
            Labeled(str(i), "s", None, i % 2, 0.7, 1, i, i + 1, Source("o", 0, i), {"region": "eu"})
            for i in range(50)
        ]
    )
    for monitor in [*task.monitors.values(), segmented]:
        layout(to_tree(monitor, roots(monitor)), found)
    return {"format": STATE_FORMAT, "classes": {k: sorted(v) for k, v in sorted(found.items())}}


def test_the_persisted_layout_is_pinned_to_the_state_format() -> None:
    """A change to the attributes of a persisted class changes what old records mean: it must
    come with a new ``STATE_FORMAT`` (old records are then refused, and their models start
    fresh). When this fails, bump ``STATE_FORMAT`` and write the layout printed below to
    tests/unit/state_layout.json."""
    current = current_layout()
    pinned = orjson.loads(LAYOUT.read_bytes())
    assert current == pinned, orjson.dumps(current, option=orjson.OPT_INDENT_2).decode()


def test_a_restored_segmented_monitor_decides_exactly_as_the_original() -> None:
    """A model judged per region goes through encode -> bytes -> decode in the middle of one
    region's degradation; the restored monitor emits the same alerts, bit for bit."""
    settings = MonitorSettings.model_validate({"segments": ["region"]})
    rng = np.random.default_rng(3)

    def labelled(start: int, n: int) -> list[Labeled]:
        out = []
        for i in range(start, start + n):
            region = f"r{i % 4}"
            wrong = rng.random() < (0.5 if region == "r0" and i >= 6000 else 0.08)
            out.append(
                Labeled(
                    str(i),
                    "s",
                    "v1",
                    int(not wrong),
                    0.8,
                    1,
                    i,
                    i + 5,
                    Source("o", 0, i),
                    {"region": region},
                )
            )
        return out

    original = ModelMonitor("s", settings)
    original.observe_labeled(labelled(0, 6500))
    codec = StateCodec(KEY)
    data = codec.encode({"monitor": to_tree(original, roots(original))})
    restored = from_tree(codec.decode(data)["monitor"], roots(original))
    rest = labelled(6500, 3000)
    expected = original.observe_labeled(rest)
    assert any("segment" in a for a in expected)
    assert restored.observe_labeled(rest) == expected
