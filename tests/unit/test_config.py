"""Configuration: defaults, YAML, environment overrides, errors that name the key, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.service.config import REDACTED, load_config
from driftline.service.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "driftline.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_documented_defaults() -> None:
    config = load_config(None, environ={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.topics.alerts == "alerts" and config.topics.dead_letters == "dead-letters"
    settings = config.monitor_settings("any-model")
    assert settings.concept_drift.detector == "adwin"
    assert settings.kpis.thresholds[0].metric == "accuracy"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "kafka:\n  bootstrap_servers: file:9092\nprocessing:\n  batch_size: 10\n"
    )
    config = load_config(
        path,
        environ={
            "DRIFTLINE_BOOTSTRAP_SERVERS": "env:9092",
            "DRIFTLINE_PROCESSING__BATCH_SIZE": "25",
            "DRIFTLINE_TOPICS__ALERTS": "my-alerts",
            "UNRELATED": "x",
        },
    )
    assert config.kafka.bootstrap_servers == "env:9092"
    assert config.processing.batch_size == 25
    assert config.topics.alerts == "my-alerts"


def test_models_inherit_defaults_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
defaults:
  concept_drift: {detector: ddm}
  kpis: {size: 500}
models:
  fraud:
    kpis: {every: 10}
""",
    )
    config = load_config(path, environ={})
    fraud = config.monitor_settings("fraud")
    assert fraud.concept_drift.detector == "ddm"
    assert (fraud.kpis.size, fraud.kpis.every) == (500, 10)
    assert config.monitor_settings("other").kpis.every == 50


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("processing:\n  batch_size: 0\n", "processing.batch_size"),
        ("processing:\n  max_buffer_ms_behind: 100\n", "max_buffer_ms_behind"),
        ("kafka:\n  nonsense: 1\n", "kafka.nonsense"),
        (
            "models:\n  m1:\n    concept_drift: {detector: magic}\n",
            "models.m1.concept_drift.detector",
        ),
        ("defaults:\n  kpis: {every: -1}\n", "defaults.kpis.every"),
        ("models:\n  m1:\n    data_drift: {reference: profile}\n", "models.m1.data_drift"),
        ("defaults:\n  kpis: {size: 100}\n", "defaults.kpis"),  # default min_samples 200
        (
            "defaults:\n  kpis:\n    thresholds:\n"
            "      - {metric: accuracy, warning: 0.7, critical: 0.8}\n",
            "defaults.kpis.thresholds.0",
        ),
        ("defaults:\n  prediction_drift: {correction: holm}\n", "defaults"),
        ("defaults:\n  data_quality:\n    null_rate: {warning: 0.2, critical: 0.1}\n", "null_rate"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert key in str(info.value)


def test_unreadable_or_non_mapping_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_secrets_come_from_files_and_are_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t\n")
    path = write(
        tmp_path,
        f"""
kafka:
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: SCRAM-SHA-512
    sasl.username: driftline
    sasl.password: inline-secret
  secret_files:
    ssl.key.password: {secret}
""",
    )
    config = load_config(path, environ={})
    props = config.kafka_properties()
    assert props["ssl.key.password"] == "s3cr3t"
    assert props["sasl.password"] == "inline-secret"
    shown = str(config.redacted())
    assert "s3cr3t" not in shown and "inline-secret" not in shown
    assert config.redacted()["kafka"]["properties"]["sasl.password"] == REDACTED
