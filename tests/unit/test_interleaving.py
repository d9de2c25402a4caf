"""Decisions do not depend on how the two input topics of a task interleave on a read.

The same per-partition input (the predictions in their order, the outcomes in theirs, with label
delays that put the outcomes in another order than the predictions) is read in random
interleavings, with the outcome topic far ahead, the prediction topic far ahead, or anything
between, in random batch sizes. Every signal decides the same and every alert joins the same
incident: the same alerts and incident events with the same ids, values and evidence, and every
monitor ends in the same state, bit for bit. A restart, a rebalance and ``driftline
replay`` read the topics in other interleavings than the first run; this is what lets them
publish the same alerts under the same ids. Predictions that expire unlabelled fall at the same
place among the labels too (label coverage and delay in a KPI alert's evidence, the snapshot).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.service.config import Config
from driftline.service.pipeline import InputRecord, Pipeline
from driftline.service.state_format import _attributes

from .test_buffering import config
from .test_state import inputs


def sides() -> dict[str, list[InputRecord]]:
    """The two partitions of ``test_state.inputs()``, with label delays of 0.5 to 30 s
    instead of a fixed one: the outcome partition holds the labels in the order they were
    given, which is not the order of the predictions."""
    rng = np.random.default_rng(11)
    predictions = [r for r in inputs() if r.role == "prediction"]
    outcomes = []
    for record in (r for r in inputs() if r.role == "outcome"):
        doc = orjson.loads(record.value or b"")
        doc["timestamp"] += int(rng.integers(0, 29_500))
        outcomes.append((doc["timestamp"], record.offset, doc))
    outcomes.sort(key=lambda x: x[:2])
    relabelled = [
        InputRecord("outcome", "o", 0, offset, None, orjson.dumps(doc))
        for offset, (_, _, doc) in enumerate(outcomes)
    ]
    return {"prediction": predictions, "outcome": relabelled}


SIDES = sides()


def interleave(seed: int, lead: float, max_chunk: int) -> list[InputRecord]:
    """Both partitions read in chunks of up to ``max_chunk`` records, the outcome side chosen
    with probability ``lead``."""
    rng = np.random.default_rng(seed)
    predictions, outcomes = SIDES["prediction"], SIDES["outcome"]
    out: list[InputRecord] = []
    i = j = 0
    while i < len(predictions) or j < len(outcomes):
        size = int(rng.integers(1, max_chunk + 1))
        if j < len(outcomes) and (i >= len(predictions) or rng.random() < lead):
            out += outcomes[j : j + size]
            j += size
        else:
            out += predictions[i : i + size]
            i += size
    return out


def outputs(alerts: list[dict[str, Any]]) -> list[bytes]:
    """The alerts and incident events, as a sorted list of their JSON."""
    return sorted(orjson.dumps(alert) for alert in alerts)


def canonical(obj: Any, path: tuple[int, ...] = ()) -> Any:
    """An object graph as plain nested values, for comparing what state *means*: dicts and sets
    as sorted items (several dicts are filled in the order signals first fired, which may
    follow the interleaving without any effect), arrays as their dtype and bytes; floats
    exactly."""
    if isinstance(obj, str | bytes | int | float | bool | type(None)):
        return obj
    if id(obj) in path:
        return "<cycle>"
    path = (*path, id(obj))
    if isinstance(obj, np.ndarray | np.generic):
        return ("array", str(obj.dtype), np.asarray(obj).tobytes())
    if isinstance(obj, dict):
        items = [(canonical(k, path), canonical(v, path)) for k, v in obj.items()]
        return ("dict", sorted(items, key=repr))
    if isinstance(obj, set | frozenset):
        return ("set", sorted((canonical(v, path) for v in obj), key=repr))
    if isinstance(obj, list | tuple | deque):
        return [canonical(v, path) for v in obj]
    if callable(obj) and not hasattr(obj, "__dict__") and not hasattr(type(obj), "__slots__"):
        return repr(obj)
    return (type(obj).__qualname__, canonical(_attributes(obj), path))


def signal_state(pipeline: Pipeline) -> list[Any]:
    """Every monitor's state, as :func:`canonical` values."""
    return [canonical(m) for _, m in sorted(pipeline.tasks[0].monitors.items())]


def decide(cfg: Config, data: list[InputRecord], batch: int) -> tuple[list[bytes], list[Any]]:
    pipeline = Pipeline(cfg)
    alerts: list[dict[str, Any]] = []
    for start in range(0, len(data), batch):
        alerts += pipeline.process(data[start : start + batch]).alerts
    alerts += pipeline.flush(end_of_input=True).alerts
    return outputs(alerts), signal_state(pipeline)


# The default join_wait_s: no prediction expires within the stream. 40 s (beyond the longest
# label delay): model b's predictions without an outcome expire.
NO_EXPIRY, EXPIRY = config(), config(join_wait_s=40)
REFERENCE = {id(cfg): decide(cfg, interleave(0, 0.5, 1), 500) for cfg in (NO_EXPIRY, EXPIRY)}


def test_the_reference_runs_alert() -> None:
    for alerts, _ in REFERENCE.values():
        kinds = {orjson.loads(a)["kind"] for a in alerts}
        assert {"data_drift", "data_quality", "kpi_threshold", "concept_drift"} <= kinds


INTERLEAVINGS = {
    "seed": st.integers(0, 2**32 - 1),
    "lead": st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
    "max_chunk": st.sampled_from([1, 7, 100, 2000, 10_000]),
    "batch": st.integers(1, 3000),
}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**INTERLEAVINGS)
def test_any_interleaving_gives_the_same_alerts_and_state(
    seed: int, lead: float, max_chunk: int, batch: int
) -> None:
    got = decide(NO_EXPIRY, interleave(seed, lead, max_chunk), batch)
    assert got == REFERENCE[id(NO_EXPIRY)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**INTERLEAVINGS)
def test_with_expiring_predictions_any_interleaving_gives_the_same_alerts_and_state(
    seed: int, lead: float, max_chunk: int, batch: int
) -> None:
    got = decide(EXPIRY, interleave(seed, lead, max_chunk), batch)
    assert got == REFERENCE[id(EXPIRY)]
