"""Failover and state size through the broker: ``python -m bench.failover``.

Two models at 20 features (16 numeric, 4 categorical), 12,000 events each, arrive in
``cycles + 1`` chunks in fresh topics of 2 partitions, one chunk before each start.
``driftline run`` (its own process, every setting at its default but
the topics, the group and, for the second kind of run, ``kafka.instance_id``) is started, and
``kill -9``-ed 2 s after its first batch, ``cycles`` times; then it runs to the end. For each
start: seconds from the process start to its first batch (it restores the state of its tasks
before that). Then the state topic is read: the size of each model's newest record (the models
are in steady state: references complete, windows full).

Two kinds of run: the default config (dynamic group membership: the killed member holds its
partitions until its session times out, ``session.timeout.ms`` 6 s), and ``kafka.instance_id``
set (static membership: the restarted replica takes them back at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.broker import create_topics, delete_topics, service_settings
from driftline.service.state import read_latest
from driftline.service.synthetic import ModelStream, generate

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 2
EVENTS = 12_000
MODELS = [
    ModelStream(f"m{i}", seed=40 + i, numeric_features=16, categorical_features=4) for i in range(2)
]


def first_batch_s(log: Path, started: float, proc: subprocess.Popen[bytes]) -> float:
    while time.monotonic() - started < 120:
        if b'"first_batch"' in log.read_bytes():
            return time.monotonic() - started
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("no first batch within 120 s")


def state_sizes(bootstrap: str, topic: str) -> dict[str, int]:
    """Size of the newest record of each key of the state topic."""
    found = read_latest({"bootstrap.servers": bootstrap}, topic, range(PARTITIONS), bool, 60.0)
    return {key.decode(): len(value) for key, value in found.items()}


def run(bootstrap: str, cycles: int, instance_id: str | None) -> dict[str, Any]:
    run_id = f"failover-{uuid.uuid4().hex[:8]}"
    kinds = ("predictions", "outcomes", "alerts", "dead-letters", "model-kpis", "state")
    names = {kind: f"{run_id}.{kind}" for kind in kinds}
    create_topics(
        bootstrap,
        {
            names["predictions"]: PARTITIONS,
            names["outcomes"]: PARTITIONS,
            names["alerts"]: 1,
            names["dead-letters"]: 1,
            names["model-kpis"]: 1,
            names["state"]: PARTITIONS,
        },
        compacted=(names["state"],),
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    size = EVENTS // (cycles + 1)

    def feed(cycle: int) -> None:
        start, stop = cycle * size, EVENTS if cycle == cycles else (cycle + 1) * size
        for spec in MODELS:
            for prediction, outcome in generate(spec, stop - start, offset=start):
                key = spec.model_id.encode()
                producer.produce(names["predictions"], orjson.dumps(prediction), key)
                producer.produce(names["outcomes"], orjson.dumps(outcome), key)
                producer.poll(0)
        producer.flush(60)
    env = {**os.environ, **service_settings(bootstrap, names, f"{run_id}.service")}
    env["DRIFTLINE_TOPICS__STATE"] = names["state"]
    if instance_id is not None:
        env["DRIFTLINE_KAFKA__INSTANCE_ID"] = instance_id
    recovery: list[float] = []
    try:
        for cycle in range(cycles + 1):
            feed(cycle)  # what arrived while it was down: its first batch after the restart
            log = Path(tempfile.mkstemp(prefix="driftline-bench-failover-", suffix=".log")[1])
            started = time.monotonic()
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "driftline.service.cli", "run"],
                    cwd=ROOT,
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            recovery.append(first_batch_s(log, started, proc))
            if cycle < cycles:
                time.sleep(2.0)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        time.sleep(8.0)  # to the end of the backlog, and a checkpoint after it
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sizes = state_sizes(bootstrap, names["state"])
    finally:
        delete_topics(bootstrap, list(names.values()))
    models = {k: v for k, v in sizes.items() if "/model/" in k}
    return {
        "instance_id": instance_id is not None,
        "restarts_to_first_batch_s": [round(r, 2) for r in recovery[1:]],
        "median_restart_s": round(statistics.median(recovery[1:]), 2),
        "first_start_s": round(recovery[0], 2),
        "model_record_bytes": models,
        "task_record_bytes": {k: v for k, v in sizes.items() if k.endswith("/task")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--cycles", type=int, default=6)
    args = parser.parse_args()
    for instance_id in (None, "bench-failover"):
        print(orjson.dumps(run(args.bootstrap, args.cycles, instance_id)).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
