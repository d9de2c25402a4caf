"""The subscriber's side against the real broker: ``driftline alerts`` reads back exactly what
was published, and the example subscriber (``deploy/examples/retrain_subscriber.py``) acts once
per incident, also across its own restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from driftline.service.synthetic import ModelStream, generate

from .conftest import (
    DRIFTLINE,
    ROOT,
    ServiceProcess,
    Topics,
    produce_events,
    read_all,
    wait_for,
    wait_processed,
)

SUBSCRIBER = ROOT / "deploy" / "examples" / "retrain_subscriber.py"


class Subscriber:
    """The example subscriber as a subprocess, its log lines read as JSON."""

    def __init__(self, bootstrap: str, topics: Topics, tmp: Path, record: Path) -> None:
        # The action: append the incident's id to a file (what a retraining job would start on).
        action = (
            f'{sys.executable} -c "import json, sys; '
            f"open({str(record)!r}, 'a').write(json.load(sys.stdin)['incident_id'] + '\\n')\""
        )
        self.args = [
            sys.executable,
            str(SUBSCRIBER),
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topics.alerts,
            "--group",
            f"{topics.alerts}.retrain",
            "--command",
            action,
        ]
        self.tmp = tmp
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp / "subscriber-0.log"

    def start(self) -> None:
        self.runs += 1
        self.log = self.tmp / f"subscriber-{self.runs}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_bytes().splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                out.append({"raw": raw.decode("utf-8", "replace")})
        return out

    def wait_caught_up(self) -> dict[str, Any]:
        def caught_up() -> dict[str, Any] | None:
            assert self.process is not None and self.process.poll() is None, self.lines()
            return next((x for x in self.lines() if x.get("event") == "caught_up"), None)

        return wait_for(caught_up, 60, f"the subscriber to catch up; log: {self.log}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def test_alerts_read_back_and_the_example_subscriber_acts_once_per_incident(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    pairs = [
        *generate(ModelStream("credit", seed=11, change_at=3000, accuracy_after=0.70), 6000),
        *generate(ModelStream("fraud", seed=12), 6000),
    ]
    produce_events(bootstrap, topics, pairs)
    service.start()
    wait_processed(bootstrap, topics)
    assert service.stop() == 0
    events = [orjson.loads(m.value()) for m in read_all(bootstrap, topics.alerts)]
    opened = [
        e["incident_id"] for e in events if e["kind"] == "incident" and e["status"] == "opened"
    ]
    assert opened, "the degraded model opens an incident"

    # driftline alerts: JSON lines when not on a terminal, filtered by model and kind.
    env = {**os.environ, **topics.env(), "DRIFTLINE_BOOTSTRAP_SERVERS": bootstrap}
    tail = subprocess.run(
        [*DRIFTLINE, "alerts", "--model", "credit", "--kind", "incident"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    shown = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert shown == [e for e in events if e["kind"] == "incident" and e["model_id"] == "credit"]

    record = tmp_path / "acted.txt"
    subscriber = Subscriber(bootstrap, topics, tmp_path, record)
    subscriber.start()
    assert subscriber.wait_caught_up()["acted"] == len(opened)
    assert subscriber.stop() == 0
    assert record.read_text().split() == opened

    # A restart resumes after the committed offsets: nothing is acted on twice.
    subscriber.start()
    assert subscriber.wait_caught_up()["acted"] == 0
    assert subscriber.stop() == 0
    assert record.read_text().split() == opened
    assert [x for x in subscriber.lines() if x.get("event") == "stopped"][-1]["code"] == 0
