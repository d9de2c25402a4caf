"""Produce the demo stream and print alerts as they arrive on the alerts topic.

Three classification models; ``credit-risk`` loses accuracy (0.92 -> 0.70) and its ``x1``
feature shifts by one standard deviation at event 6000; ``fraud`` and ``churn`` stay healthy.
Exits 0 once the degraded model has fired and the stream has been fully processed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, Producer

from driftline.service.synthetic import ModelStream, generate

EVENTS = 10_000
CHANGE_AT = 6_000
DEADLINE_S = 100.0
MODELS = [
    ModelStream(
        "credit-risk", seed=1, change_at=CHANGE_AT, accuracy_after=0.70, numeric_shift={"x1": 1.0}
    ),
    ModelStream("fraud", seed=2),
    ModelStream("churn", seed=3),
]


def produce(producer: Producer, run: str) -> None:
    streams = [generate(spec, EVENTS) for spec in MODELS]
    for _ in range(EVENTS):
        for spec, stream in zip(MODELS, streams, strict=True):
            prediction, outcome = next(stream)
            key = spec.model_id.encode()
            producer.produce(f"{run}.predictions", key=key, value=orjson.dumps(prediction))
            producer.produce(f"{run}.outcomes", key=key, value=orjson.dumps(outcome))
        producer.poll(0)
    producer.flush(30)


def describe(alert: dict[str, object]) -> str:
    if alert["kind"] == "incident":
        kinds = alert["kinds"]
        assert isinstance(kinds, list)
        now = datetime.now(UTC).strftime("%H:%M:%S")
        return (
            f"{now}  INCIDENT {str(alert['status']).upper():9} {alert['severity']:8} "
            f"{alert['model_id']:12} {str(alert['incident_id'])[:8]} {', '.join(kinds)}"
            + (f" ({alert['resolution']})" if "resolution" in alert else "")
        )
    subject = alert.get("feature") or alert.get("metric") or ""
    value, threshold = alert.get("value"), alert.get("threshold")
    numbers = ""
    if isinstance(value, float):
        numbers = f" value={value:.4g}"
        if isinstance(threshold, float):
            numbers += f" threshold={threshold:.4g}"
    source = alert["source"]
    assert isinstance(source, dict)
    now = datetime.now(UTC).strftime("%H:%M:%S")
    return (
        f"{now}  {str(alert['status']).upper():8} {alert['severity']:8} {alert['model_id']:12} "
        f"{alert['kind']:16} {alert['detector']}:{subject}{numbers}  "
        f"(event time {alert['detected_at']}, {source['topic']}@{source['partition']}:"
        f"{source['offset']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    args = parser.parse_args()
    bootstrap = os.environ["DRIFTLINE_BOOTSTRAP_SERVERS"]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{args.run}.watch",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([f"{args.run}.alerts"])
    print(
        f"== producing {EVENTS} predictions and outcomes for each of "
        f"{', '.join(m.model_id for m in MODELS)}; credit-risk degrades at event {CHANGE_AT}"
    )
    produce(Producer({"bootstrap.servers": bootstrap, "linger.ms": 20}), args.run)
    print("== alerts as they arrive:")
    deadline = time.monotonic() + DEADLINE_S
    firing: dict[str, int] = {}
    last_alert = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                # Done once the degraded model fired and nothing new came for a while.
                if firing.get("credit-risk") and time.monotonic() - last_alert > 8:
                    break
                continue
            alert = orjson.loads(message.value() or b"{}")
            print(describe(alert), flush=True)
            last_alert = time.monotonic()
            if alert["status"] == "firing":
                firing[alert["model_id"]] = firing.get(alert["model_id"], 0) + 1
    finally:
        consumer.close()
    healthy = {m: n for m, n in firing.items() if m != "credit-risk"}
    print(f"== firing alerts per model: {firing or 'none'}")
    if not firing.get("credit-risk"):
        print("== FAILED: no alert for the degraded model", file=sys.stderr)
        return 1
    if healthy:
        print(f"== FAILED: healthy models alerted: {healthy}", file=sys.stderr)
        return 1
    print("== OK: the degraded model alerted, the healthy ones did not")
    return 0


if __name__ == "__main__":
    sys.exit(main())
