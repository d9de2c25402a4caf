"""Bad input, interleaved with good input, on the real broker: every bad message lands in the
dead-letter topic with the right reason and its coordinates, every good one is processed, and the
service never stops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from driftline.service.synthetic import ModelStream, generate

from .conftest import ServiceProcess, Topics, produce, read_all, scrape, wait_processed

MB = 1024 * 1024
OVERSIZED = b'{"pad": "' + b"x" * (5 * MB) + b'"}'


def bad_messages(topics: Topics) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, expected reason) for each kind of bad input the issue lists."""
    good = {
        "event_id": "x",
        "model_id": "bad-input",
        "timestamp": 1_790_000_000_000,
        "features": {"a": 1.0},
        "prediction": 1,
    }

    def variant(**changes: Any) -> bytes:
        event = {**good, **changes}
        return orjson.dumps({k: v for k, v in event.items() if v is not None})

    p, o = topics.predictions, topics.outcomes
    many_features = (
        b'{"event_id":"x","model_id":"m","timestamp":1,"prediction":1,"features":{'
        + b",".join(b'"f%d":%d' % (i, i % 10) for i in range(100_000))
        + b"}}"
    )
    return [
        (p, b"k", b"\xff\xfe\xfd not utf-8", "invalid_utf8"),
        (p, b"k", b"this is not json", "invalid_json"),
        (p, b"k", b"[1, 2, 3]", "not_an_object"),
        (p, b"k", b"42", "not_an_object"),
        (p, b"k", variant(event_id=None), "missing_field"),
        (o, b"k", b'{"event_id": "x", "model_id": "m", "timestamp": 5}', "missing_field"),
        (p, b"k", variant(features="not an object"), "wrong_type"),
        (p, b"k", variant(timestamp="last tuesday"), "invalid_value"),
        (
            p,
            b"k",
            b'{"event_id": "x", "model_id": "m", "timestamp": 1, "features": {"a": NaN},'
            b' "prediction": 1}',
            "non_finite_number",
        ),
        (
            p,
            b"k",
            b'{"event_id": "x", "model_id": "m", "timestamp": 1, "features": {},'
            b' "prediction": Infinity}',
            "non_finite_number",
        ),
        (p, b"big", OVERSIZED, "too_large"),
        (p, b"k", b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (p, b"k", many_features, "too_many_features"),
        (p, b"k", variant(schema_version=7), "unsupported_schema_version"),
        (p, None, None, "not_an_object"),
        (
            o,
            b"bad-input",
            orjson.dumps(
                {
                    "event_id": "never-predicted",
                    "model_id": "bad-input",
                    "timestamp": 1_790_000_000_000,
                    "label": 1,
                }
            ),
            "unmatched_outcome",
        ),
    ]


def test_bad_input_is_dead_lettered_and_good_input_processed(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    # The inputs accept 8 MB, so the 5 MB message reaches the service; the dead-letter topic
    # keeps the broker default, which the cut dead letter must fit.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name in (topics.predictions, topics.outcomes):
        entry = ConfigEntry(
            "max.message.bytes", str(8 * MB), incremental_operation=AlterConfigOpType.SET
        )
        resource = ConfigResource("topic", name, incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=30)

    stream = ModelStream("bad-input", seed=5, step_ms=1000)
    pairs = list(generate(stream, 400))
    bad = bad_messages(topics)

    def interleaved() -> Iterator[tuple[str, bytes | None, bytes | None]]:
        bad_iter = iter(bad)
        for i, (prediction, outcome) in enumerate(pairs):
            key = b"bad-input"
            yield topics.predictions, key, orjson.dumps(prediction)
            yield topics.outcomes, key, orjson.dumps(outcome)
            if i % 20 == 0:
                item = next(bad_iter, None)
                if item is not None:
                    yield item[0], item[1], item[2]

    produce(bootstrap, interleaved())
    service.config = {
        "limits": {"max_message_bytes": 4 * MB, "max_features": 10_000},
        "processing": {"join_wait_s": 30},
    }
    service.start()
    wait_processed(bootstrap, topics)
    assert service.process is not None and service.process.poll() is None, "the service stopped"

    letters = read_all(bootstrap, topics.dead_letters)
    reasons = Counter(dict(m.headers())["driftline.error.reason"].decode() for m in letters)
    assert reasons == Counter(reason for *_, reason in bad)
    for message in letters:
        headers = dict(message.headers())
        assert headers["driftline.error.class"] == b"DecodeError"
        assert headers["driftline.error.detail"]
        assert headers["driftline.source.topic"].decode() in (topics.predictions, topics.outcomes)
        assert int(headers["driftline.source.partition"]) in (0, 1)
        assert int(headers["driftline.source.offset"]) >= 0
    # Original key and bytes, unchanged (the 5 MB one is cut to the dead-letter size cap, and
    # says so).
    by_reason = {dict(m.headers())["driftline.error.reason"].decode(): m for m in letters}
    assert by_reason["invalid_utf8"].value() == b"\xff\xfe\xfd not utf-8"
    assert by_reason["invalid_utf8"].key() == b"k"
    oversized = by_reason["too_large"]
    assert int(dict(oversized.headers())["driftline.original.size"]) == len(OVERSIZED)
    assert oversized.value() == OVERSIZED[:900_000]

    metrics = scrape(service.url)
    for reason, count in reasons.items():
        assert metrics[f'driftline_dead_letters_total{{reason="{reason}"}}'] == count
    # Every good pair was joined and processed, none was dead-lettered.
    assert metrics["driftline_labeled_events_total"] == len(pairs)
    good_count = 2 * len(pairs)
    consumed = (
        metrics[f'driftline_events_consumed_total{{topic="{topics.predictions}"}}']
        + metrics[f'driftline_events_consumed_total{{topic="{topics.outcomes}"}}']
    )
    assert consumed == good_count + len(bad)
    assert service.stop() == 0


def test_unknown_models_beyond_the_cap_are_dead_lettered(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    events = []
    for model in range(12):
        spec = ModelStream(f"flood-{model}", seed=model)
        events.extend(generate(spec, 5))
    produce(
        bootstrap,
        ((topics.predictions, p["model_id"].encode(), orjson.dumps(p)) for p, _ in events),
    )
    service.config = {"limits": {"max_models": 4}}
    service.start()
    wait_processed(bootstrap, topics)
    letters = read_all(bootstrap, topics.dead_letters)
    reasons = Counter(dict(m.headers())["driftline.error.reason"].decode() for m in letters)
    assert reasons == Counter({"model_limit": (12 - 4) * 5})
    metrics = scrape(service.url)
    assert metrics["driftline_models"] == 4
    assert service.stop() == 0


def test_join_buffer_cap_evicts_the_oldest_outcomes_into_dead_letters(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    outcomes = [
        orjson.dumps(
            {
                "event_id": f"orphan-{i}",
                "model_id": "orphans",
                "timestamp": 1_790_000_000_000 + i,
                "label": 1,
            }
        )
        for i in range(50)
    ]
    produce(bootstrap, ((topics.outcomes, b"orphans", value) for value in outcomes))
    service.config = {"limits": {"join_max_entries": 10}}
    service.start()
    wait_processed(bootstrap, topics)
    letters = read_all(bootstrap, topics.dead_letters)
    # The 40 oldest were pushed out by the cap; the 10 newest still wait for their predictions.
    assert [m.value() for m in letters] == outcomes[:40]
    assert {dict(m.headers())["driftline.error.reason"] for m in letters} == {b"unmatched_outcome"}
    metrics = scrape(service.url)
    assert metrics["driftline_join_evictions_total"] == 40
    assert metrics['driftline_join_buffer_entries{side="outcomes"}'] == 10
    assert service.stop() == 0
