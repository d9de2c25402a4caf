"""Act once per driftline incident: start a retraining job, page someone, open a ticket.

A small subscriber of driftline's alerts topic. It reads the incident events (``kind:
"incident"``) with ``isolation.level=read_committed``, so it sees only what driftline committed,
and for each incident with a wanted status (default: ``opened``) runs an action with the
incident as JSON:

- ``--command "CMD ARGS"``: runs the command with the incident on its standard input;
- ``--webhook URL``: POSTs the incident as ``application/json``.

It commits the offset of each event after its action succeeded, so across its own restarts it
acts once per incident: a restart resumes after the last event it acted on. An action that fails
(non-zero exit, HTTP error, timeout) stops the subscriber with exit code 1 before the commit, so
the next start retries that incident. Within a run it also skips an ``incident_id`` it has
already acted on. (A crash between an action and its commit repeats that one action at the next
start: make the action idempotent by ``incident_id`` if that matters.)

Run it next to driftline::

    python deploy/examples/retrain_subscriber.py --bootstrap-servers kafka:9092 \\
        --topic alerts --group retrain-credit --model credit \\
        --command "python train.py --reason-from-stdin"

It logs one JSON line per decision to standard output (``acted``, ``caught_up`` when it has read
everything there is, ``stopped``) and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import urllib.request
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", default="alerts", help="driftline's alerts topic")
    parser.add_argument("--group", required=True, help="consumer group: its offsets are the memory")
    parser.add_argument(
        "--status",
        action="append",
        choices=["opened", "escalated", "closed"],
        help="incident statuses to act on (repeatable; default: opened)",
    )
    parser.add_argument("--model", action="append", help="act only for these model_ids")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--command", help="run this, with the incident as JSON on stdin")
    action.add_argument("--webhook", help="POST the incident as JSON to this URL")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="of one action")
    return parser.parse_args(argv)


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def act(args: argparse.Namespace, incident: dict[str, Any]) -> None:
    """Run the action; raise on failure."""
    body = json.dumps(incident).encode()
    if args.command:
        subprocess.run(shlex.split(args.command), input=body, check=True, timeout=args.timeout_s)
        return
    request = urllib.request.Request(
        args.webhook, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=args.timeout_s) as response:
        response.read()


def wanted(args: argparse.Namespace, event: dict[str, Any]) -> bool:
    return (
        event.get("kind") == "incident"
        and event.get("status") in (args.status or ["opened"])
        and (not args.model or event.get("model_id") in args.model)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer.subscribe([args.topic])
    acted: set[str] = set()
    at_end: set[int] = set()
    code = 0
    try:
        while not stop:
            message: Message | None = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    if at_end >= set(p.partition for p in consumer.assignment()):
                        log("caught_up", acted=len(acted))
                    continue
                raise KafkaException(error)
            at_end.discard(message.partition())
            event = json.loads(message.value())
            incident_id = event.get("incident_id")
            if wanted(args, event) and incident_id not in acted:
                try:
                    act(args, event)
                except (OSError, subprocess.SubprocessError) as exc:
                    log("action_failed", incident_id=incident_id, error=str(exc))
                    code = 1
                    break
                acted.add(incident_id)
                log("acted", incident_id=incident_id, model_id=event.get("model_id"))
            # After the action: a restart resumes behind this event, never before it.
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
        log("stopped", acted=len(acted), code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
