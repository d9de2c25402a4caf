"""Throughput through a real broker, as a ratio to the raw consume-and-decode rate of the same run.

``make bench`` runs this inside ``deploy/with-broker.sh`` (which sets
``DRIFTLINE_BOOTSTRAP_SERVERS``) and writes ``bench/RESULTS.md``. In one run:

1. produce the input: 5 models x 20 features (15 numeric, 5 categorical), by default 40,000
   predictions and 40,000 outcomes per model, to fresh topics (2 partitions, a model's events on
   one partition of both topics); one model degrades halfway so a few alerts are produced too;
2. *raw*: a confluent-kafka ``Consumer`` reads both topics in batches (``consume(2000, ...)``) and
   ``orjson.loads`` every value, until all messages are read;
3. *service*: ``service.app.DriftlineApp`` in this process (config from ``load_config`` with
   ``DRIFTLINE_*`` overrides: fresh topics and group, HTTP off, otherwise the defaults) runs in
   the main thread; its batch handler is wrapped to time the first batch and to call
   ``app.stop()`` once every message has been processed (outputs produced, offsets stored);
4. *in memory*: ``service.pipeline.Pipeline.process`` without Kafka over the same messages
   pre-built as ``InputRecord`` s: once in exactly the batches the service got (rebuilt from the
   offset ranges it handled), once with the models interleaved event by event in batches of
   2,000; then the service's batches again under cProfile.

Rates are messages per second from the first non-empty batch to the last message handled. The
machine is shared, so absolute rates move from run to run; only the ratios within one run are
comparable. The topics created are deleted at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from service.config import Config, load_config
from service.pipeline import InputRecord, Pipeline, Role

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000


def _streams() -> Any:
    """``bench/quality.py``: the same synthetic 20-feature model as ``make quality``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import quality

    return quality


@dataclass
class Input:
    """The messages of the run, as produced: (partition, key, value) per topic, in order."""

    predictions: list[tuple[int, bytes, bytes]]
    outcomes: list[tuple[int, bytes, bytes]]
    in_memory: list[InputRecord]

    @property
    def total(self) -> int:
        return len(self.predictions) + len(self.outcomes)


def build_input(models: int, events: int, partitions: int, topics: tuple[str, str]) -> Input:
    """``events`` predictions and outcomes per model. The in-memory copy interleaves the models
    event by event, each outcome 5 predictions after its own (as the event times say)."""
    q = _streams()
    specs = [
        q.StreamSpec(model_id=f"bench-m{k}", seed=500 + k)
        if k < models - 1
        else q.StreamSpec(
            model_id=f"bench-m{k}",
            seed=500 + k,
            change_at=events // 2,
            accuracy_after=0.81,
            shift=("n01_normal", 0.5),
        )
        for k in range(models)
    ]
    per_model = [q.generate_chunk(spec, 0, events) for spec in specs]
    predictions: list[tuple[int, bytes, bytes]] = []
    outcomes: list[tuple[int, bytes, bytes]] = []
    in_memory: list[InputRecord] = []
    offsets = {(topic, p): 0 for topic in topics for p in range(partitions)}

    def add(role: Role, k: int, value: bytes, ts: int) -> None:
        topic = topics[0] if role == "prediction" else topics[1]
        partition = k % partitions
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] = offset + 1
        key = specs[k].model_id.encode()
        in_memory.append(InputRecord(role, topic, partition, offset, key, value, ts))

    lag = q.LABEL_LAG
    for j in range(events + lag):
        ts = q.START_MS + j * q.STEP_MS
        if j < events:
            for k, (preds, _) in enumerate(per_model):
                predictions.append((k % partitions, specs[k].model_id.encode(), preds[j]))
                add("prediction", k, preds[j], ts)
        if j >= lag:
            for k, (_, outs) in enumerate(per_model):
                outcomes.append((k % partitions, specs[k].model_id.encode(), outs[j - lag]))
                add("outcome", k, outs[j - lag], ts)
    return Input(predictions, outcomes, in_memory)


# -- Kafka -----------------------------------------------------------------------------------


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in names.items()],
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


def produce(bootstrap: str, topics: tuple[str, str], data: Input) -> float:
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
    for topic, messages in ((topics[0], data.predictions), (topics[1], data.outcomes)):
        for partition, key, value in messages:
            while True:
                try:
                    producer.produce(
                        topic, value, key, partition=partition, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"produce failed: {remaining} undelivered, errors {failures[:3]}")
    return time.perf_counter() - started


def end_offsets(bootstrap: str, topics: tuple[str, str], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{uuid.uuid4()}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            for p in range(partitions)
        )
    finally:
        consumer.close()


def committed_total(bootstrap: str, group: str, topics: tuple[str, str], partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed(
            [TopicPartition(t, p) for t in topics for p in range(partitions)], timeout=10
        )
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


@dataclass
class Rate:
    messages: int
    seconds: float
    extra: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")


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
            messages = consumer.consume(BATCH, 0.2)
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
            for message in messages:
                if message.error() is not None:
                    continue
                loads(message.value())
                count += 1
        last = time.perf_counter()
    finally:
        consumer.close()
    assert first is not None
    return Rate(count, last - first, {"startup_s": first - started})


Ranges = dict[tuple[str, int], tuple[int, int]]


def service_rate(
    environ: dict[str, str], topics: tuple[str, str], total: int, timeout_s: float = 900
) -> tuple[Rate, dict[str, Any], list[Ranges]]:
    """Run ``DriftlineApp`` until it has handled ``total`` messages. Also returns, per batch, the
    offset range it held of each topic-partition, so the same batches can be replayed."""
    from service.app import DriftlineApp
    from service.logs import configure_logging

    config = load_config(None, environ=environ)
    configure_logging(config.logging.format, config.logging.level)
    app = DriftlineApp(config)
    pipeline = app._pipeline
    handle, publish, process = app._handle, app._publish, pipeline.process
    marks: dict[str, float] = {}
    seconds = {"process": 0.0, "publish": 0.0, "handle": 0.0}
    counts = {"alerts": 0, "waiting_max": 0}
    batches: list[Ranges] = []

    def timed_process(records: list[InputRecord]) -> Any:
        started = time.perf_counter()
        result = process(records)
        seconds["process"] += time.perf_counter() - started
        ranges: Ranges = {}
        for record in records:
            key = (record.topic, record.partition)
            low = ranges.get(key, (record.offset, record.offset))[0]
            ranges[key] = (low, record.offset)
        batches.append(ranges)
        waiting = sum(
            t.join.waiting_predictions + t.join.waiting_outcomes for t in pipeline.tasks.values()
        )
        counts["waiting_max"] = max(counts["waiting_max"], waiting)
        return result

    def timed_publish(result: Any) -> None:
        counts["alerts"] += len(result.alerts)
        started = time.perf_counter()
        publish(result)
        seconds["publish"] += time.perf_counter() - started

    def timed_handle(messages: list[Any]) -> None:
        started = time.perf_counter()
        marks.setdefault("first", started)
        handle(messages)
        seconds["handle"] += time.perf_counter() - started
        if app._consumed >= total and "last" not in marks:
            marks["last"] = time.perf_counter()
            app.stop()

    # Timing hooks on the instance; the service code itself is unchanged.
    app._handle = timed_handle  # type: ignore[method-assign]
    app._publish = timed_publish  # type: ignore[method-assign]
    pipeline.process = timed_process  # type: ignore[method-assign]
    watchdog = threading.Timer(timeout_s, app.stop)
    watchdog.daemon = True
    watchdog.start()
    gc_before = _gen2_collections()
    started = time.perf_counter()
    try:
        app.run()
    finally:
        watchdog.cancel()
    stopped = time.perf_counter()
    if "last" not in marks:
        raise RuntimeError(f"the service processed {app._consumed} of {total} messages")
    rate = Rate(
        app._consumed,
        marks["last"] - marks["first"],
        {
            "startup_s": marks["first"] - started,
            "end_to_end_s": marks["last"] - started,
            "shutdown_s": stopped - marks["last"],
            "process_s": seconds["process"],
            "publish_s": seconds["publish"],
            "handle_s": seconds["handle"],
            "alerts": counts["alerts"],
            "waiting_max": counts["waiting_max"],
            "gc_gen2": _gen2_collections() - gc_before,
            "batches": len(batches),
        },
    )
    return rate, {"group": config.kafka.group_id}, batches


def _gen2_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def replay_batches(
    data: Input, topics: tuple[str, str], batches: list[Ranges]
) -> list[list[InputRecord]]:
    """The service's batches rebuilt from the produced messages (same records, same order per
    topic-partition; partitions of one batch follow each other)."""
    by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for topic, messages in ((topics[0], data.predictions), (topics[1], data.outcomes)):
        for partition, key, value in messages:
            by_partition.setdefault((topic, partition), []).append((key, value))
    out = []
    for ranges in batches:
        batch = []
        for (topic, partition), (low, high) in ranges.items():
            role: Role = "prediction" if topic == topics[0] else "outcome"
            messages = by_partition[(topic, partition)]
            for offset in range(low, high + 1):
                key, value = messages[offset]
                batch.append(InputRecord(role, topic, partition, offset, key, value))
        out.append(batch)
    return out


def memory_rate(batches: list[list[InputRecord]]) -> Rate:
    pipeline = Pipeline(load_config(None, environ={}))
    alerts = waiting_max = 0
    gc_before = _gen2_collections()
    started = time.perf_counter()
    for batch in batches:
        alerts += len(pipeline.process(batch).alerts)
        waiting = sum(
            t.join.waiting_predictions + t.join.waiting_outcomes for t in pipeline.tasks.values()
        )
        waiting_max = max(waiting_max, waiting)
    seconds = time.perf_counter() - started
    return Rate(
        sum(len(b) for b in batches),
        seconds,
        {
            "alerts": alerts,
            "waiting_max": waiting_max,
            "gc_gen2": _gen2_collections() - gc_before,
            "batches": len(batches),
        },
    )


def chunked(records: list[InputRecord]) -> list[list[InputRecord]]:
    return [records[i : i + BATCH] for i in range(0, len(records), BATCH)]


def profile(batches: list[list[InputRecord]], top: int = 10) -> tuple[float, list[str], list[str]]:
    pipeline = Pipeline(load_config(None, environ={}))
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        pipeline.process(batch)
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    entries = [(func, nc, tt, ct) for func, (_, nc, tt, ct, _) in raw.items()]
    # 100% is the time inside Pipeline.process (the harness loop around it is left out).
    total = max(ct for func, _, _, ct in entries if func[2] == "process")

    def table(key: int) -> list[str]:
        ranked = sorted(entries, key=lambda e: -e[key])
        rows = [
            "| function | calls | self s | cumulative s | cumulative % |",
            "|---|---|---|---|---|",
        ]
        shown = 0
        for func, nc, tt, ct in ranked:
            name = _function_name(func)
            if name.startswith("bench/"):
                continue
            rows.append(f"| `{name}` | {nc:,} | {tt:.2f} | {ct:.2f} | {100 * ct / total:.0f}% |")
            shown += 1
            if shown == top:
                break
        return rows

    return total, table(3), table(2)


def _function_name(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name
    for prefix in (str(ROOT) + "/", *(p + "/" for p in sys.path if p.endswith("site-packages"))):
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    return f"{path}:{line}({name})"


# -- report ----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    jars = sorted(ROOT.glob("deploy/kafka/.cache/lib-*/kafka-clients-*.jar"))
    kafka = jars[-1].name.removeprefix("kafka-clients-").removesuffix(".jar") if jars else "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "confluent-kafka / librdkafka": (
            f"{confluent_kafka.__version__} / {confluent_kafka.libversion()[0]}"
        ),
        "numpy": np.__version__,
        "orjson": orjson.__version__,
        "broker": f"local single-node Apache Kafka {kafka} (KRaft), deploy/kafka/broker.sh",
    }


def quality_summary() -> list[str]:
    path = ROOT / "bench" / "QUALITY.md"
    if not path.exists():
        return ["`bench/QUALITY.md` is not there yet: run `make quality`."]
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [
        "From [`QUALITY.md`](QUALITY.md) (`make quality`: detection delay and false alarms of "
        "the defaults, seeded synthetic streams through `Pipeline.process`; see there for the "
        "definitions, per-seed delays and the config dump):",
        "",
    ]
    generated = next((x for x in lines if x.startswith("Generated by")), None)
    if generated:
        out += [generated, ""]
    verdict = next((x for x in lines if x.startswith("**") and "floors met" in x), None)
    if verdict:
        out += [verdict, ""]
    start = next((i for i, x in enumerate(lines) if x.startswith("## Results")), None)
    if start is not None:
        end = next((i for i, x in enumerate(lines[start + 1 :]) if x.startswith("## ")), len(lines))
        table = [x for x in lines[start + 1 : start + 1 + end] if x.startswith("|")]
        out += table
    return out


def render(
    info: dict[str, Any],
    *,
    raw: Rate,
    service: Rate,
    replayed: Rate,
    memory: Rate,
    prof: tuple[float, list[str], list[str]],
) -> str:
    def ratio(r: Rate) -> str:
        return f"{r.per_second / raw.per_second:.2f}"

    def us(seconds: float, messages: int) -> str:
        return f"{1e6 * seconds / messages:.1f}"

    x = service.extra
    n = service.messages
    end_to_end = n / x["end_to_end_s"]
    other_handle = x["handle_s"] - x["process_s"] - x["publish_s"]
    outside = service.seconds - x["handle_s"]
    lines = [
        "# Benchmarks",
        "",
        "## Throughput (`make bench`)",
        "",
        f"Run {info['date']} by `bench/throughput.py` (run id `{info['run']}`).",
        "",
        "**The machine is shared with other work, so absolute rates vary from run to run; "
        "only the ratios within one run are comparable.** Load average (1, 5, 15 min) at the "
        f"start: {info['load_before']}, at the end: {info['load_after']}.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info["machine"].items()),
        "",
        f"Input: {info['models']} models x 20 features (15 numeric, 5 categorical), "
        f"{info['events']:,} predictions and {info['events']:,} outcomes per model: "
        f"**N = {raw.messages:,} messages** ({info['bytes'] / raw.messages:.0f} bytes per "
        f"message on average), on {info['partitions']} partitions per input topic, produced "
        f"(lz4) before measuring in {info['produce_s']:.1f} s. Model `bench-m{info['models'] - 1}` "
        "loses accuracy and shifts a feature halfway, so alerts are produced too "
        f"({x['alerts']:.0f} alert events by the service).",
        "",
        "| measurement | messages | seconds | messages/s | µs/message | ratio to raw |",
        "|---|---|---|---|---|---|",
        f"| raw: `Consumer.consume({BATCH})` + `orjson.loads` of each value | {raw.messages:,} | "
        f"{raw.seconds:.2f} | {raw.per_second:,.0f} | {us(raw.seconds, raw.messages)} | 1.00 |",
        f"| **service: `DriftlineApp` in-process, first batch → last message handled** | "
        f"{n:,} | {service.seconds:.2f} | **{service.per_second:,.0f}** | "
        f"{us(service.seconds, n)} | **{ratio(service)}** |",
        f"| service end to end, from `run()` (incl. {x['startup_s']:.1f} s start-up and group "
        f"join) | {n:,} | {x['end_to_end_s']:.2f} | {end_to_end:,.0f} | "
        f"{us(x['end_to_end_s'], n)} | {end_to_end / raw.per_second:.2f} |",
        f"| `Pipeline.process` in memory, the service's {replayed.extra['batches']:.0f} batches "
        f"replayed (no Kafka) | {replayed.messages:,} | {replayed.seconds:.2f} | "
        f"{replayed.per_second:,.0f} | {us(replayed.seconds, replayed.messages)} | "
        f"{ratio(replayed)} |",
        f"| `Pipeline.process` in memory, models interleaved event by event, batches of "
        f"{BATCH:,} (no Kafka) | {memory.messages:,} | {memory.seconds:.2f} | "
        f"{memory.per_second:,.0f} | {us(memory.seconds, memory.messages)} | {ratio(memory)} |",
        "",
        "- Rates run from the moment the first non-empty batch is returned to the moment the "
        "last message is handled (raw: decoded; service: processed, outputs produced, offset "
        "stored). The raw consumer waited "
        f"{raw.extra['startup_s']:.1f} s for its first batch (group join and first fetch).",
        "- Service config: the defaults (`load_config(None, environ=...)`) with fresh topics and "
        "group, `http.enabled: false`, JSON logs; `processing.batch_size` 2000, commits every "
        f"5 s. After `stop()` the shutdown (final flush and commit) took "
        f"{x['shutdown_s']:.1f} s; committed offsets afterwards: "
        f"{info['committed']:,} of {raw.messages:,}.",
        "",
        "Where the service's time went (timing hooks on the app instance; µs per message):",
        "",
        "| part | seconds | µs/message | share |",
        "|---|---|---|---|",
        *(
            f"| {label} | {sec:.2f} | {us(sec, n)} | {100 * sec / service.seconds:.0f}% |"
            for label, sec in (
                ("`Pipeline.process` (decode, join, monitors)", x["process_s"]),
                ("`_publish` (alerts, dead letters, metrics)", x["publish_s"]),
                ("rest of `_handle` (`InputRecord`s, offsets, counters)", other_handle),
                ("outside `_handle` (consume, producer poll, commits, lag checks)", outside),
            )
        ),
        "",
        f"- `Pipeline.process` took {us(x['process_s'], n)} µs per message inside the service "
        f"and {us(replayed.seconds, replayed.messages)} µs when the same batches were replayed "
        f"in memory; interleaved event by event it takes {us(memory.seconds, memory.messages)} "
        "µs. Join buffer, most entries waiting at the end of a batch: "
        f"service {x['waiting_max']:,.0f}, replay {replayed.extra['waiting_max']:,.0f}, "
        f"interleaved {memory.extra['waiting_max']:,.0f} (the two topics are fetched "
        "independently, so behind Kafka one side runs ahead and the join holds the other "
        "side's events). Full (generation 2) garbage collections: service "
        f"{x['gc_gen2']:.0f}, replay {replayed.extra['gc_gen2']:.0f}, interleaved "
        f"{memory.extra['gc_gen2']:.0f}.",
        "",
        "### Where the hot path spends",
        "",
        f"`Pipeline.process` on the service's batches replayed in memory ({prof[0]:.1f} s inside "
        "`process` = 100%; cProfile inflates per-call overhead, so read it for proportions). "
        "Top 10 by cumulative time:",
        "",
        *prof[1],
        "",
        "Top 10 by self time:",
        "",
        *prof[2],
        "",
        "## Detection quality (`make quality`)",
        "",
        *quality_summary(),
        "",
    ]
    return "\n".join(lines)


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--events", type=int, default=40_000, help="predictions per model")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)

    bootstrap = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    run = f"bench-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    names = {
        kind: f"{run}.{kind}"
        for kind in ("predictions", "outcomes", "alerts", "dead-letters", "model-kpis")
    }
    topics = (names["predictions"], names["outcomes"])
    environ = {
        "DRIFTLINE_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLINE_TOPICS__PREDICTIONS": names["predictions"],
        "DRIFTLINE_TOPICS__OUTCOMES": names["outcomes"],
        "DRIFTLINE_TOPICS__ALERTS": names["alerts"],
        "DRIFTLINE_TOPICS__DEAD_LETTERS": names["dead-letters"],
        "DRIFTLINE_TOPICS__KPIS": names["model-kpis"],
        "DRIFTLINE_GROUP_ID": f"{run}.service",
        "DRIFTLINE_HTTP__ENABLED": "false",
        "DRIFTLINE_LOG_FORMAT": "json",
    }
    # Processing settings can be varied from outside, e.g. DRIFTLINE_PROCESSING__MAX_SKEW_S.
    environ.update({k: v for k, v in os.environ.items() if k.startswith("DRIFTLINE_PROCESSING__")})
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run": run,
        "models": args.models,
        "events": args.events,
        "partitions": args.partitions,
        "machine": machine(),
        "load_before": _load(),
    }
    print(f"bench: {run} on {bootstrap}; building the input", file=sys.stderr)
    data = build_input(args.models, args.events, args.partitions, topics)
    info["bytes"] = sum(len(v) for _, _, v in data.predictions) + sum(
        len(v) for _, _, v in data.outcomes
    )
    create_topics(
        bootstrap,
        {
            **dict.fromkeys(topics, args.partitions),
            names["alerts"]: 1,
            names["dead-letters"]: 1,
            names["model-kpis"]: 1,
        },
    )
    try:
        info["produce_s"] = produce(bootstrap, topics, data)
        present = end_offsets(bootstrap, topics, args.partitions)
        if present != data.total:
            raise RuntimeError(f"{present} messages in the topics, expected {data.total}")
        print(f"bench: produced {data.total:,} messages; raw consume", file=sys.stderr)
        config = load_config(None, environ=environ)
        gc.collect()
        raw = raw_rate(config, topics, data.total, f"{run}.raw")
        print(f"bench: raw {raw.per_second:,.0f} msg/s; service", file=sys.stderr)
        gc.collect()
        service, extra, batches = service_rate(environ, topics, data.total)
        info["committed"] = committed_total(bootstrap, extra["group"], topics, args.partitions)
        print(f"bench: service {service.per_second:,.0f} msg/s; in memory", file=sys.stderr)
        replay = replay_batches(data, topics, batches)
        gc.collect()
        replayed = memory_rate(replay)
        gc.collect()
        memory = memory_rate(chunked(data.in_memory))
        print(
            f"bench: in memory {replayed.per_second:,.0f} msg/s (service batches), "
            f"{memory.per_second:,.0f} msg/s (interleaved); profile",
            file=sys.stderr,
        )
        gc.collect()
        prof = profile(replay)
    finally:
        if not args.keep_topics:
            delete_topics(bootstrap, list(names.values()))
    info["load_after"] = _load()
    args.output.write_text(
        render(info, raw=raw, service=service, replayed=replayed, memory=memory, prof=prof),
        encoding="utf-8",
    )
    print(
        f"bench: raw {raw.per_second:,.0f} msg/s, service {service.per_second:,.0f} msg/s "
        f"(ratio {service.per_second / raw.per_second:.2f}), in-memory pipeline "
        f"{replayed.per_second:,.0f} msg/s (service batches) / {memory.per_second:,.0f} msg/s "
        f"(interleaved); N = {raw.messages:,}; wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
