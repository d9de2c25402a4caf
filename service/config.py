"""Service configuration: a YAML file, overridden by ``DRIFTLINE_*`` environment variables.

``DRIFTLINE_SECTION__KEY=value`` sets ``section.key`` (values are parsed as YAML scalars), and a few
short names exist for what is set most often (``DRIFTLINE_BOOTSTRAP_SERVERS``,
``DRIFTLINE_GROUP_ID``). Secrets for librdkafka come from the environment or from files
(``kafka.secret_files``) and are never logged or printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings
from driftline.service.errors import ConfigError

ENV_PREFIX = "DRIFTLINE_"
ENV_SHORTCUTS = {
    "DRIFTLINE_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "DRIFTLINE_GROUP_ID": ("kafka", "group_id"),
    "DRIFTLINE_METRICS_PORT": ("http", "port"),
    "DRIFTLINE_LOG_FORMAT": ("logging", "format"),
    "DRIFTLINE_LOG_LEVEL": ("logging", "level"),
}
# librdkafka properties whose values must never be printed.
SECRET_PROPERTIES = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl.truststore.password",
    }
)
REDACTED = "***"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "driftline"
    client_id: str = "driftline"
    instance_id: str | None = None
    """Static group membership (``group.instance.id``): unique per replica and stable across its
    restarts (the pod name). A replica restarted under it gets its partitions back at once; one
    that stops for longer than ``session.timeout.ms`` (6 s unless set in ``properties``) loses
    them to the others."""
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Any librdkafka property, passed to the consumer and the producer (e.g. security.protocol,
    sasl.mechanism, ssl.ca.location)."""
    secret_files: dict[str, str] = Field(default_factory=dict)
    """librdkafka property -> path of a file holding its value (mounted secrets)."""


class TopicSettings(_Strict):
    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "alerts"
    dead_letters: str = "dead-letters"
    kpis: str = "model-kpis"
    state: str = "driftline-state"
    """Compacted; the state of each task and model (``service.state``)."""


class ProcessingSettings(_Strict):
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """``exactly_once``: each checkpoint is one Kafka transaction carrying the outputs, the state
    changes and the input offsets; subscribers read with ``isolation.level=read_committed``.
    Needs ``state.enabled`` and ``kafka.instance_id`` (the transactional id)."""
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.2, gt=0, le=10)
    commit_interval_s: float = Field(default=5.0, gt=0)
    kpi_interval_s: float = Field(default=60.0, gt=0)
    join_wait_s: float = Field(default=3600.0, ge=0)
    """Event time a prediction waits for its outcome (and an outcome for its prediction)."""
    max_skew_s: float = Field(default=60.0, gt=0)
    """When one input topic of a task is this far ahead of the other in event time, its waiting
    join entries fill half of ``limits.join_max_entries`` and the other topic still has unread
    messages, the one ahead is paused until its entries are down to a quarter: a backlog then
    never overflows the join. At three quarters of the cap any lead pauses it."""
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    replay_batch_size: int = Field(default=1000, ge=1)
    min_model_batch: int = Field(default=256, ge=1)
    """A model's events are observed once this many (predictions, labelled and expired
    predictions together) are waiting, ..."""
    max_buffer_ms: int = Field(default=500, ge=0)
    """... or once the oldest of them has waited this long (processing time; ``driftline run``
    only). Buffering changes when alerts go out, never which."""
    max_buffer_ms_behind: int = Field(default=5000, ge=0)
    """The wait instead of ``max_buffer_ms`` while the service is behind: its last read came
    back full (``batch_size`` records), so more is waiting. Alerts are late by the backlog
    anyway; bigger monitor calls drain it sooner. Must be at least ``max_buffer_ms``."""

    @model_validator(mode="after")
    def _behind_waits_longer(self) -> ProcessingSettings:
        if self.max_buffer_ms_behind < self.max_buffer_ms:
            raise ValueError(
                f"max_buffer_ms_behind ({self.max_buffer_ms_behind}) must be at least "
                f"max_buffer_ms ({self.max_buffer_ms})"
            )
        return self


class LimitSettings(_Strict):
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    max_features: int = Field(default=2_000, ge=1)
    max_models: int = Field(default=1_000, ge=1)
    dead_letter_max_bytes: int = Field(default=900_000, ge=1024)
    """Dead letters larger than this are cut to it (header driftline.original.size says so), so
    they fit the default broker message size; the original stays at its input offset."""
    join_max_entries: int = Field(default=100_000, ge=1)
    """Per task and per side; the oldest entry is evicted beyond it. A buffered prediction with
    20 features takes about 2 KB, so the default bounds a task's join at about 200 MB."""


class HttpSettings(_Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(default=9308, ge=0, le=65535)
    stuck_after_s: float = Field(default=60.0, gt=0)
    """/healthz fails when the loop has not completed an iteration for this long."""


class StateSettings(_Strict):
    enabled: bool = True
    """Keep task and model state in ``topics.state`` and restore it on assignment."""
    hmac_key: str | None = None
    """Signs state records; with a key, unsigned or tampered records are refused (here, in
    DRIFTLINE_STATE__HMAC_KEY, or in hmac_key_file). At least 16 bytes."""
    hmac_key_file: str | None = None
    snapshot_interval_s: float = Field(default=30.0, gt=0)
    """How often the changed state is written (also a second after the first batch, and on
    revoke and shutdown)."""
    max_snapshot_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    restore_timeout_s: float = Field(default=30.0, gt=0)

    def key(self) -> bytes | None:
        if self.hmac_key is not None:
            key, name = self.hmac_key.encode(), "state.hmac_key"
        elif self.hmac_key_file is not None:
            name = "state.hmac_key_file"
            try:
                key = Path(self.hmac_key_file).read_bytes().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{name}: cannot read {self.hmac_key_file}: {exc.strerror}"
                ) from None
        else:
            return None
        if len(key) < 16:
            raise ConfigError(f"{name}: the key must have at least 16 bytes, it has {len(key)}")
        return key


class LoggingSettings(_Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Strict):
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    processing: ProcessingSettings = ProcessingSettings()
    limits: LimitSettings = LimitSettings()
    http: HttpSettings = HttpSettings()
    state: StateSettings = StateSettings()
    logging: LoggingSettings = LoggingSettings()
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Monitor settings every model inherits (see detectors.settings.MonitorSettings)."""
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-model overrides of ``defaults``, by model_id."""
    monitor_unlisted: bool = True
    """Monitor model_ids that have no block under ``models`` with ``defaults``."""

    @model_validator(mode="after")
    def _exactly_once_needs_state_and_an_id(self) -> Config:
        if self.processing.guarantee == "exactly_once":
            if not self.state.enabled:
                raise ValueError(
                    "processing.guarantee exactly_once needs state.enabled: a transaction "
                    "commits the outputs with the state they leave behind"
                )
            if not self.kafka.instance_id:
                raise ValueError(
                    "processing.guarantee exactly_once needs kafka.instance_id: it is the "
                    "transactional id that lets a restarted replica abort its predecessor's "
                    "open transaction at once"
                )
        return self

    def validate_monitors(self) -> None:
        """Validate every effective per-model config, so a bad one is found at start."""
        try:
            MonitorSettings.model_validate(self.defaults)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, prefix="defaults")) from None
        for model_id in self.models:
            self.monitor_settings(model_id)

    def monitor_settings(self, model_id: str) -> MonitorSettings:
        merged = deep_merge(self.defaults, self.models.get(model_id, {}))
        try:
            return MonitorSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, prefix=f"models.{model_id}")) from None

    def is_monitored(self, model_id: str) -> bool:
        return self.monitor_unlisted or model_id in self.models

    def kafka_properties(self) -> dict[str, str | int | float | bool]:
        """librdkafka properties with secrets read from their files."""
        props = dict(self.kafka.properties)
        for name, path in self.kafka.secret_files.items():
            try:
                props[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"kafka.secret_files.{name}: cannot read {path}: {exc.strerror}"
                ) from None
        props["bootstrap.servers"] = self.kafka.bootstrap_servers
        props["client.id"] = self.kafka.client_id
        return props

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced, for printing and logging."""
        data = self.model_dump(mode="json")
        kafka = data["kafka"]
        kafka["properties"] = {
            k: (REDACTED if _is_secret(k) else v) for k, v in kafka["properties"].items()
        }
        if data["state"]["hmac_key"] is not None:
            data["state"]["hmac_key"] = REDACTED
        return data


def _is_secret(name: str) -> bool:
    return name in SECRET_PROPERTIES or any(
        word in name for word in ("password", "secret", "token")
    )


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the config; raise ``ConfigError`` naming the key and problem."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
    raw = apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    config.validate_monitors()
    return config


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    result = deep_merge({}, raw)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in ENV_SHORTCUTS:
            path: tuple[str, ...] = ENV_SHORTCUTS[name]
        elif "__" in name:
            path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        else:
            continue
        _set_path(result, path, _parse_scalar(environ[name]), name)
    return result


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: object, env: str) -> None:
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{env}: {'.'.join(path)} goes through a non-mapping value")
        node = child
    node[path[-1]] = value


def _parse_scalar(text: str) -> object:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _describe(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if prefix:
            key = f"{prefix}.{key}" if key else prefix
        lines.append(f"{key or '(top level)'}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_profile(path: str) -> ModelProfile:
    """The profile ``driftline profile`` wrote to ``path``."""
    return ModelProfile.from_dict(orjson.loads(Path(path).read_bytes()))
