"""Alert latency through the broker: event produced -> alert delivered, with the service live.

``driftline run`` runs as its own process (``python -m service.cli run``, configured only by
``DRIFTLINE_*`` variables: fresh topics and group, HTTP off, JSON logs to a file; every processing
and monitor setting at its default, so micro-batching's ``processing.max_buffer_ms`` too). Once it
has been assigned its partitions, a producer thread of this process produces the stream at a
steady rate (``rate`` messages per second, predictions and outcomes together; ``linger.ms`` 5,
acks from all replicas): it produces each message when it is due (in bursts of at most
``MIN_SLEEP_S``), stamping each value's ``timestamp`` with the wall time of its ``produce()``
call and keeping that time per (topic, partition, offset) from the delivery report. Model 0
stays healthy; every other model loses accuracy (0.90 -> 0.81) and shifts a feature by 0.5 sd
past its references (at staggered events), so concept-drift, KPI and data-drift alerts fire
while the stream runs.

A consumer thread reads the alerts topic from its start and notes the wall time each message is
received. For each alert (``kind`` other than ``incident``) the latency is that time minus the
produce time of the event its ``source`` names (the triggering prediction or outcome). Both times
are taken on this machine's clock, in this process.

The run ends when the service has committed every input offset (it commits every
``processing.commit_interval_s``, after flushing its outputs); then it gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench import inputs
from bench.broker import committed_total, create_topics, delete_topics, service_settings

ROOT = Path(__file__).resolve().parents[1]
MIN_SLEEP_S = 0.001
PARTITIONS = 2


def _service_env(bootstrap: str, names: dict[str, str], group: str) -> dict[str, str]:
    # As in the other parts: no DRIFTLINE_* setting from outside but processing ones.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRIFTLINE_") or k.startswith("DRIFTLINE_PROCESSING__")
    }
    env.update(service_settings(bootstrap, names, group))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}: {_tail(log)}")
        if b"partitions_assigned" in log.read_bytes():
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"the service was not assigned its partitions in {timeout_s} s")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _AlertReader(threading.Thread):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.received: list[tuple[float, bytes]] = []
        self.stopping = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-alerts-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                message = self.consumer.poll(0.05)
                if message is None or message.error() is not None:
                    continue
                self.received.append((time.time(), message.value() or b""))
        finally:
            self.consumer.close()


class _SteadyProducer(threading.Thread):
    def __init__(self, bootstrap: str, stream: inputs.Stream, rate: float) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.rate = rate
        self.sent_at: dict[tuple[str, int, int], float] = {}
        self.errors: list[str] = []
        self.late: list[float] = []
        self.seconds = 0.0
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )

    def _delivered(self, wall: float, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        self.sent_at[(message.topic(), message.partition(), message.offset())] = wall

    def run(self) -> None:
        s = self.stream
        producer, rate, n = self.producer, self.rate, s.total
        start = time.perf_counter()
        i = 0
        while i < n:
            due = min(n, int((time.perf_counter() - start) * rate) + 1)
            while i < due:
                topic = s.topics[0] if s.roles[i] == "prediction" else s.topics[1]
                wall = time.time()
                self.late.append(time.perf_counter() - (start + i / rate))
                producer.produce(
                    topic,
                    inputs.stamp(s.values[i], int(wall * 1000)),
                    s.keys[i],
                    partition=s.partition_of[i],
                    on_delivery=partial(self._delivered, wall),
                )
                i += 1
            producer.poll(0)
            time.sleep(max(start + i / rate - time.perf_counter(), MIN_SLEEP_S))
        self.seconds = time.perf_counter() - start
        producer.flush(60)


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50_s": None, "p99_s": None, "max_s": None, "min_s": None}
    a = np.array(values)
    return {
        "count": len(values),
        "p50_s": round(float(np.percentile(a, 50)), 4),
        "p99_s": round(float(np.percentile(a, 99)), 4),
        "max_s": round(float(a.max()), 4),
        "min_s": round(float(a.min()), 4),
    }


def run(
    bootstrap: str,
    *,
    run_id: str,
    models: int,
    events: int,
    rate: float,
    change_at: int,
    change_step: int = 300,
    keep_topics: bool = False,
) -> dict[str, Any]:
    names = {
        kind: f"{run_id}.latency.{kind}"
        for kind in ("predictions", "outcomes", "alerts", "dead-letters", "model-kpis", "state")
    }
    topics = (names["predictions"], names["outcomes"])
    group = f"{run_id}.latency.service"
    changes = {k: inputs.Change(change_at + (k - 1) * change_step) for k in range(1, models)}
    stream = inputs.generate(
        models,
        events,
        topics=topics,
        partitions=PARTITIONS,
        prefix="lat-m",
        seed=900,
        changes=changes,
        live=True,
    )
    create_topics(
        bootstrap,
        {
            **dict.fromkeys(topics, PARTITIONS),
            names["alerts"]: 1,
            names["dead-letters"]: 1,
            names["model-kpis"]: 1,
            names["state"]: PARTITIONS,
        },
        compacted=(names["state"],),
    )
    log = Path(tempfile.mkstemp(prefix="driftline-bench-latency-", suffix=".log")[1])
    proc: subprocess.Popen[bytes] | None = None
    reader = _AlertReader(bootstrap, names["alerts"])
    try:
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "driftline.service.cli", "run"],
                cwd=ROOT,
                env=_service_env(bootstrap, names, group),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        ready_s = _wait_ready(proc, log)
        reader.start()
        producer = _SteadyProducer(bootstrap, stream, rate)
        producer.start()
        producer.join()
        if producer.errors:
            raise RuntimeError(f"produce failed: {producer.errors[:3]}")
        waited = time.perf_counter()
        committed = 0
        while time.perf_counter() - waited < 120:
            committed = committed_total(bootstrap, group, topics, PARTITIONS)
            if committed >= stream.total or proc.poll() is not None:
                break
            time.sleep(1.0)
        drain_s = time.perf_counter() - waited
        time.sleep(1.0)  # alerts produced with the last commit are on their way
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.5)
    finally:
        reader.stopping.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if reader.ident is not None:
            reader.join(10)
        else:
            reader.consumer.close()
        if not keep_topics:
            delete_topics(bootstrap, list(names.values()))
    alerts: list[float] = []
    incidents: list[float] = []
    by_kind: dict[str, list[float]] = {}
    unmatched = 0
    for received, value in reader.received:
        event = orjson.loads(value)
        source = event.get("source") or {}
        key = (source.get("topic"), source.get("partition"), source.get("offset"))
        sent = producer.sent_at.get(key)  # type: ignore[arg-type]
        if sent is None:
            unmatched += 1
            continue
        latency = received - sent
        if event.get("kind") == "incident":
            incidents.append(latency)
        else:
            alerts.append(latency)
            by_kind.setdefault(f"{event.get('kind')} {event.get('status')}", []).append(latency)
    late = np.array(producer.late)
    result: dict[str, Any] = {
        "models": models,
        "events_per_model": events,
        "degrading_models": models - 1,
        "change_at": [c.at for c in changes.values()],
        "messages": stream.total,
        "rate_target": rate,
        "rate_achieved": round(stream.total / producer.seconds, 1) if producer.seconds else None,
        "produce_seconds": round(producer.seconds, 2),
        "producer_late_p99_ms": round(float(np.percentile(late, 99)) * 1000, 2),
        "producer_late_max_ms": round(float(late.max()) * 1000, 2),
        "service_ready_s": round(ready_s, 2),
        "drain_s": round(drain_s, 2),
        "committed": committed,
        "service_exit": proc.returncode if proc is not None else None,
        "alerts": _stats(alerts),
        "incidents": _stats(incidents),
        "by_kind": {k: _stats(v) for k, v in sorted(by_kind.items())},
        "unmatched": unmatched,
    }
    if committed < stream.total:
        result["service_log_tail"] = _tail(log)
    with contextlib.suppress(OSError):
        log.unlink()
    return result
