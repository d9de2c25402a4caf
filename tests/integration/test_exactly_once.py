"""``processing.guarantee: exactly_once`` against the real broker: a ``kill -9`` loop with labels
that arrive before their predictions publishes every alert transition and incident event exactly
once, the same as an uninterrupted run, to a ``read_committed`` subscriber."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from service.synthetic import ModelStream, generate

from .conftest import (
    ServiceProcess,
    Topics,
    create_topics,
    produce,
    read_all,
    wait_processed,
)
from .test_state import SMALL_REFERENCES, alternates, kill_loop, latest_kpis

DEGRADING = ModelStream(
    "degrading", seed=15, change_at=1800, accuracy_after=0.55, numeric_shift={"x1": 2.0}
)
HEALTHY = ModelStream("healthy", seed=16)
N, CYCLES = 3000, 10


def chunk(topics: Topics, start: int, stop: int) -> Iterator[tuple[str, bytes, bytes]]:
    """Events ``start .. stop`` of both models: the outcomes of the first half before any of
    the predictions (labels out of order), then the predictions, then the other outcomes."""
    pairs = [p for spec in (DEGRADING, HEALTHY) for p in generate(spec, stop - start, start)]
    half = len(pairs) // 2
    for _, outcome in pairs[:half]:
        yield topics.outcomes, outcome["model_id"].encode(), orjson.dumps(outcome)
    for prediction, _ in pairs:
        yield topics.predictions, prediction["model_id"].encode(), orjson.dumps(prediction)
    for _, outcome in pairs[half:]:
        yield topics.outcomes, outcome["model_id"].encode(), orjson.dumps(outcome)


def published(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """What a read_committed subscriber (librdkafka's default) reads: alerts and incident
    events."""
    return [orjson.loads(m.value()) for m in read_all(bootstrap, topic)]


def test_a_kill_loop_under_exactly_once_publishes_each_transition_once(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    service.config = {
        **SMALL_REFERENCES,
        "kafka": {"instance_id": "eos-replica"},
        "processing": {"guarantee": "exactly_once", "kpi_interval_s": 0.5},
    }
    kill_loop(
        service, lambda start, stop: produce(bootstrap, chunk(topics, start, stop)), N, CYCLES, 21
    )
    wait_processed(bootstrap, topics)
    for spec in (DEGRADING, HEALTHY):
        snapshot = latest_kpis(bootstrap, topics, spec.model_id, N)
        assert (snapshot["predictions"], snapshot["labeled"]) == (N, N), snapshot
    assert service.stop() == 0
    killed = published(bootstrap, topics.alerts)

    # The same input read once, without kills, by a second service with its own outputs.
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
    uninterrupted = ServiceProcess(bootstrap, other, tmp_path / "uninterrupted")
    uninterrupted.tmp.mkdir()
    uninterrupted.config = {**SMALL_REFERENCES}
    uninterrupted.start()
    wait_processed(bootstrap, other)
    assert uninterrupted.stop() == 0
    expected = published(bootstrap, other.alerts)

    # Exactly once: no transition or incident event twice, none lost, none added, the same
    # incidents; strict alternation.
    ids = Counter(a.get("event_id") or (a["alert_id"], a["status"]) for a in killed)
    assert [k for k, n in ids.items() if n > 1] == []
    assert {"data_drift", "kpi_threshold", "incident"} <= {a["kind"] for a in expected}
    assert sorted(map(orjson.dumps, killed)) == sorted(map(orjson.dumps, expected))
    statuses = alternates(killed)
    for identity, sequence in statuses.items():
        assert sequence == (["firing", "resolved"] * len(sequence))[: len(sequence)], identity
    assert not [i for i in statuses if i[0] == HEALTHY.model_id]
