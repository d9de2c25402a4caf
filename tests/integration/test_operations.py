"""What an on-call engineer relies on, against the real broker: metrics and health endpoints,
config reload without losing state, a failing model isolated, a broker outage survived."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from driftline.service.synthetic import ModelStream, generate

from .conftest import (
    ROOT,
    ServiceProcess,
    Topics,
    committed_offsets,
    end_offsets,
    produce_events,
    read_all,
    scrape,
    wait_for,
    wait_processed,
)

BROKER = ROOT / "deploy" / "kafka" / "broker.sh"


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def test_metrics_and_health_after_known_input(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    degraded = ModelStream("m-degraded", seed=21, change_at=2500, accuracy_after=0.6)
    healthy = ModelStream("m-healthy", seed=22)
    pairs = [*generate(degraded, 4000), *generate(healthy, 3000)]
    produce_events(bootstrap, topics, pairs)
    service.config = {"processing": {"kpi_interval_s": 0.5}}
    service.start()
    wait_for(lambda: get(f"{service.url}/readyz")[0] == 200, 60, "/readyz to report ready")
    wait_processed(bootstrap, topics)
    status, body = get(f"{service.url}/healthz")
    assert status == 200 and body["status"] == "ok"
    _, ready = get(f"{service.url}/readyz")
    assert ready["assigned_partitions"] == 2 and ready["broker_reachable"] is True

    def settled() -> tuple[list[dict[str, Any]], dict[str, float]] | None:
        """The alerts topic and the metrics once they agree. Committed offsets do not mean
        every alert is out: one held for the other stream is published max_buffer_ms later."""
        alerts = [orjson.loads(m.value()) for m in read_all(bootstrap, topics.alerts)]
        metrics = scrape(service.url)
        fired = sum(
            v
            for k, v in metrics.items()
            if k.startswith("driftline_alerts_total{") and 'status="firing"' in k
        )
        published = sum(a["status"] == "firing" for a in alerts)
        kpis = metrics.get('driftline_model_kpi{metric="accuracy",model_id="m-healthy"}')
        return (alerts, metrics) if kpis and published and fired == published else None

    alerts, metrics = wait_for(settled, 60, "the alerts topic to agree with the metrics")
    assert metrics[f'driftline_events_consumed_total{{topic="{topics.predictions}"}}'] == 7000
    assert metrics[f'driftline_events_consumed_total{{topic="{topics.outcomes}"}}'] == 7000
    assert metrics["driftline_labeled_events_total"] == 7000
    assert metrics["driftline_models"] == 2
    firing = [a for a in alerts if a["status"] == "firing"]
    assert firing and all(a["model_id"] == "m-degraded" for a in alerts)
    for kind in {a["kind"] for a in firing}:
        counted = sum(
            v
            for k, v in metrics.items()
            if k.startswith("driftline_alerts_total{")
            and f'kind="{kind}"' in k
            and 'status="firing"' in k
        )
        assert counted == sum(1 for a in firing if a["kind"] == kind)
    # The gauge of alerts firing now: fired minus resolved, per model, kind and severity.
    for kind, severity in {(a["kind"], a["severity"]) for a in firing}:
        now_firing = sum(
            1 if a["status"] == "firing" else -1
            for a in alerts
            if a["kind"] == kind and a["severity"] == severity
        )
        gauge = metrics.get(
            f'driftline_alerts_firing{{kind="{kind}",model_id="m-degraded",severity="{severity}"}}',
            0.0,
        )
        assert gauge == now_firing, (kind, severity)
    assert 0.88 < metrics['driftline_model_kpi{metric="accuracy",model_id="m-healthy"}'] < 0.96
    assert metrics['driftline_model_kpi{metric="accuracy",model_id="m-degraded"}'] < 0.7
    assert metrics["driftline_batch_processing_seconds_count"] >= 1
    lag = {
        k: v
        for k, v in wait_for(
            lambda: {
                k: v
                for k, v in scrape(service.url).items()
                if k.startswith("driftline_consumer_lag_messages")
            },
            30,
            "lag gauges",
        ).items()
    }
    assert lag and all(v >= 0 for v in lag.values())
    assert service.stop() == 0


def test_config_reload_keeps_the_state_of_unchanged_models(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    keep, change = ModelStream("keep", seed=31), ModelStream("change", seed=32)
    produce_events(bootstrap, topics, [*generate(keep, 800), *generate(change, 800)])
    service.config = {
        "processing": {"kpi_interval_s": 0.3},
        "models": {"keep": {"kpis": {"size": 500}}, "change": {"kpis": {"size": 500}}},
    }
    service.start()
    wait_processed(bootstrap, topics)

    config_path = service.tmp / "driftline.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["models"]["change"]["kpis"]["size"] = 300
    # A change of the file is noticed by itself...
    config_path.write_text(yaml.safe_dump(config))
    reloaded = service.wait_logged("config_reloaded")
    assert reloaded["reset_models"] == ["change"]
    # ...and SIGHUP reloads on demand; nothing changed this time, so no model restarts.
    assert service.process is not None
    service.process.send_signal(signal.SIGHUP)
    again = service.wait_logged("config_reloaded", occurrence=2)
    assert again["reset_models"] == []

    produce_events(
        bootstrap, topics, [*generate(keep, 200, offset=800), *generate(change, 200, offset=800)]
    )
    wait_processed(bootstrap, topics)

    def latest() -> dict[str, dict[str, Any]]:
        snapshots: dict[str, dict[str, Any]] = {}
        for message in read_all(bootstrap, topics.kpis):
            snapshot = orjson.loads(message.value())
            snapshots[snapshot["model_id"]] = snapshot
        return snapshots

    final = wait_for(
        lambda: (
            (s := latest())
            and s.get("keep", {}).get("labeled") == 1000
            and s.get("change", {}).get("labeled") == 200
            and s
        ),
        30,
        "snapshots after the reload: keep continues at 1000, change restarts at 200",
    )
    assert final["keep"]["window"]["size"] == 500
    assert final["change"]["window"]["size"] == 200

    # A broken config on reload is refused; the service keeps running on the old one.
    config_path.write_text("processing: {batch_size: -5}\n")
    failed = service.wait_logged("config_reload_failed")
    assert "processing.batch_size" in failed["error"]
    assert service.process.poll() is None
    metrics = scrape(service.url)
    assert metrics['driftline_config_reloads_total{result="ok"}'] == 2
    assert metrics['driftline_config_reloads_total{result="error"}'] == 1
    assert service.stop() == 0


def test_a_failing_model_does_not_stop_the_others(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt-profile.json"
    corrupt.write_text('{"this is": "not a profile"')
    good, broken = ModelStream("good", seed=41), ModelStream("broken", seed=42)
    produce_events(bootstrap, topics, [*generate(good, 300), *generate(broken, 50)])
    service.config = {
        "models": {"broken": {"data_drift": {"reference": "profile", "profile": str(corrupt)}}}
    }
    service.start()
    wait_processed(bootstrap, topics)
    letters = read_all(bootstrap, topics.dead_letters)
    assert len(letters) == 100  # all 50 predictions and 50 outcomes of the broken model
    for message in letters:
        headers = dict(message.headers())
        assert headers["driftline.error.reason"] == b"processing_error"
        assert message.key() == b"broken"
    metrics = scrape(service.url)
    assert metrics['driftline_model_failed{model_id="broken"}'] == 1
    assert metrics["driftline_labeled_events_total"] == 300
    assert any(
        line.get("event") == "model_failed" and line.get("model_id") == "broken"
        for line in service.log_lines()
    )
    assert service.stop() == 0


def broker(command: str) -> None:
    subprocess.run(
        [str(BROKER), command], check=True, capture_output=True, timeout=180, env=os.environ
    )


def test_broker_outage_is_survived_without_losing_events(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    if subprocess.run([str(BROKER), "status"], capture_output=True, check=False).returncode:
        pytest.fail("this test stops and starts the local broker; run it with `make test`")
    stream = ModelStream("outage", seed=51)
    produce_events(bootstrap, topics, generate(stream, 1000))
    service.start()
    wait_processed(bootstrap, topics)
    wait_for(lambda: get(f"{service.url}/readyz")[0] == 200, 30, "/readyz ready before the outage")

    broker("stop")
    stopped_at = time.monotonic()
    try:
        status = wait_for(
            lambda: (s := get(f"{service.url}/readyz"))[0] == 503 and s,
            30,
            "/readyz to report the outage",
        )
        assert status[1]["broker_reachable"] is False
        assert get(f"{service.url}/healthz")[0] == 200  # alive, only not ready
        assert service.process is not None and service.process.poll() is None
        # The outage lasts 15 s, by design of the scenario.
        time.sleep(max(0.0, 15 - (time.monotonic() - stopped_at)))
    finally:
        broker("start")

    produce_events(bootstrap, topics, generate(stream, 1000, offset=1000))
    wait_processed(bootstrap, topics, timeout=180)
    wait_for(lambda: get(f"{service.url}/readyz")[0] == 200, 60, "/readyz ready after the outage")
    metrics = scrape(service.url)
    assert metrics["driftline_labeled_events_total"] == 2000
    assert service.stop() == 0
    # Warnings that repeat while the broker is away come once per 10 s per (event, code), with
    # how many were not logged.
    elapsed = time.monotonic() - stopped_at
    repeated = Counter(
        (x["event"], x.get("code"))
        for x in service.log_lines()
        if x.get("level") == "warning" and "code" in x
    )
    assert repeated, "the outage must have been logged"
    assert max(repeated.values()) <= 2 + elapsed / 10, repeated


def test_sigterm_stops_cleanly_mid_stream(
    bootstrap: str, topics: Topics, service: ServiceProcess
) -> None:
    produce_events(bootstrap, topics, generate(ModelStream("busy", seed=61), 20000))
    service.config = {"processing": {"batch_size": 500, "commit_interval_s": 60}}
    service.start()
    service.wait_logged("partitions_assigned")
    wait_for(
        lambda: scrape(service.url).get("driftline_labeled_events_total", 0) > 0,
        60,
        "processing to begin",
    )
    assert service.stop(timeout=30) == 0
    stopped = [x for x in service.log_lines() if x.get("event") == "stopped"]
    assert stopped, "no 'stopped' line: the shutdown did not finish"
    consumed = stopped[-1]["consumed"]
    # The final commit covers exactly what was consumed: a restart re-reads nothing.
    committed = sum(
        max(o, 0)
        for t in (topics.predictions, topics.outcomes)
        for o in committed_offsets(bootstrap, topics.group_id, t, 2).values()
    )
    assert committed == consumed


def test_firing_series_follow_their_partition_to_the_next_replica(
    bootstrap: str, topics: Topics, service: ServiceProcess, tmp_path: Path
) -> None:
    """Two degrading models on different partitions fire on one replica; a second replica joins
    and takes one partition, with nothing more to read. Each replica then exports the firing
    series of exactly the models on its partitions: the one that gave a partition away drops
    them (a stale 1 would keep DriftlineModelAlertFiring, a max over replicas, firing after the
    new owner resolves the alert), and the new owner exports the restored ones."""
    streams = [
        ModelStream(name, seed=seed, change_at=1000, accuracy_after=0.55, numeric_shift={"x1": 2})
        for name, seed in (("moving-0", 61), ("moving-4", 62))
    ]
    small = {"reference_size": 600, "window_size": 300, "every": 100}
    service.config = {
        "defaults": {
            "data_drift": small,
            "prediction_drift": small,
            "kpis": {"reference_size": 600, "size": 300},
        }
    }
    partition_of: dict[str, int] = {}
    for spec in streams:
        before = end_offsets(bootstrap, topics.predictions, 2)
        produce_events(bootstrap, topics, generate(spec, 2000))
        after = end_offsets(bootstrap, topics.predictions, 2)
        (partition_of[spec.model_id],) = (p for p in after if after[p] > before[p])
    assert sorted(partition_of.values()) == [0, 1], partition_of  # one model per partition

    def firing(process: ServiceProcess) -> dict[str, float]:
        return {
            name: value
            for name, value in scrape(process.url).items()
            if name.startswith("driftline_alerts_firing{") and value > 0
        }

    def model_of(series: str) -> str:
        return series.split('model_id="', 1)[1].split('"', 1)[0]

    service.start()
    wait_processed(bootstrap, topics)
    firing_first = wait_for(
        lambda: (f := firing(service)) and {model_of(s) for s in f} == set(partition_of) and f,
        60,
        "both models to have alerts firing on the first replica",
    )

    def owned(process: ServiceProcess) -> set[int]:
        tasks: set[int] = set()
        for line in process.log_lines():
            if line.get("event") == "partitions_assigned":
                tasks |= set(line["tasks"])
            elif line.get("event") in ("partitions_revoked", "partitions_lost"):
                tasks -= set(line["tasks"])
        return tasks

    other = ServiceProcess(bootstrap, topics, tmp_path / "b", config=service.config)
    other.tmp.mkdir()
    other.start()
    try:
        wait_for(lambda: len(owned(other)) == 1 and len(owned(service)) == 1, 60, "one task each")

        def split_by_owner() -> tuple[dict[str, float], dict[str, float]] | None:
            exported = [firing(p) for p in (service, other)]
            for process, series in zip((service, other), exported, strict=True):
                tasks = owned(process)
                if {model_of(s) for s in series} != {
                    m for m, q in partition_of.items() if q in tasks
                }:
                    return None
            return exported[0], exported[1]

        mine, theirs = wait_for(
            split_by_owner, 30, "each replica to export the firing series of its own models"
        )
        assert {**mine, **theirs} == firing_first  # the same alerts, each on one replica
    finally:
        assert other.stop() == 0
