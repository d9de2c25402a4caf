"""In memory, no Kafka: ``Pipeline.process`` against the naive per-event implementation.

Both get the same messages as the broker runs, in the order they were produced (the models
interleaved event by event, each outcome 5 events after its prediction). ``Pipeline.process`` gets
them as ``InputRecord`` s in batches of ``processing.batch_size`` (2,000), with the config the
service gets from ``load_config`` (every processing and monitor setting at its default, so also
per-model micro-batching) and, as in the service, ``time.monotonic`` as its clock;
``bench/naive.py`` gets them one by one. The ``InputRecord`` s are built before timing (in the
service, building them is part of the Kafka loop). After the last batch the pipeline's
``flush()`` observes what it still holds (the service does that at shutdown): timed too.
"""

from __future__ import annotations

import gc
import inspect
import time
from collections import Counter
from typing import Any

from bench.broker import Rate
from bench.naive import NaiveMonitor
from driftline.service.config import load_config
from driftline.service.pipeline import InputRecord, Pipeline


def pipeline_rate(environ: dict[str, str], records: list[InputRecord]) -> Rate:
    config = load_config(None, environ=environ)
    timed = "clock" in inspect.signature(Pipeline).parameters
    pipeline = Pipeline(config, clock=time.monotonic) if timed else Pipeline(config)
    size = config.processing.batch_size
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    counts = {"observed": 0, "expired_predictions": 0, "alerts": 0, "incidents": 0}
    reasons: Counter[str] = Counter()

    def call(batch: list[InputRecord] | None) -> None:
        result = pipeline.process(batch) if batch is not None else pipeline.flush(end_of_input=True)
        counts["observed"] += result.predictions + result.labeled
        counts["expired_predictions"] += result.expired_predictions
        reasons.update(d.reason for d in result.dead_letters)
        counts["alerts"] += sum(1 for a in result.alerts if a.get("kind") != "incident")
        counts["incidents"] += sum(1 for a in result.alerts if a.get("kind") == "incident")

    gc.collect()
    gc_before = int(gc.get_stats()[2]["collections"])
    started = time.perf_counter()
    for batch in batches:
        call(batch)
    if callable(getattr(pipeline, "flush", None)):
        call(None)
    seconds = time.perf_counter() - started
    return Rate(
        len(records),
        seconds,
        {
            "batches": len(batches),
            "batch_size": size,
            **counts,
            "dead_letters": sum(reasons.values()),
            "dead_letter_reasons": dict(reasons),
            "gc_gen2": int(gc.get_stats()[2]["collections"]) - gc_before,
        },
    )


def naive_rate(records: list[InputRecord]) -> Rate:
    monitor = NaiveMonitor()
    pairs: list[tuple[str, Any]] = [(r.role, r.value) for r in records]
    process = monitor.process
    gc.collect()
    started = time.perf_counter()
    for role, value in pairs:
        process(role, value)
    seconds = time.perf_counter() - started
    return Rate(
        len(records),
        seconds,
        {
            "alerts": len(monitor.alerts),
            "test_seconds": round(monitor.test_seconds, 3),
            "models": len(monitor.models),
        },
    )
