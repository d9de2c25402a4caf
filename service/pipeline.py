"""The transport-agnostic batch pipeline: records in; alerts, dead letters and KPI snapshots out.

Kafka (``service.app``) and a file (``service.replay``) are two thin adapters around it, so
whatever the service decides can be reproduced offline. A *task* is partition *p* of both input
topics; all state of the models on *p* (join buffer, monitors) belongs to that task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from detectors.events import Labeled, Outcome, Prediction, Source
from detectors.monitor import ModelMonitor
from detectors.reference import ModelProfile
from detectors.settings import MonitorSettings
from service.config import Config
from service.decode import DecodeError, DecodeLimits, decode_outcome, decode_prediction
from service.join import Expired, JoinBuffer, self_labeled

Role = Literal["prediction", "outcome"]


@dataclass(frozen=True, slots=True)
class InputRecord:
    role: Role
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: InputRecord
    reason: str
    detail: str
    error_class: str = "DecodeError"


@dataclass(slots=True)
class BatchResult:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    predictions: int = 0
    labeled: int = 0
    expired_predictions: int = 0
    evicted: int = 0
    failed_models: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


class ModelFailedError(Exception):
    """Processing of one model failed; ``cause`` is what it raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _ModelBatches:
    """One batch's events grouped by (partition, model_id), in first-seen order."""

    def __init__(self) -> None:
        self.predictions: dict[tuple[int, str], list[Prediction]] = {}
        self.labeled: dict[tuple[int, str], list[Labeled]] = {}
        self.expired: dict[tuple[int, str], list[Prediction]] = {}
        # The raw records behind each model's events, dead-lettered if the model fails.
        self.records: dict[tuple[int, str], list[InputRecord]] = {}

    def add_prediction(
        self, key: tuple[int, str], prediction: Prediction, record: InputRecord
    ) -> None:
        self.predictions.setdefault(key, []).append(prediction)
        self.records.setdefault(key, []).append(record)

    def add_labeled(self, key: tuple[int, str], pair: Labeled, record: InputRecord) -> None:
        self.labeled.setdefault(key, []).append(pair)
        if record.role == "outcome":
            self.records.setdefault(key, []).append(record)

    def add_expired(self, key: tuple[int, str], prediction: Prediction) -> None:
        self.expired.setdefault(key, []).append(prediction)

    def model_keys(self) -> list[tuple[int, str]]:
        # dict order is first-seen order, so the output order is deterministic.
        return list(dict.fromkeys([*self.predictions, *self.labeled, *self.expired]))


class Task:
    """State of one partition of both input topics."""

    def __init__(self, partition: int, join: JoinBuffer) -> None:
        self.partition = partition
        self.join = join
        self.monitors: dict[str, ModelMonitor] = {}


ProfileLoader = Callable[[str], ModelProfile]


class Pipeline:
    """Decode, join, route to one ``ModelMonitor`` per model, collect outputs."""

    def __init__(self, config: Config, profile_loader: ProfileLoader | None = None) -> None:
        self._config = config
        self._limits = DecodeLimits(
            max_message_bytes=config.limits.max_message_bytes,
            max_features=config.limits.max_features,
        )
        self._profile_loader = profile_loader
        self._settings_cache: dict[str, MonitorSettings] = {}
        self._tasks: dict[int, Task] = {}
        self.failed_models: set[str] = set()
        self._unstartable: dict[str, Exception] = {}

    @property
    def config(self) -> Config:
        return self._config

    @property
    def tasks(self) -> dict[int, Task]:
        return self._tasks

    @property
    def model_count(self) -> int:
        return sum(len(task.monitors) for task in self._tasks.values())

    def assign(self, partitions: Iterable[int]) -> None:
        """Create empty state for newly assigned tasks; idempotent."""
        for partition in partitions:
            if partition not in self._tasks:
                self._tasks[partition] = self._new_task(partition)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the state of revoked tasks; idempotent."""
        for partition in partitions:
            self._tasks.pop(partition, None)

    def restore(self, task: Task) -> None:
        """Adopt a task restored from a snapshot, under the current config."""
        self._reconcile(task)
        self._tasks[task.partition] = task

    def _reconcile(self, task: Task) -> list[str]:
        """Bring a task under the current config: its join takes the current limits, models no
        longer monitored are dropped, and monitors whose effective settings changed restart.
        Returns the model ids dropped or restarted; the others keep their detector state."""
        task.join.max_wait_ms = int(self._config.processing.join_wait_s * 1000)
        task.join.max_entries = self._config.limits.join_max_entries
        reset: list[str] = []
        for model_id in list(task.monitors):
            if not self._config.is_monitored(model_id):
                del task.monitors[model_id]
                task.join.drop_model(model_id)
                reset.append(model_id)
            elif task.monitors[model_id].settings != self._settings(model_id):
                task.monitors[model_id] = self._new_monitor(model_id)
                reset.append(model_id)
        return reset

    def _new_task(self, partition: int) -> Task:
        return Task(
            partition,
            JoinBuffer(
                max_wait_ms=int(self._config.processing.join_wait_s * 1000),
                max_entries=self._config.limits.join_max_entries,
            ),
        )

    def reconfigure(self, config: Config) -> list[str]:
        """Adopt a new config; models whose effective settings changed restart their monitors.

        Returns the model ids whose monitors were reset. Models whose settings are unchanged keep
        their detector state.
        """
        self._config = config
        self._settings_cache.clear()
        self._unstartable.clear()
        return [model_id for task in self._tasks.values() for model_id in self._reconcile(task)]

    def process(self, records: Sequence[InputRecord]) -> BatchResult:
        result = BatchResult()
        batch = _ModelBatches()
        expired_by_task: dict[int, Expired] = {}
        limits = self._limits
        for record in records:
            task = self._tasks.get(record.partition)
            if task is None:
                self.assign([record.partition])
                task = self._tasks[record.partition]
            expired = expired_by_task.get(record.partition)
            if expired is None:
                expired = expired_by_task[record.partition] = Expired()
            source = Source(record.topic, record.partition, record.offset)
            pair: Labeled | None
            try:
                if record.role == "prediction":
                    prediction = decode_prediction(record.value, source, limits)
                    key = (record.partition, prediction.model_id)
                    self._admit(task, prediction.model_id)
                    if task.join.contains_prediction(prediction.model_id, prediction.event_id):
                        raise DecodeError(
                            "duplicate_event_id",
                            f"a prediction with event_id {prediction.event_id!r} is already "
                            "waiting for its outcome",
                        )
                    batch.add_prediction(key, prediction, record)
                    pair = task.join.add_prediction(prediction, expired)
                else:
                    outcome = decode_outcome(record.value, source, limits)
                    key = (record.partition, outcome.model_id)
                    self._admit(task, outcome.model_id)
                    pair = self._join_outcome(task, outcome, record, expired)
            except DecodeError as exc:
                result.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            except ModelFailedError as exc:
                self._fail(key[1], exc.cause, [record], result)
                continue
            if pair is not None:
                batch.add_labeled(key, pair, record)
        for partition, expired in expired_by_task.items():
            self._tasks[partition].join.expire(expired)
            self._collect_expired(partition, expired, batch, result)
        for key in batch.model_keys():
            self._observe(key, batch, result)
        return result

    def _join_outcome(
        self, task: Task, outcome: Outcome, record: InputRecord, expired: Expired
    ) -> Labeled | None:
        if outcome.self_contained:
            return self_labeled(outcome)
        return task.join.add_outcome(outcome, expired, record)

    def _admit(self, task: Task, model_id: str) -> None:
        if model_id in task.monitors:
            return
        if not self._config.is_monitored(model_id):
            raise DecodeError("unknown_model", f"model_id {model_id!r} is not configured")
        if self.model_count >= self._config.limits.max_models:
            raise DecodeError(
                "model_limit",
                f"model_id {model_id!r} would exceed limits.max_models="
                f"{self._config.limits.max_models}",
            )
        cause = self._unstartable.get(model_id)
        if cause is None:
            try:
                task.monitors[model_id] = self._new_monitor(model_id)
                return
            except Exception as exc:  # a broken model (e.g. an unreadable profile) fails alone
                # Remembered until the next reload, so a broken model costs no I/O per event.
                cause = self._unstartable[model_id] = exc
        raise ModelFailedError(cause)

    def _settings(self, model_id: str) -> MonitorSettings:
        settings = self._settings_cache.get(model_id)
        if settings is None:
            settings = self._settings_cache[model_id] = self._config.monitor_settings(model_id)
        return settings

    def _new_monitor(self, model_id: str) -> ModelMonitor:
        settings = self._settings(model_id)
        profile = None
        # One training profile per model serves data drift, prediction drift and quality.
        path = next(
            (
                d.profile
                for d in (settings.data_drift, settings.prediction_drift)
                if d.reference == "profile"
            ),
            None,
        )
        if path is not None and self._profile_loader is not None:
            profile = self._profile_loader(path)
        return ModelMonitor(model_id, settings, profile=profile)

    def _collect_expired(
        self, partition: int, expired: Expired, batch: _ModelBatches, result: BatchResult
    ) -> None:
        result.evicted += expired.evicted
        for prediction in expired.predictions:
            batch.add_expired((partition, prediction.model_id), prediction)
        for outcome, handle in expired.outcomes:
            assert isinstance(handle, InputRecord)
            result.dead_letters.append(
                DeadLetter(
                    handle,
                    "unmatched_outcome",
                    f"no prediction with event_id {outcome.event_id!r} arrived within "
                    f"{self._config.processing.join_wait_s:g} s of event time",
                )
            )

    def _observe(self, key: tuple[int, str], batch: _ModelBatches, result: BatchResult) -> None:
        partition, model_id = key
        task = self._tasks.get(partition)
        monitor = task.monitors.get(model_id) if task is not None else None
        if monitor is None:
            return
        preds = batch.predictions.get(key, [])
        pairs = batch.labeled.get(key, [])
        aged = batch.expired.get(key, [])
        try:
            alerts = monitor.observe(preds, pairs, aged)
        except Exception as exc:
            # One model's failure must not stop the others. Its monitor restarts from empty
            # state and the events of this batch are dead-lettered, so they can be replayed.
            assert task is not None
            task.monitors[model_id] = self._new_monitor(model_id)
            self._fail(model_id, exc, batch.records.get(key, []), result)
            return
        self.failed_models.discard(model_id)
        result.predictions += len(preds)
        result.labeled += len(pairs)
        result.expired_predictions += len(aged)
        result.alerts.extend(alerts)

    def _fail(
        self,
        model_id: str,
        exc: BaseException,
        records: Sequence[InputRecord],
        result: BatchResult,
    ) -> None:
        self.failed_models.add(model_id)
        result.failed_models.append(model_id)
        result.failures.append((model_id, f"{type(exc).__name__}: {exc}"))
        detail = f"processing model {model_id!r} failed: {type(exc).__name__}: {exc}"
        for record in records:
            result.dead_letters.append(
                DeadLetter(record, "processing_error", detail[:1000], type(exc).__name__)
            )

    def monitors(self) -> list[ModelMonitor]:
        return [m for task in self._tasks.values() for m in task.monitors.values()]

    def kpi_snapshots(self) -> list[dict[str, Any]]:
        snapshots = []
        for task in self._tasks.values():
            for monitor in task.monitors.values():
                snapshots.append(monitor.kpi_snapshot())
        return snapshots
