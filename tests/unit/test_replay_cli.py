"""`driftline replay`, `profile` and `check-config`: the offline face of the same pipeline."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest
import yaml

from driftline.service.cli import main
from driftline.service.replay import read_records
from driftline.service.synthetic import ModelStream, generate

ROOT = Path(__file__).resolve().parents[2]


def write_records(path: Path, specs: list[ModelStream], n: int, bad_every: int = 0) -> None:
    with path.open("wb") as out:
        line = 0
        for spec in specs:
            for prediction, outcome in generate(spec, n):
                for topic, event in (("predictions", prediction), ("outcomes", outcome)):
                    out.write(
                        orjson.dumps({"topic": topic, "key": spec.model_id, "value": event}) + b"\n"
                    )
                    line += 1
                    if bad_every and line % bad_every == 0:
                        out.write(b'{"topic": "predictions", "key": "x", "value": [1]}\n')
                        line += 1


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records.jsonl"
    write_records(
        path,
        [
            ModelStream(
                "credit", seed=1, change_at=6000, accuracy_after=0.7, numeric_shift={"x1": 1.0}
            ),
            ModelStream("fraud", seed=2),
        ],
        8000,
        bad_every=997,
    )
    return path


def test_replay_is_byte_identical_and_points_at_input_lines(records: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"
    letters = tmp_path / "dead.jsonl"
    assert (
        main(
            [
                "replay",
                "--input",
                str(records),
                "--output",
                str(first),
                "--dead-letters",
                str(letters),
            ]
        )
        == 0
    )
    assert main(["replay", "--input", str(records), "--output", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    alerts = [orjson.loads(x) for x in first.read_bytes().splitlines()]
    assert alerts and {a["model_id"] for a in alerts} == {"credit"}
    lines = records.read_bytes().splitlines()
    for alert in alerts:
        source = orjson.loads(lines[alert["source"]["offset"]])
        assert source["value"]["model_id"] == alert["model_id"]
        assert source["topic"] == alert["source"]["topic"]
    dead = [orjson.loads(x) for x in letters.read_bytes().splitlines()]
    assert dead and all(d["reason"] == "not_an_object" for d in dead)
    assert all(
        lines[d["line"]] == b'{"topic": "predictions", "key": "x", "value": [1]}' for d in dead
    )


def test_replay_batch_size_does_not_change_output(records: Path, tmp_path: Path) -> None:
    config = tmp_path / "small-batches.yaml"
    config.write_text("processing: {replay_batch_size: 73}\n")
    default, small = tmp_path / "default.jsonl", tmp_path / "small.jsonl"
    assert main(["replay", "--input", str(records), "--output", str(default)]) == 0
    assert (
        main(["replay", "--input", str(records), "--output", str(small), "--config", str(config)])
        == 0
    )
    assert default.read_bytes() == small.read_bytes()


def test_profile_reference_detects_drift_from_the_first_event(tmp_path: Path) -> None:
    training = tmp_path / "training.jsonl"
    with training.open("wb") as out:
        for prediction, _ in generate(ModelStream("m", seed=3), 5000):
            out.write(orjson.dumps(prediction) + b"\n")
    profile = tmp_path / "profile.json"
    assert main(["profile", "--input", str(training), "--output", str(profile)]) == 0
    assert set(orjson.loads(profile.read_bytes())["features"]) >= {"x0", "x1", "c0"}

    shifted = tmp_path / "shifted.jsonl"
    write_records(shifted, [ModelStream("m", seed=4, change_at=0, numeric_shift={"x3": 1.0})], 1500)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"defaults": {"data_drift": {"reference": "profile", "profile": str(profile)}}}
        )
    )
    out = tmp_path / "alerts.jsonl"
    assert (
        main(["replay", "--input", str(shifted), "--output", str(out), "--config", str(config)])
        == 0
    )
    drift = [
        a for a in map(orjson.loads, out.read_bytes().splitlines()) if a["kind"] == "data_drift"
    ]
    assert drift and {a["feature"] for a in drift} == {"x3"}
    assert drift[0]["reference"]["type"] == "profile"
    # With a first-N reference nothing could fire before 5,000 events.
    assert drift[0]["source"]["offset"] < 2 * 1500


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.service.cli", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        check=False,
        env=env,
    )


def test_check_config_prints_effective_settings_without_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"properties": {"sasl.password": "hunter2"}},
                "defaults": {"kpis": {"size": 800}},
                "models": {"fraud": {"concept_drift": {"detector": "hddm_a"}}},
            }
        )
    )
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert "hunter2" not in result.stdout
    assert shown["effective_models"]["fraud"]["concept_drift"]["detector"] == "hddm_a"
    assert shown["effective_models"]["fraud"]["kpis"]["size"] == 800


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  fraud:\n    data_drift: {alpha: 7}\n")
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = run_cli(*command)
        assert result.returncode == 2
        assert "models.fraud.data_drift.alpha" in result.stderr


def test_replay_report_and_profile_need_no_kafka_client(tmp_path: Path) -> None:
    """The offline commands run where librdkafka is missing: with ``confluent_kafka`` made
    unimportable, ``driftline replay``, ``report`` and ``profile`` still work."""
    records = tmp_path / "records.jsonl"
    write_records(records, [ModelStream("m", seed=5)], 300)
    training = tmp_path / "training.jsonl"
    with training.open("wb") as out:
        for prediction, outcome in generate(ModelStream("m", seed=6), 300):
            out.write(orjson.dumps({**prediction, "label": outcome["label"]}) + b"\n")
    blocked = (
        "import sys; sys.modules['confluent_kafka'] = None; "
        "from driftline.service.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    for args in (
        ["replay", "--input", str(records), "--output", str(tmp_path / "alerts.jsonl")],
        ["profile", "--input", str(training), "--output", str(tmp_path / "profile.json")],
        ["report", "--input", str(records), "--output", str(tmp_path / "report.html")],
    ):
        done = subprocess.run(
            [sys.executable, "-c", blocked, *args],
            check=False,  # the assertion shows stderr
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    for written in ("profile.json", "alerts.jsonl", "report.html"):
        assert (tmp_path / written).exists()


def test_a_replayed_record_holds_no_more_memory_than_its_bytes(records: Path) -> None:
    """A model's buffer keeps its records until it is observed (up to
    ``processing.min_model_batch`` per model in a replay): each value must cost about its length,
    not the 8 KB orjson's output keeps whatever its length."""
    with records.open("rb") as source:
        lines = source.readlines()[:1000]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [r.value for r in read_records(lines)]  # type: ignore[union-attr]
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    length = sum(len(v or b"") for v in kept)
    per_record = held / len(kept)
    assert held < 2 * length, f"{per_record:.0f} bytes held for {length / len(kept):.0f}"
