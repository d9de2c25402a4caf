"""Integration fixtures: the real broker (started by ``make test``), per-test topics, the service
as a real subprocess, and helpers that wait on conditions with deadlines."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.service.config import load_config
from driftline.service.replay import replay

ROOT = Path(__file__).resolve().parents[2]
DRIFTLINE = [sys.executable, "-m", "driftline.service.cli"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    address = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    admin = AdminClient({"bootstrap.servers": address})
    try:
        admin.list_topics(timeout=20)
    except Exception as exc:  # the run must fail loudly, never skip
        pytest.fail(
            f"no Kafka broker answers at {address} ({exc}); run the tests with `make test`, "
            "which starts deploy/kafka/broker.sh"
        )
    return address


@dataclass
class Topics:
    prefix: str
    predictions: str
    outcomes: str
    alerts: str
    dead_letters: str
    kpis: str
    group_id: str
    state: str

    def env(self) -> dict[str, str]:
        return {
            "DRIFTLINE_TOPICS__PREDICTIONS": self.predictions,
            "DRIFTLINE_TOPICS__OUTCOMES": self.outcomes,
            "DRIFTLINE_TOPICS__ALERTS": self.alerts,
            "DRIFTLINE_TOPICS__DEAD_LETTERS": self.dead_letters,
            "DRIFTLINE_TOPICS__KPIS": self.kpis,
            "DRIFTLINE_TOPICS__STATE": self.state,
            "DRIFTLINE_GROUP_ID": self.group_id,
        }


def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
            for name in names
        ],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result(timeout=30)


@pytest.fixture
def topics(bootstrap: str, request: pytest.FixtureRequest) -> Topics:
    return new_topics(bootstrap, request.node.name[:40].replace("[", "-").replace("]", ""))


def new_topics(bootstrap: str, label: str) -> Topics:
    """A fresh set of the service's topics, named after ``label`` and made unique."""
    prefix = f"t-{label}-{uuid.uuid4().hex[:6]}"
    result = Topics(
        prefix,
        f"{prefix}.predictions",
        f"{prefix}.outcomes",
        f"{prefix}.alerts",
        f"{prefix}.dead-letters",
        f"{prefix}.kpis",
        f"{prefix}.group",
        f"{prefix}.state",
    )
    create_topics(bootstrap, [result.predictions, result.outcomes], partitions=2)
    create_topics(bootstrap, [result.alerts, result.dead_letters, result.kpis], partitions=1)
    create_topics(bootstrap, [result.state], partitions=1, config={"cleanup.policy": "compact"})
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ServiceProcess:
    """``driftline run`` as a real subprocess."""

    bootstrap: str
    topics: Topics
    tmp: Path
    config: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    def start(self) -> ServiceProcess:
        config = {
            "processing": {"commit_interval_s": 0.5, "poll_timeout_s": 0.1},
            "http": {"port": self.port, "host": "127.0.0.1"},
            "logging": {"format": "json", "level": "info"},
        }
        config = _merge(config, self.config)
        path = self.tmp / "driftline.yaml"
        path.write_text(yaml.safe_dump(config))
        self.starts += 1
        self.log_path = self.tmp / f"service-{self.starts}.log"
        env = {**os.environ, **self.topics.env(), "DRIFTLINE_BOOTSTRAP_SERVERS": self.bootstrap}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*DRIFTLINE, "run", "--config", str(path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        assert self.log_path is not None
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                lines.append({"raw": raw.decode("utf-8", "replace")})
        return lines

    def wait_logged(self, event: str, timeout: float = 60, occurrence: int = 1) -> dict[str, Any]:
        """The ``occurrence``-th log line of ``event``, waiting for it with a deadline."""

        def find() -> dict[str, Any] | None:
            found = [x for x in self.log_lines() if x.get("event") == event]
            return found[occurrence - 1] if len(found) >= occurrence else None

        return wait_for(find, timeout, f"the service to log {event!r}; log: {self.log_path}")

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(
                f"driftline did not stop within {timeout} s of SIGTERM; log: {self.log_path}"
            )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


@pytest.fixture
def service(bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(bootstrap, topics, tmp_path)
    yield proc
    if proc.process is not None and proc.process.poll() is None:
        proc.stop()


def produce(bootstrap: str, items: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 10, "message.max.bytes": 10_000_000}
    )
    count = 0
    for topic, key, value in items:
        producer.produce(topic, key=key, value=value)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0, "the test producer could not deliver everything"
    return count


def produce_events(
    bootstrap: str, topics: Topics, pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]
) -> int:
    def items() -> Iterator[tuple[str, bytes | None, bytes | None]]:
        for prediction, outcome in pairs:
            key = prediction["model_id"].encode()
            yield topics.predictions, key, orjson.dumps(prediction)
            yield topics.outcomes, key, orjson.dumps(outcome)

    return produce(bootstrap, items())


class TopicReader:
    """Reads a topic from the beginning and keeps everything it has read."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])

    def poll(self) -> list[Message]:
        for message in self._consumer.consume(1000, 0.2):
            if message.error() is None:
                self.messages.append(message)
        return self.messages

    def values(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value() or b"null") for m in self.messages]

    def wait(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            self.poll()
            values = self.values()
            return values if condition(values) else None

        return wait_for(check, timeout, what, interval=0)

    def drain(self, quiet_s: float = 2.0) -> list[Message]:
        """Read until nothing new arrives for ``quiet_s`` (used to assert an absence)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            before = len(self.messages)
            self.poll()
            if len(self.messages) != before:
                last = time.monotonic()
        return self.messages

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def reader(bootstrap: str) -> Iterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        readers.append(TopicReader(bootstrap, topic))
        return readers[-1]

    yield make
    for r in readers:
        r.close()


def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    except KafkaException:
        # The group coordinator is still being elected (NOT_COORDINATOR): nothing committed yet.
        return {}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def wait_processed(bootstrap: str, topics: Topics, timeout: float = 120) -> None:
    """Wait until the group's committed offsets reach the end of both input topics.

    The service flushes its outputs before it commits, so afterwards every alert caused by the
    input is in the alerts topic."""
    for topic in (topics.predictions, topics.outcomes):
        ends = end_offsets(bootstrap, topic, 2)

        def caught_up(t: str = topic, e: dict[int, int] = ends) -> bool:
            committed = committed_offsets(bootstrap, topics.group_id, t, 2)
            # An empty partition has nothing to commit.
            return all(end == 0 or committed.get(p) == end for p, end in e.items())

        wait_for(caught_up, timeout, f"the service to commit {topic} up to {ends}")


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every message of a one-partition topic, up to its current end, as a ``read_committed``
    subscriber (librdkafka's default) sees them: messages of aborted transactions and the
    transaction markers take offsets but are not messages."""
    end = end_offsets(bootstrap, topic, 1)[0]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "read-all",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    tp = TopicPartition(topic, 0, 0)
    consumer.assign([tp])
    messages: list[Any] = []

    def at_end() -> bool:
        messages.extend(m for m in consumer.consume(500, 0.2) if not m.error())
        return end == 0 or consumer.position([tp])[0].offset >= end

    try:
        wait_for(at_end, 30, f"the end ({end}) of {topic}", interval=0)
    finally:
        consumer.close()
    return messages


def read_until(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 60
) -> list[Any]:
    """The messages of a one-partition topic once ``done`` holds for them. Offsets committed
    do not mean every alert is out: an alert held for the other stream (``detectors.held``) is
    published once that stream has nothing left to read, ``processing.max_buffer_ms`` later."""
    return wait_for(
        lambda: found if done(found := read_all(bootstrap, topic)) else None,
        timeout,
        f"{topic} to hold what the test expects",
        interval=0.2,
    )


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def essentials(alert: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an alert decision, compared between a live run and a replay."""
    return (
        alert["model_id"],
        alert["kind"],
        alert["status"],
        alert["severity"],
        alert["detector"],
        alert.get("metric"),
        alert.get("feature"),
        round(alert["value"], 9) if isinstance(alert["value"], float) else alert["value"],
        round(alert["threshold"], 9) if isinstance(alert["threshold"], float) else None,
    )


def replay_alerts(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]], defaults: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """What ``driftline replay`` publishes for these (prediction, outcome) pairs, with
    ``defaults`` as the monitor settings when given: what a live run must decide."""
    lines = b"".join(
        orjson.dumps({"topic": topic, "key": event["model_id"], "value": event}) + b"\n"
        for prediction, outcome in pairs
        for topic, event in (("predictions", prediction), ("outcomes", outcome))
    )
    sink = io.BytesIO()
    config = load_config(None, environ={})
    if defaults:
        config = config.model_copy(update={"defaults": defaults})
    replay(config, io.BytesIO(lines), sink)
    return [orjson.loads(line) for line in sink.getvalue().splitlines()]
