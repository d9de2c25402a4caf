"""Per-model micro-batching in ``Pipeline``: buffering changes when alerts go out, never which;
a waiting record holds the commit back; the clock flushes a quiet model."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from driftline.service.config import Config, load_config
from driftline.service.pipeline import InputRecord, Pipeline
from driftline.service.synthetic import ModelStream, generate


def config(**processing: object) -> Config:
    environ = {f"DRIFTLINE_PROCESSING__{k.upper()}": str(v) for k, v in processing.items()}
    # References complete within the short streams (quality judges rates once they are).
    environ["DRIFTLINE_DEFAULTS__DATA_DRIFT__REFERENCE_SIZE"] = "1500"
    environ["DRIFTLINE_DEFAULTS__PREDICTION_DRIFT__REFERENCE_SIZE"] = "1500"
    return load_config(None, environ=environ)


def records(streams: list[ModelStream], n: int) -> list[InputRecord]:
    """The models' events interleaved event by event, each outcome a few events after its
    prediction (as their event times say)."""
    out: list[InputRecord] = []
    offsets = {"p": 0, "o": 0}
    pairs = [list(generate(s, n)) for s in streams]
    lag = 3
    for j in range(n + lag):
        for events in pairs:
            if j < n:
                out.append(
                    InputRecord(
                        "prediction", "p", 0, offsets["p"], None, orjson.dumps(events[j][0])
                    )
                )
                offsets["p"] += 1
            if j >= lag:
                out.append(
                    InputRecord(
                        "outcome", "o", 0, offsets["o"], None, orjson.dumps(events[j - lag][1])
                    )
                )
                offsets["o"] += 1
    return out


def run(cfg: Config, data: list[InputRecord], batch: int) -> dict[str, list[dict[str, Any]]]:
    pipeline = Pipeline(cfg)
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    results = [pipeline.process(data[i : i + batch]) for i in range(0, len(data), batch)]
    results.append(pipeline.flush(end_of_input=True))
    for result in results:
        assert not result.dead_letters
        for alert in result.alerts:
            by_model[alert["model_id"]].append(alert)
    assert sum(r.predictions for r in results) == sum(1 for r in data if r.role == "prediction")
    return dict(by_model)


STREAMS = [
    ModelStream("a", seed=1, change_at=2500, accuracy_after=0.6, numeric_shift={"x1": 1.5}),
    ModelStream("b", seed=2, change_at=3000, null_rate={"x2": 0.4}),
]


def test_buffering_changes_when_alerts_go_out_never_which() -> None:
    """Every model's alerts (ids, evidence, order) are the same whether it is observed event by
    event or in buffered calls of 37 or 256 events, for any Kafka batch size."""
    data = records(STREAMS, 4000)
    unbuffered = run(config(min_model_batch=1), data, batch=500)
    assert {m: len(a) for m, a in unbuffered.items() if a} and set(unbuffered) == {"a", "b"}
    for min_batch, batch in ((37, 2000), (256, 333), (256, 2000)):
        assert run(config(min_model_batch=min_batch), data, batch=batch) == unbuffered


def test_a_model_is_observed_once_min_model_batch_events_wait() -> None:
    data = [r for r in records(STREAMS[:1], 12) if r.role == "prediction"]
    pipeline = Pipeline(config(min_model_batch=5))
    result = pipeline.process(data)
    assert result.predictions == 10  # two calls of five; two predictions still wait
    # The commit must stop at the first waiting record, so a crash cannot lose it.
    assert pipeline.held_offsets() == {("p", 0): data[10].offset}
    assert pipeline.flush().predictions == 2
    assert pipeline.held_offsets() == {}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("max_buffer_ms", "flushed"), [(500, 6), (5000, 0)])
def test_max_buffer_ms_observes_a_quiet_model_on_the_clock(
    max_buffer_ms: int, flushed: int
) -> None:
    clock = Clock()
    pipeline = Pipeline(config(min_model_batch=1000, max_buffer_ms=max_buffer_ms), clock=clock)
    data = [r for r in records(STREAMS[:1], 6) if r.role == "prediction"]
    assert pipeline.process(data).predictions == 0
    clock.now += 0.4
    assert pipeline.flush_due().predictions == 0
    clock.now += 0.2
    assert pipeline.flush_due().predictions == flushed


@pytest.mark.parametrize(("behind", "flushed"), [(False, 6), (True, 0)])
def test_max_buffer_ms_behind_is_the_wait_while_reads_come_back_full(
    behind: bool, flushed: int
) -> None:
    """While the caller's reads come back full (a backlog), a quiet model's events wait
    ``max_buffer_ms_behind`` instead of ``max_buffer_ms``."""
    clock = Clock()
    cfg = config(min_model_batch=1000, max_buffer_ms=500, max_buffer_ms_behind=2000)
    pipeline = Pipeline(cfg, clock=clock)
    data = [r for r in records(STREAMS[:1], 6) if r.role == "prediction"]
    assert pipeline.process(data).predictions == 0
    clock.now += 0.6
    assert pipeline.flush_due(behind=behind).predictions == flushed
    clock.now += 1.5
    assert pipeline.flush_due(behind=True).predictions == 6 - flushed


@pytest.mark.parametrize(("batch_size", "flushed"), [(7, 12), (6, 0)])
def test_a_full_batch_to_process_counts_as_behind(batch_size: int, flushed: int) -> None:
    """``process`` checks the waits itself after its records: a batch of ``batch_size``
    records means the read came back full, so the longer wait applies."""
    clock = Clock()
    cfg = config(
        min_model_batch=1000, max_buffer_ms=500, max_buffer_ms_behind=2000, batch_size=batch_size
    )
    pipeline = Pipeline(cfg, clock=clock)
    data = [r for r in records(STREAMS[:1], 12) if r.role == "prediction"]
    assert pipeline.process(data[:6]).predictions == 0
    clock.now += 0.6
    assert pipeline.process(data[6:]).predictions == flushed


def test_without_a_clock_only_the_count_or_a_flush_observes() -> None:
    """Replay has no processing time: ``max_buffer_ms`` does not apply, so its output does not
    depend on how fast it runs."""
    pipeline = Pipeline(config(min_model_batch=1000, max_buffer_ms=0))
    data = [r for r in records(STREAMS[:1], 6) if r.role == "prediction"]
    assert pipeline.process(data).predictions == 0
    assert pipeline.flush_due().predictions == 0
    assert pipeline.flush().predictions == 6


def test_the_wait_starts_with_the_first_buffered_event_not_with_a_waiting_outcome() -> None:
    """An outcome that waits in the join for its prediction buffers nothing: the model's
    ``max_buffer_ms`` starts with the first event in its buffer."""
    clock = Clock()
    pipeline = Pipeline(config(min_model_batch=1000, max_buffer_ms=500), clock=clock)
    data = records(STREAMS[:1], 40)
    outcome = next(r for r in data if r.role == "outcome")
    prediction = next(r for r in data if r.role == "prediction" and r.offset == 20)
    assert pipeline.process([outcome]).labeled == 0  # its prediction (offset 0) is not read
    clock.now += 0.4
    assert pipeline.process([prediction]).predictions == 0
    clock.now += 0.2
    assert pipeline.flush_due().predictions == 0  # 0.2 s after the prediction was buffered
    clock.now += 0.4
    assert pipeline.flush_due().predictions == 1
