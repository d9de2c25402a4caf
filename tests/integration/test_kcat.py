"""Interop with plain Kafka tools: the README's ``kcat`` commands, run verbatim against a running
``driftline run`` on the real broker. kcat produces the events (one model degrades, one stays
healthy, a few messages are bad), and kcat reads back the alerts and the dead letters with
their headers.

The commands are the module constants below, written exactly as the README shows them (default
topic names, ``$BOOTSTRAP`` with its default); at run time only the topic after ``-t`` is
replaced by the test's own, and ``BOOTSTRAP`` is set in the environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from driftline.service.config import KafkaSettings, TopicSettings
from driftline.service.synthetic import ModelStream, generate
from tests.schemas import validate_output

from .conftest import (
    ROOT,
    ServiceProcess,
    Topics,
    end_offsets,
    essentials,
    replay_alerts,
    scrape,
    wait_for,
    wait_processed,
)

# --- The README's commands, verbatim -------------------------------------------------------------

PRODUCE_PREDICTIONS = """kcat -b "${BOOTSTRAP:-127.0.0.1:9092}" -P -t predictions -K '|'"""
PRODUCE_OUTCOMES = """kcat -b "${BOOTSTRAP:-127.0.0.1:9092}" -P -t outcomes -K '|'"""
EXAMPLE_PREDICTION = (
    'fraud-scorer|{"event_id":"7f9c2a1e","model_id":"fraud-scorer","model_version":"2024-06-01",'
    '"timestamp":"2026-11-27T10:15:00.250Z","features":{"amount":129.5,"country":"DE",'
    '"is_new_device":true},"prediction":0,"score":0.07}'
)
EXAMPLE_OUTCOME = (
    'fraud-scorer|{"event_id":"7f9c2a1e","model_id":"fraud-scorer","timestamp":1795774800250,'
    '"label":0}'
)
PRODUCE_EXAMPLE_PREDICTION = f"{PRODUCE_PREDICTIONS} <<'EOF'\n{EXAMPLE_PREDICTION}\nEOF"
PRODUCE_EXAMPLE_OUTCOME = f"{PRODUCE_OUTCOMES} <<'EOF'\n{EXAMPLE_OUTCOME}\nEOF"
READ_ALERTS = (
    'kcat -b "${BOOTSTRAP:-127.0.0.1:9092}" -C -t alerts -o beginning -e -q \\\n'
    "    -X isolation.level=read_committed"
)
READ_DEAD_LETTERS = (
    'kcat -b "${BOOTSTRAP:-127.0.0.1:9092}" -C -t dead-letters -o beginning -e -q \\\n'
    "    -X isolation.level=read_committed -f 'offset %o, key %k\\nheaders: %h\\nvalue: %s\\n\\n'"
)
README_COMMANDS = (
    PRODUCE_EXAMPLE_PREDICTION,
    PRODUCE_EXAMPLE_OUTCOME,
    PRODUCE_PREDICTIONS,
    PRODUCE_OUTCOMES,
    READ_ALERTS,
    READ_DEAD_LETTERS,
)

# --- The stream ----------------------------------------------------------------------------------

# After the README example's event time, so that no partition's event time goes backwards.
START_MS = 1_796_000_000_000
DEGRADED = ModelStream("credit", seed=11, change_at=1500, accuracy_after=0.6, start_ms=START_MS)
HEALTHY = ModelStream("churn", seed=12, start_ms=START_MS)
EVENTS = 2500
# (topic, line as fed to kcat, the dead letter's reason); each one's value contains a "|" too,
# which kcat must keep in the value (it splits a line at its first delimiter only).
BAD_LINES = (
    ("predictions", b'credit|{"event_id": "credit-x", "model_id": | not JSON', "invalid_json"),
    (
        "predictions",
        b'credit|{"event_id":"credit-y","model_id":"credit","timestamp":1796000000000,'
        b'"features":"a|b","prediction":1}',
        "wrong_type",
    ),
    (
        "outcomes",
        b'credit|{"event_id":"credit-z","model_id":"credit","timestamp":1796000000000,'
        b'"outcome":"a|b"}',
        "missing_field",
    ),
)
HEADER_NAMES = [
    "driftline.error.class",
    "driftline.error.reason",
    "driftline.error.detail",
    "driftline.source.topic",
    "driftline.source.partition",
    "driftline.source.offset",
    "driftline.source.timestamp",
]
Shell = Callable[..., bytes]
DEAD_LETTER = re.compile(rb"offset (\d+), key (.*)\nheaders: (.*)\nvalue: (.*)\n\n")


@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:  # fail loudly, never skip: the README promises these commands work
        pytest.fail(
            "kcat is not installed; `make test` installs it (deploy/ensure-tools.sh), "
            "or install the Debian package: apt-get install kcat"
        )
    return path


@pytest.fixture
def sh(kcat: str, bootstrap: str, topics: Topics) -> Iterator[Shell]:
    """Runs a README command in ``sh`` as written, with the test's topics and broker."""

    def run(command: str, stdin: bytes = b"", timeout: float = 30) -> bytes:
        concrete = for_topics(command, topics)
        env = {**os.environ, "BOOTSTRAP": bootstrap}
        try:
            done = subprocess.run(
                ["sh", "-c", concrete],
                input=stdin,
                env=env,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{concrete}` did not finish within {timeout} s")
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            pytest.fail(f"`{concrete}` exited with {done.returncode}: {stderr}")
        return done.stdout

    yield run


def for_topics(command: str, topics: Topics) -> str:
    """The command with its topic (a default name, after ``-t``) replaced by the test's."""
    defaults = TopicSettings()
    names = {
        defaults.predictions: topics.predictions,
        defaults.outcomes: topics.outcomes,
        defaults.alerts: topics.alerts,
        defaults.dead_letters: topics.dead_letters,
    }
    concrete, count = re.subn(r"(?<= -t )\S+", lambda m: names[m.group(0)], command)
    assert count == 1, f"expected one `-t <topic>` in {command!r}"
    return concrete


def stream() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [*generate(DEGRADED, EVENTS), *generate(HEALTHY, EVENTS)]


def kcat_lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [event["model_id"].encode() + b"|" + orjson.dumps(event) for event in events]


def replayed_alerts() -> list[tuple[Any, ...]]:
    """What ``driftline replay`` decides on the same events: the alerts the service must
    publish (their ids differ: they name the source offsets)."""
    prediction, outcome = (
        orjson.loads(line.split("|", 1)[1]) for line in (EXAMPLE_PREDICTION, EXAMPLE_OUTCOME)
    )
    alerts = replay_alerts([(prediction, outcome), *stream()])
    return sorted(essentials(a) for a in alerts if a["kind"] != "incident")


def read_source(bootstrap: str, topic: str, partition: int, offset: int) -> Any:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "kcat-test", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        return wait_for(
            lambda: next((m for m in consumer.consume(1, 0.5) if not m.error()), None),
            20,
            f"{topic} [{partition}] at offset {offset}",
            interval=0,
        )
    finally:
        consumer.close()


def headers_of(text: bytes) -> list[tuple[str, bytes]]:
    """kcat's ``%h``: ``name=value`` pairs joined by commas, unescaped. A value may hold a comma
    (``driftline.error.detail`` does), so split only where the next name begins."""
    pairs = (part.partition(b"=") for part in re.split(rb",(?=driftline\.)", text))
    return [(name.decode(), value) for name, _, value in pairs]


def test_the_commands_use_the_default_topics_and_broker() -> None:
    defaults = TopicSettings()
    broker = f'-b "${{BOOTSTRAP:-{KafkaSettings().bootstrap_servers}}}"'
    for command, topic in (
        (PRODUCE_PREDICTIONS, defaults.predictions),
        (PRODUCE_OUTCOMES, defaults.outcomes),
        (READ_ALERTS, defaults.alerts),
        (READ_DEAD_LETTERS, defaults.dead_letters),
    ):
        assert command.startswith(f"kcat {broker} ")
        assert f" -t {topic} " in command
    prediction, outcome = (line.split("|", 1) for line in (EXAMPLE_PREDICTION, EXAMPLE_OUTCOME))
    for (key, value), schema in ((prediction, "prediction"), (outcome, "outcome")):
        event = json.loads(value)
        validator = jsonschema.Draft202012Validator(
            json.loads((ROOT / "schemas" / f"{schema}.v1.json").read_text()),
            format_checker=jsonschema.FormatChecker(),
        )
        validator.validate(event)
        assert key == event["model_id"]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kcat_feeds_the_service_and_reads_its_alerts_and_dead_letters(
    guarantee: str, bootstrap: str, topics: Topics, service: ServiceProcess, sh: Shell
) -> None:
    expected = replayed_alerts()
    assert expected, "the degraded model must alert in the replay"

    # Produce: the README's examples, then the stream with the bad lines among it.
    sh(PRODUCE_EXAMPLE_PREDICTION)
    sh(PRODUCE_EXAMPLE_OUTCOME)
    pairs = stream()
    inputs: dict[str, list[bytes]] = {
        "predictions": kcat_lines([p for p, _ in pairs]),
        "outcomes": kcat_lines([o for _, o in pairs]),
    }
    for at, (topic, line, _) in enumerate(BAD_LINES):
        inputs[topic].insert(100 + 500 * at, line)
    sh(PRODUCE_PREDICTIONS, b"\n".join(inputs["predictions"]) + b"\n")
    sh(PRODUCE_OUTCOMES, b"\n".join(inputs["outcomes"]) + b"\n")
    # Every line is one message, on the partitions the key chose.
    for topic, name in ((topics.predictions, "predictions"), (topics.outcomes, "outcomes")):
        assert sum(end_offsets(bootstrap, topic, 2).values()) == 1 + len(inputs[name])

    if guarantee == "exactly_once":
        service.config = {
            "kafka": {"instance_id": "kcat-replica"},
            "processing": {"guarantee": "exactly_once"},
        }
    service.start()
    wait_processed(bootstrap, topics)
    # Every pair, the README's example included, was joined: kcat keyed both topics alike.
    labeled = "driftline_labeled_events_total"
    wait_for(lambda: scrape(service.url).get(labeled, 0) >= 2 * EVENTS + 1, 30, "every join")
    assert scrape(service.url)[labeled] == 2 * EVENTS + 1

    # Alerts and incident events: one JSON object per line.
    def published() -> list[dict[str, Any]] | None:
        events = [orjson.loads(line) for line in sh(READ_ALERTS).splitlines()]
        alerts = sorted(essentials(e) for e in events if e["kind"] != "incident")
        return events if alerts == expected else None

    events = wait_for(published, 60, "kcat to show the replayed alerts", interval=0.2)
    for event in events:
        validate_output(event)
        assert event["source"]["topic"] in (topics.predictions, topics.outcomes)
    assert {e["model_id"] for e in events} == {"credit"}, "only the degraded model alerts"
    assert ("concept_drift", "firing") in {(e["kind"], e["status"]) for e in events}
    incidents = [e for e in events if e["kind"] == "incident"]
    assert incidents and incidents[0]["status"] == "opened"
    assert {e["incident_id"] for e in events} == {incidents[0]["incident_id"]}

    # Dead letters: offset, key, the headers and the original bytes.
    def letters() -> list[re.Match[bytes]] | None:
        out = sh(READ_DEAD_LETTERS)
        found = list(DEAD_LETTER.finditer(out))
        assert b"".join(m.group(0) for m in found) == out, f"unexpected kcat output: {out!r}"
        return found if len(found) >= len(BAD_LINES) else None

    found = wait_for(letters, 30, "kcat to show the dead letters", interval=0.2)
    # Offsets rise (under exactly_once, transaction markers take offsets between them).
    offsets = [int(m.group(1)) for m in found]
    assert offsets == sorted(set(offsets))
    bad = {line.split(b"|", 1)[1]: (topic, reason) for topic, line, reason in BAD_LINES}
    assert sorted(m.group(4) for m in found) == sorted(bad)
    for match in found:
        key, value = match.group(2), match.group(4)
        topic, reason = bad[value]
        headers = headers_of(match.group(3))
        assert [name for name, _ in headers] == HEADER_NAMES
        got = dict(headers)
        assert key == b"credit"
        assert got["driftline.error.class"] == b"DecodeError"
        assert got["driftline.error.reason"] == reason.encode()
        assert got["driftline.error.detail"]
        source_topic = getattr(topics, topic)
        assert got["driftline.source.topic"] == source_topic.encode()
        # The coordinates lead back to the original message: same key, bytes and timestamp.
        original = read_source(
            bootstrap,
            source_topic,
            int(got["driftline.source.partition"]),
            int(got["driftline.source.offset"]),
        )
        assert (original.key(), original.value()) == (key, value)
        assert int(got["driftline.source.timestamp"]) == original.timestamp()[1]
    assert service.stop() == 0


def test_the_readme_shows_these_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [command for command in README_COMMANDS if command not in readme]
    assert not missing, "README.md does not show these kcat commands verbatim:\n\n" + "\n\n".join(
        missing
    )
