"""Task and model state records (``StateStore``): a crash anywhere loses nothing and repeats
only what came after the last write, with the same alert ids.

The state topic is stood in for by what compaction leaves of it, the newest value per key; the
inputs by one task's records in the order they were read. A "crash" drops the pipeline and its
store, restores a new one from the records, and reads the inputs again from the restored
positions. Whatever the crash points, the alerts published, once duplicates are dropped, are
those of an uninterrupted run in the same order, and every model ends with the same KPIs.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from driftline.detectors.monitor import ModelMonitor
from driftline.service.config import Config
from driftline.service.pipeline import InputRecord, Pipeline
from driftline.service.state import Record, StateStore, model_key, task_key
from driftline.service.state_format import to_tree
from driftline.service.synthetic import ModelStream

from .test_buffering import config, records

STREAMS = [
    ModelStream("a", seed=1, change_at=2500, accuracy_after=0.6, numeric_shift={"x1": 1.5}),
    ModelStream("b", seed=2, change_at=2800, null_rate={"x2": 0.4}),
]
BATCH = 500


def inputs() -> list[InputRecord]:
    """Both models' events; every 7th outcome of model b never comes (its prediction expires
    once the outcomes move ``join_wait_s`` past it)."""
    data = records(STREAMS, 4000)
    return [
        r
        for r in data
        if not (r.role == "outcome" and b'"model_id":"b"' in (r.value or b"") and r.offset % 7 == 0)
    ]


def state_config() -> Config:
    cfg = config()
    return cfg.model_copy(
        update={"processing": cfg.processing.model_copy(update={"join_wait_s": 2.0})}
    )


class Run:
    """One replica's life: a pipeline and its store, fed from ``positions`` on."""

    def __init__(self, cfg: Config, topic: dict[bytes, bytes]) -> None:
        self.pipeline = Pipeline(cfg)
        self.store = StateStore(cfg, 1)
        restored = self.store.restore(self.pipeline, [0], dict(topic))
        self.positions = restored.get(0, {"prediction": 0, "outcome": 0})
        self.pipeline.assign([0])

    def unread(self, data: list[InputRecord]) -> list[InputRecord]:
        return [r for r in data if r.offset >= self.positions[r.role]]

    def read(self, batch: list[InputRecord]) -> list[dict[str, Any]]:
        alerts = self.pipeline.process(batch).alerts
        for r in batch:
            self.positions[r.role] = r.offset + 1
        return alerts

    def checkpoint(self) -> tuple[list[dict[str, Any]], list[Record]]:
        """Observe what waits, then the records to write: outputs before state."""
        alerts = self.pipeline.flush().alerts
        return alerts, self.store.changes(self.pipeline, {0: dict(self.positions)})


def apply(topic: dict[bytes, bytes], written: list[Record]) -> None:
    for _, key, value in written:
        if value is None:
            topic.pop(key, None)
        else:
            topic[key] = value


def run(crashes: dict[int, str], every: int = 3) -> tuple[list[dict[str, Any]], Pipeline]:
    """Feed the inputs in batches, writing state every ``every`` batches. At batch ``i`` in
    ``crashes`` the replica dies: "before" any state of that checkpoint is written, "between"
    its model records and its task record, "after" all of it."""
    cfg, data = state_config(), inputs()
    topic: dict[bytes, bytes] = {}
    published: list[dict[str, Any]] = []
    replica, batches = Run(cfg, topic), 0
    while unread := replica.unread(data):
        published += replica.read(unread[:BATCH])
        batches += 1
        if batches % every:
            continue
        alerts, written = replica.checkpoint()
        published += alerts
        how = crashes.pop(batches, None)
        if how == "between":
            apply(topic, [r for r in written if not r[1].endswith(b"/task")])
        elif how != "before":
            apply(topic, written)
        if how is not None:
            replica = Run(cfg, topic)
    return published + replica.checkpoint()[0], replica.pipeline


def packed(monitor: ModelMonitor) -> bytes:
    roots = {"settings": monitor.settings, "profile": monitor.profile}
    return msgspec.msgpack.encode(to_tree(monitor, roots))


def deduplicated(alerts: list[dict[str, Any]]) -> list[bytes]:
    seen: dict[bytes, None] = {}
    for alert in alerts:
        seen.setdefault(orjson.dumps(alert), None)
    return list(seen)


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[list[dict[str, Any]], Pipeline]:
    return run({})


def test_the_streams_alert_and_expire_predictions(
    uninterrupted: tuple[list[dict[str, Any]], Pipeline],
) -> None:
    alerts, pipeline = uninterrupted
    assert {a["kind"] for a in alerts} >= {"data_drift", "data_quality", "kpi_threshold"}
    coverage = pipeline.tasks[0].monitors["b"].kpi_snapshot()["kpis"]["label_coverage"]
    assert coverage < 0.9, "some of model b's predictions must expire unlabelled"


@pytest.mark.parametrize(
    "crashes",
    [
        {3: "after"},
        {6: "before"},
        {6: "between"},
        {3: "between", 9: "between", 12: "before", 15: "after"},
        {i: ("before", "between", "after")[i % 3] for i in range(3, 33, 3)},
    ],
    ids=["after", "before", "between", "mixed", "ten-crashes"],
)
def test_a_crash_anywhere_loses_nothing_and_repeats_alerts_with_their_ids(
    uninterrupted: tuple[list[dict[str, Any]], Pipeline], crashes: dict[int, str]
) -> None:
    expected, whole = uninterrupted
    published, pipeline = run(dict(crashes))
    assert deduplicated(published) == deduplicated(expected)
    # Every model ends in exactly the state of the uninterrupted run: nothing observed twice
    # (an event, a label, an expired prediction), nothing missed.
    monitors = pipeline.tasks[0].monitors
    assert list(monitors) == list(whole.tasks[0].monitors)
    for model_id, monitor in whole.tasks[0].monitors.items():
        assert packed(monitors[model_id]) == packed(monitor)


def test_only_changed_models_are_written_and_removed_ones_get_a_tombstone() -> None:
    cfg, data = config(), inputs()  # the default join_wait_s: nothing expires here
    replica = Run(cfg, {})
    replica.read(data[:2000])
    _, written = replica.checkpoint()
    keys = [key for _, key, _ in written]
    group = cfg.kafka.group_id
    assert keys == [model_key(group, 0, "a"), model_key(group, 0, "b"), task_key(group, 0)]
    assert replica.checkpoint()[1] == []  # nothing read, nothing changed: nothing to write
    only_a = [r for r in data[2000:] if b'"model_id":"a"' in (r.value or b"")][:50]
    replica.read(only_a)
    assert [key for _, key, _ in replica.checkpoint()[1]] == [
        model_key(group, 0, "a"),
        task_key(group, 0),
    ]
    # Model b leaves the config (only a is monitored): its record is deleted.
    restricted = Config.model_validate(
        {**cfg.model_dump(), "monitor_unlisted": False, "models": {"a": {}}}
    )
    replica.pipeline.reconfigure(restricted)
    _, written = replica.checkpoint()
    assert (0, model_key(group, 0, "b"), None) in written


def test_a_model_whose_settings_changed_starts_fresh_and_the_others_keep_their_state() -> None:
    cfg, data = state_config(), inputs()
    replica = Run(cfg, {})
    replica.read(data[:3000])
    topic: dict[bytes, bytes] = {}
    apply(topic, replica.checkpoint()[1])
    before = {m: mon.n_predictions for m, mon in replica.pipeline.tasks[0].monitors.items()}
    changed = Config.model_validate(
        {**cfg.model_dump(), "models": {"b": {"data_drift": {"window_size": 500}}}}
    )
    restarted = Run(changed, topic)
    monitors = restarted.pipeline.tasks[0].monitors
    assert list(monitors) == ["a"] and monitors["a"].n_predictions == before["a"]
