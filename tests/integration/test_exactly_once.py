"""``processing.guarantee: exactly_once`` against the real broker: a ``kill -9`` loop with labels
that arrive before their predictions publishes every alert transition and incident event exactly
once, the same as an uninterrupted run, to a ``read_committed`` subscriber."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient

from driftline.service.synthetic import ModelStream, generate

from .conftest import ServiceProcess, Topics, produce, wait_processed
from .test_state import (
    SMALL_REFERENCES,
    alternates,
    kill_loop,
    latest_kpis,
    published,
    uninterrupted,
)

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
    # kafka.instance_id is the member's static id in the group.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (group,) = admin.describe_consumer_groups([topics.group_id]).values()
    assert [m.group_instance_id for m in group.result(timeout=30).members] == ["eos-replica"]
    assert service.stop() == 0
    killed = published(bootstrap, topics.alerts)
    # The same input read once, without kills.
    expected = uninterrupted(bootstrap, topics, tmp_path / "uninterrupted", SMALL_REFERENCES)

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
