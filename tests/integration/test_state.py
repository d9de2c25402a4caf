"""State against the real broker, with the default config: a restart continues the detectors;
a ``kill -9`` loop loses, adds and double-counts nothing (it publishes what an uninterrupted run
publishes); a signed record that fails its check is refused."""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.service.state import model_key, task_key
from driftline.service.state_format import StateCodec
from driftline.service.synthetic import ModelStream, generate

from .conftest import (
    ServiceProcess,
    Topics,
    create_topics,
    produce,
    produce_events,
    read_all,
    scrape,
    wait_for,
    wait_processed,
)

STREAM = ModelStream("stateful", seed=81)
# References that fill within the small streams of these tests.
SMALL_REFERENCES = {
    "defaults": {
        "data_drift": {"reference_size": 600, "window_size": 300, "every": 100},
        "prediction_drift": {"reference_size": 600, "window_size": 300, "every": 100},
        "kpis": {"reference_size": 600, "size": 300},
    }
}


def latest_kpis(bootstrap: str, topics: Topics, model_id: str, labeled: int) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for message in reversed(read_all(bootstrap, topics.kpis)):
            snapshot = orjson.loads(message.value())
            if snapshot["model_id"] == model_id and snapshot["labeled"] >= labeled:
                return snapshot
        return None

    return wait_for(find, 60, f"a KPI snapshot of {model_id} with {labeled} labels")


def test_restart_continues_from_the_restored_state(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    """No state setting at all: the second start restores the monitor and counts on."""
    produce_events(bootstrap, topics, generate(STREAM, 1500))
    service.config = {"processing": {"kpi_interval_s": 0.3}}
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    assert not [x for x in service.log_lines() if x.get("event") == "state_restored"]

    produce_events(bootstrap, topics, generate(STREAM, 1000, offset=1500))
    service.start()
    wait_processed(bootstrap, topics)
    restored = [x for x in service.log_lines() if x.get("event") == "state_restored"]
    assert sorted(x["task"] for x in restored) == [0, 1]  # both tasks had state
    assert sum(x["models"] for x in restored) == 1
    # The monitor counts every label since the first start: its state survived the restart.
    snapshot = latest_kpis(bootstrap, topics, STREAM.model_id, 2500)
    assert snapshot["labeled"] == 2500 and snapshot["predictions"] == 2500
    metrics = scrape(service.url)
    assert metrics['driftline_snapshots_total{result="restored"}'] >= 1
    assert metrics["driftline_labeled_events_total"] == 1000  # this process read only the new
    assert service.stop() == 0
    # What the topic holds: one task record per task and one record for the model.
    keys = {m.key() for m in read_all(bootstrap, topics.state) if m.value() is not None}
    partition = next(x["task"] for x in restored if x["models"])
    assert {task_key(topics.group_id, 0), task_key(topics.group_id, 1)} <= keys
    assert model_key(topics.group_id, partition, STREAM.model_id) in keys


@pytest.mark.parametrize(("interval_s", "rewritten"), [(0.3, True), (3600.0, False)])
def test_snapshot_interval_s_is_how_often_changed_state_is_written(
    bootstrap: str, topics: Topics, service: ServiceProcess, interval_s: float, rewritten: bool
) -> None:
    """After the first checkpoint (a second after the first batch), the model's record is
    rewritten when new events arrive only if the interval has passed."""
    produce_events(bootstrap, topics, generate(STREAM, 300))
    service.config = {"state": {"snapshot_interval_s": interval_s}}
    service.start()
    wait_processed(bootstrap, topics)

    def model_records() -> int:
        return sum(b"/model/" in (m.key() or b"") for m in read_all(bootstrap, topics.state))

    first = wait_for(model_records, 30, "the first checkpoint's model record")
    produce_events(bootstrap, topics, generate(STREAM, 300, offset=300))
    wait_processed(bootstrap, topics)
    if rewritten:
        wait_for(lambda: model_records() > first, 30, "the model record to be rewritten")
        assert service.stop() == 0
    else:
        # State due would have been written before the offsets wait_processed saw committed.
        assert model_records() == first
        assert service.stop() == 0
        assert model_records() == first + 1  # a shutdown writes the changed state regardless


def test_restore_timeout_s_bounds_the_read_of_the_state_topic(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    produce_events(bootstrap, topics, generate(STREAM, 300))
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    service.config = {"state": {"restore_timeout_s": 0.0001}}  # no broker answers that fast
    service.start()
    service.wait_logged("state_unreadable")
    assert service.stop() == 0


def test_state_enabled_false_writes_and_restores_nothing(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    produce_events(bootstrap, topics, generate(STREAM, 300))
    service.config = {"state": {"enabled": False}}
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    assert read_all(bootstrap, topics.state) == []


def test_a_record_with_a_bad_signature_is_refused(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    key = "k" * 32
    forged = StateCodec(b"another-key-of-32-bytes-........").encode(
        {"kind": "task", "partition": 0, "positions": {"prediction": 0, "outcome": 0}, "join": 0}
    )
    produce(bootstrap, [(topics.state, task_key(topics.group_id, p), forged) for p in (0, 1)])
    produce_events(bootstrap, topics, generate(STREAM, 300))
    service.config = {"state": {"hmac_key": key}}
    service.start()
    wait_processed(bootstrap, topics)
    refused = service.wait_logged("state_refused")
    assert "signature" in refused["error"]
    assert scrape(service.url)["driftline_labeled_events_total"] == 300
    assert service.stop() == 0


def kill_loop(
    service: ServiceProcess, feed: Callable[[int, int], None], n: int, cycles: int, seed: int
) -> list[float]:
    """``cycles`` times: feed the next chunk of ``n`` events, start the service, wait for its
    first batch, and ``kill -9`` it 1-4 s later (after its first checkpoint, mostly in the
    middle of its work); then feed the last chunk and start it for good. Returns the seconds
    from each start to its first batch."""
    rng = random.Random(seed)
    size = n // (cycles + 1)
    recovery: list[float] = []
    for cycle in range(cycles + 1):
        feed(cycle * size, n if cycle == cycles else (cycle + 1) * size)
        began = time.monotonic()
        service.start()
        service.wait_logged("first_batch", timeout=60)
        recovery.append(time.monotonic() - began)
        if cycle == cycles:
            break
        time.sleep(rng.uniform(1.0, 4.0))
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(timeout=30)
    return recovery


def published(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Alerts and incident events, as a ``read_committed`` subscriber (librdkafka's default)
    reads them."""
    return [orjson.loads(m.value()) for m in read_all(bootstrap, topic)]


def uninterrupted(
    bootstrap: str, topics: Topics, tmp: Path, config: dict[str, Any]
) -> list[dict[str, Any]]:
    """What a second service publishes reading the same inputs once, without kills, with its
    own group and output topics."""
    other = dataclasses.replace(
        topics,
        alerts=f"{topics.prefix}.alerts-2",
        kpis=f"{topics.prefix}.kpis-2",
        dead_letters=f"{topics.prefix}.dead-letters-2",
        state=f"{topics.prefix}.state-2",
        group_id=f"{topics.prefix}.group-2",
    )
    create_topics(bootstrap, [other.alerts, other.kpis, other.dead_letters], partitions=1)
    create_topics(bootstrap, [other.state], partitions=1, config={"cleanup.policy": "compact"})
    service = ServiceProcess(bootstrap, other, tmp)
    service.tmp.mkdir()
    service.config = config
    service.start()
    wait_processed(bootstrap, other)
    assert service.stop() == 0
    return published(bootstrap, other.alerts)


def distinct(events: list[dict[str, Any]]) -> list[bytes]:
    """Each published transition and incident event once (at least once may repeat them, under
    the same ids and with the same content)."""
    return sorted({orjson.dumps(e) for e in events})


def alternates(alerts: list[dict[str, Any]]) -> dict[tuple[str, ...], list[str]]:
    """Per identity, the statuses published once duplicates (same ``alert_id``) are dropped;
    fails if one transition was published under two ids."""
    statuses: dict[tuple[str, ...], list[str]] = defaultdict(list)
    seen: set[str] = set()
    for alert in alerts:
        if alert["kind"] == "incident" or alert["alert_id"] in seen:
            continue
        seen.add(alert["alert_id"])
        identity = (
            alert["model_id"],
            alert["kind"],
            alert.get("feature") or alert.get("metric") or "",
            alert["severity"],
        )
        statuses[identity].append(alert["status"])
    return dict(statuses)


def test_a_kill_loop_loses_nothing_and_counts_every_event_once(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    """With the default config (no ``kafka.instance_id``: each restart waits for the killed
    member's session to time out), ten ``kill -9`` cycles, each 1-4 s after the restart's first
    batch, while the stream arrives in chunks: in the end every prediction and label was
    counted exactly once, the degradation was reported, the healthy model said nothing, each
    alert identity strictly alternates firing/resolved, and the distinct alerts and incident
    events are exactly those of an uninterrupted run (none lost, none spurious)."""
    degrading = ModelStream(
        "degrading", seed=5, change_at=1800, accuracy_after=0.55, numeric_shift={"x1": 2.0}
    )
    healthy = ModelStream("healthy", seed=6)
    n, cycles = 3000, 10
    service.config = {**SMALL_REFERENCES, "processing": {"kpi_interval_s": 0.5}}

    def feed(start: int, stop: int) -> None:
        for spec in (degrading, healthy):
            produce_events(bootstrap, topics, generate(spec, stop - start, offset=start))

    recovery = kill_loop(service, feed, n, cycles, seed=9)
    wait_processed(bootstrap, topics)
    for spec in (degrading, healthy):
        snapshot = latest_kpis(bootstrap, topics, spec.model_id, n)
        assert (snapshot["predictions"], snapshot["labeled"]) == (n, n), snapshot
    assert service.stop() == 0
    alerts = published(bootstrap, topics.alerts)
    statuses = alternates(alerts)
    assert not [i for i in statuses if i[0] == "healthy"], statuses
    kinds = {identity[1] for identity in statuses}
    assert {"data_drift", "kpi_threshold"} <= kinds, statuses
    for identity, sequence in statuses.items():
        expected = ["firing", "resolved"] * len(sequence)
        assert sequence == expected[: len(sequence)], (identity, sequence)
    reference = uninterrupted(bootstrap, topics, tmp_path / "uninterrupted", SMALL_REFERENCES)
    assert "incident" in {e["kind"] for e in reference}
    assert distinct(alerts) == distinct(reference)
    print(f"recovery to first batch (s): {[round(r, 2) for r in recovery]}")


def test_scaling_out_to_three_replicas_and_back_loses_and_double_counts_nothing(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    """1 → 3 → 1 replicas while the stream arrives: every rebalance hands each task's state to
    its next owner, so the models count every event once and alert as one replica would."""
    degrading = ModelStream(
        "degrading", seed=25, change_at=1500, accuracy_after=0.55, numeric_shift={"x1": 2.0}
    )
    healthy = ModelStream("healthy", seed=26)
    n = 3000
    service.config = {**SMALL_REFERENCES, "processing": {"kpi_interval_s": 0.5}}

    def feed(start: int, stop: int) -> None:
        for spec in (degrading, healthy):
            produce_events(bootstrap, topics, generate(spec, stop - start, offset=start))

    feed(0, 1000)
    service.start()
    service.wait_logged("first_batch")
    others = []
    for name in ("b", "c"):
        other = ServiceProcess(bootstrap, topics, tmp_path / name, config=service.config)
        other.tmp.mkdir()
        others.append(other.start())
    for other in others:
        other.wait_logged("partitions_assigned")
    feed(1000, 2000)
    wait_processed(bootstrap, topics)
    for other in others:
        assert other.stop() == 0
    feed(2000, n)
    wait_processed(bootstrap, topics)
    for spec in (degrading, healthy):
        snapshot = latest_kpis(bootstrap, topics, spec.model_id, n)
        assert (snapshot["predictions"], snapshot["labeled"]) == (n, n), snapshot
    assert service.stop() == 0
    restored = [
        x for p in (service, *others) for x in p.log_lines() if x.get("event") == "state_restored"
    ]
    assert sum(x["models"] for x in restored) >= 2  # state moved between replicas
    alerts = [orjson.loads(m.value()) for m in read_all(bootstrap, topics.alerts)]
    statuses = alternates(alerts)
    assert not [i for i in statuses if i[0] == "healthy"], statuses
    assert {"data_drift", "kpi_threshold"} <= {identity[1] for identity in statuses}
    for identity, sequence in statuses.items():
        assert sequence == (["firing", "resolved"] * len(sequence))[: len(sequence)], identity
