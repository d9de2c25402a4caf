"""Throughput through the real broker: the raw consume-and-decode loop and the service.

Both read the same topics, filled before measuring (a backlog), each with its own consumer group:

* *raw*: a confluent-kafka ``Consumer`` reads both input topics with ``consume(2000, 0.2)`` and
  ``orjson.loads`` every value, until every message is read;
* *service*: ``service.app.DriftlineApp`` in this process, in the main thread, with the config
  ``load_config`` gives for the bench's ``DRIFTLINE_*`` variables (fresh topics and group, HTTP
  off, JSON logs; every processing setting at its default unless ``DRIFTLINE_PROCESSING__*`` is
  set in the environment). ``Pipeline.process`` (and ``flush_due`` / ``flush``, with which a
  micro-batching pipeline observes the events it held back) of its pipeline are wrapped on the
  instance (the service code is unchanged) to see what it is handed and what its monitors
  observed; once every record was handed over and accounted for (observed by its model's
  monitor, or dead-lettered), ``stop()`` is called, and the normal shutdown flushes the outputs
  and commits the offsets. Waiting for ``processing.max_buffer_ms`` at the end is part of the
  service's time.

Rates are messages per second from the start of the first non-empty batch: for the raw loop to
the last message decoded, for the service to the end of its shutdown (outputs flushed, offsets
committed), i.e. all of its work included. Both are also given from the start of the run
(group join and first fetch included).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.inputs import Stream
from driftline.service.config import Config, load_config
from driftline.service.pipeline import BatchResult, InputRecord, Pipeline

RAW_BATCH = 2000


@dataclass
class Rate:
    messages: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "us_per_message": round(1e6 * self.seconds / self.messages, 2)
            if self.messages
            else None,
            **self.extra,
        }


def service_settings(bootstrap: str, names: dict[str, str], group: str) -> dict[str, str]:
    """The environment that points a service at the bench's broker, topics and group (HTTP
    off, JSON logs); the parts add what they vary."""
    return {
        "DRIFTLINE_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLINE_TOPICS__PREDICTIONS": names["predictions"],
        "DRIFTLINE_TOPICS__OUTCOMES": names["outcomes"],
        "DRIFTLINE_TOPICS__ALERTS": names["alerts"],
        "DRIFTLINE_TOPICS__DEAD_LETTERS": names["dead-letters"],
        "DRIFTLINE_TOPICS__KPIS": names["model-kpis"],
        "DRIFTLINE_TOPICS__STATE": names["state"],
        "DRIFTLINE_GROUP_ID": group,
        "DRIFTLINE_HTTP__ENABLED": "false",
        "DRIFTLINE_LOG_FORMAT": "json",
    }


def create_topics(bootstrap: str, names: dict[str, int], compacted: tuple[str, ...] = ()) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=1,
                config={"cleanup.policy": "compact"} if name in compacted else {},
            )
            for name, n in names.items()
        ],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result(timeout=30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            print(f"bench: could not delete a topic: {exc}", file=sys.stderr)


def produce(bootstrap: str, stream: Stream) -> float:
    """Produce the whole stream (as a backlog, before measuring). Returns the seconds taken."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    failures: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.perf_counter()
    topics = stream.topics
    for role, partition, key, value in zip(
        stream.roles, stream.partition_of, stream.keys, stream.values, strict=True
    ):
        topic = topics[0] if role == "prediction" else topics[1]
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"produce failed: {remaining} undelivered, errors {failures[:3]}")
    return time.perf_counter() - started


def end_offsets(bootstrap: str, topics: tuple[str, ...], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{uuid.uuid4()}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            for p in range(partitions)
        )
    finally:
        consumer.close()


def committed_total(bootstrap: str, group: str, topics: tuple[str, ...], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed(
            [TopicPartition(t, p) for t in topics for p in range(partitions)], timeout=10
        )
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def raw_rate(config: Config, topics: tuple[str, str], total: int, group: str) -> Rate:
    consumer = Consumer(
        {
            **config.kafka_properties(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(list(topics))
    loads = orjson.loads
    count = 0
    first: float | None = None
    started = time.perf_counter()
    deadline = started + 600
    try:
        while count < total:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"raw consumer read only {count} of {total} messages")
            messages = consumer.consume(RAW_BATCH, 0.2)
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
            for message in messages:
                if message.error() is not None:
                    continue
                loads(message.value())  # type: ignore[arg-type]
                count += 1
        last = time.perf_counter()
    finally:
        consumer.close()
    assert first is not None
    return Rate(
        count,
        last - first,
        {"startup_s": round(first - started, 3), "from_start_s": round(last - started, 3)},
    )


def _pipeline_of(app: Any) -> Pipeline:
    pipeline = getattr(app, "_pipeline", None)
    if isinstance(pipeline, Pipeline):
        return pipeline
    for value in vars(app).values():
        if isinstance(value, Pipeline):
            return value
    raise RuntimeError("DriftlineApp holds no Pipeline the bench can observe")


def service_rate(environ: dict[str, str], total: int, timeout_s: float = 1200) -> Rate:
    """Run ``DriftlineApp`` until it has handled ``total`` messages (see the module doc)."""
    from driftline.service.app import DriftlineApp
    from driftline.service.logs import configure_logging

    config = load_config(None, environ=environ)
    configure_logging(config.logging.format, config.logging.level)
    app = DriftlineApp(config)
    pipeline = _pipeline_of(app)
    process = pipeline.process
    state: dict[str, Any] = {
        "handed": 0,
        "observed": 0,
        "accounted": 0,
        "expired": 0,
        "dead_letter_reasons": Counter(),
        "alerts": 0,
        "incidents": 0,
        "dead_letters": 0,
        "calls": 0,
        "process_s": 0.0,
        "waiting_max": 0,
    }
    marks: dict[str, float] = {}
    lock = threading.Lock()

    def finish() -> None:
        with lock:
            now = time.perf_counter()
            marks.setdefault("last", marks.get("last_progress", now))
            marks.setdefault("stop_called", now)
        app.stop()

    def account(result: BatchResult, started: float, handed: int) -> None:
        now = time.perf_counter()
        state["process_s"] += now - started
        state["calls"] += 1 if handed else 0
        state["handed"] += handed
        # Records accounted for: predictions and outcomes observed by a monitor, or dead-lettered
        # (an expired prediction was counted as a prediction already).
        accounted = result.predictions + result.labeled + len(result.dead_letters)
        if accounted:
            marks["last_progress"] = now
        state["accounted"] += accounted
        state["observed"] += result.predictions + result.labeled
        state["expired"] += result.expired_predictions
        state["dead_letter_reasons"].update(d.reason for d in result.dead_letters)
        state["alerts"] += sum(1 for a in result.alerts if a.get("kind") != "incident")
        state["incidents"] += sum(1 for a in result.alerts if a.get("kind") == "incident")
        state["dead_letters"] += len(result.dead_letters)
        waiting = sum(
            t.join.waiting_predictions + t.join.waiting_outcomes for t in pipeline.tasks.values()
        )
        state["waiting_max"] = max(state["waiting_max"], waiting)
        if state["handed"] >= total and "all_handed" not in marks:
            marks["all_handed"] = now
            if state["accounted"] < total:
                # Fallback should some records never be accounted for: stop 10 s later.
                grace = threading.Timer(10.0, finish)
                grace.daemon = True
                grace.start()
        if state["handed"] >= total and state["accounted"] >= total:
            finish()

    def timed_process(records: Sequence[InputRecord]) -> BatchResult:
        started = time.perf_counter()
        if records:
            marks.setdefault("first", started)
        result = process(records)
        account(result, started, len(records))
        return result

    def timed(method: Callable[..., BatchResult]) -> Callable[..., BatchResult]:
        def call(*args: Any, **kwargs: Any) -> BatchResult:
            started = time.perf_counter()
            result = method(*args, **kwargs)
            account(result, started, 0)
            return result

        return call

    # Hooks on the instance; the service code itself is unchanged. Micro-batching pipelines
    # observe held events in flush_due() (on max_buffer_ms) and flush() (shutdown): counted too.
    pipeline.process = timed_process  # type: ignore[method-assign]
    for name in ("flush_due", "flush"):
        method = getattr(pipeline, name, None)
        if callable(method):
            setattr(pipeline, name, timed(method))
    watchdog = threading.Timer(timeout_s, app.stop)
    watchdog.daemon = True
    watchdog.start()
    gc.collect()
    gc_before = int(gc.get_stats()[2]["collections"])
    started = time.perf_counter()
    try:
        app.run()
    finally:
        watchdog.cancel()
    stopped = time.perf_counter()
    if "all_handed" not in marks:
        raise RuntimeError(f"the service was handed {state['handed']} of {total} messages")
    first, last = marks["first"], marks["last"]
    # Idle time between the last progress and stop() (only when the pipeline held events back
    # and the grace timer stopped the service) is not the service's work: left out.
    shutdown = stopped - marks["stop_called"]
    return Rate(
        state["handed"],
        last - first + shutdown,
        {
            "to_last_batch_s": round(last - first, 3),
            "shutdown_s": round(shutdown, 3),
            "startup_s": round(first - started, 3),
            "from_start_s": round(stopped - started, 3),
            "process_s": round(state["process_s"], 3),
            "process_calls": state["calls"],
            "observed": state["observed"],
            "accounted": state["accounted"],
            "expired_predictions": state["expired"],
            "dead_letter_reasons": dict(state["dead_letter_reasons"]),
            "alerts": state["alerts"],
            "incidents": state["incidents"],
            "dead_letters": state["dead_letters"],
            "join_waiting_max": state["waiting_max"],
            "gc_gen2": int(gc.get_stats()[2]["collections"]) - gc_before,
            "group": config.kafka.group_id,
        },
    )
