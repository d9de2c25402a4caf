"""Task snapshots against the real broker: a restart continues the detectors' state; a snapshot
that fails its signature is refused."""

from __future__ import annotations

from typing import Any

import orjson

from service.join import JoinBuffer
from service.pipeline import Task
from service.state import SnapshotCodec, TaskSnapshot, snapshot_key
from service.synthetic import ModelStream, generate

from .conftest import (
    ServiceProcess,
    Topics,
    produce,
    produce_events,
    read_all,
    scrape,
    wait_for,
    wait_processed,
)

KEY = "k" * 32
STREAM = ModelStream("stateful", seed=81)


def latest_snapshot(bootstrap: str, topics: Topics, labeled: int) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for message in reversed(read_all(bootstrap, topics.kpis)):
            snapshot = orjson.loads(message.value())
            if snapshot["model_id"] == STREAM.model_id and snapshot["labeled"] >= labeled:
                return snapshot
        return None

    return wait_for(find, 30, f"a KPI snapshot with {labeled} labels")


def test_restart_continues_from_the_restored_state(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    produce_events(bootstrap, topics, generate(STREAM, 1500))
    service.config = {
        "state": {"hmac_key": KEY, "snapshot_interval_s": 0.5},
        "processing": {"kpi_interval_s": 0.3},
    }
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    first = [x for x in service.log_lines() if x.get("event") == "state_restored"]
    assert first == []  # nothing to restore on the first start

    produce_events(bootstrap, topics, generate(STREAM, 1000, offset=1500))
    service.start()
    wait_processed(bootstrap, topics)
    restored = [x for x in service.log_lines() if x.get("event") == "state_restored"]
    assert sorted(x["task"] for x in restored) == [0, 1]  # both tasks were snapshotted
    assert sorted(m for x in restored for m in x["models"]) == [STREAM.model_id]
    # The monitor counts every label since the first start: its state survived the restart.
    snapshot = latest_snapshot(bootstrap, topics, 2500)
    assert snapshot["labeled"] == 2500 and snapshot["predictions"] == 2500
    metrics = scrape(service.url)
    assert metrics['driftline_snapshots_total{result="restored"}'] >= 1
    assert metrics["driftline_labeled_events_total"] == 1000  # this process read only the new
    assert service.stop() == 0


def test_a_snapshot_with_a_bad_signature_is_refused(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    forged = SnapshotCodec(b"another-key-of-32-bytes-........").encode(
        TaskSnapshot(0, {topics.predictions: 0, topics.outcomes: 0}, Task(0, JoinBuffer(1000, 10)))
    )
    produce(bootstrap, [(topics.state, snapshot_key(topics.group_id, p), forged) for p in (0, 1)])
    produce_events(bootstrap, topics, generate(STREAM, 300))
    service.config = {"state": {"hmac_key": KEY}}
    service.start()
    wait_processed(bootstrap, topics)
    refused = service.wait_logged("snapshot_refused")
    assert "signature" in refused["error"]
    assert not any(x.get("event") == "state_restored" for x in service.log_lines())
    assert scrape(service.url)["driftline_labeled_events_total"] == 300
    assert service.stop() == 0
