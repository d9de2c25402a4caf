"""The transport-agnostic batch pipeline: records in; alerts, dead letters and KPI snapshots out.

Kafka (``service.app``) and a file (``service.replay``) are two thin adapters around it, so
whatever the service decides can be reproduced offline. A *task* is partition *p* of both input
topics; all state of the models on *p* (join buffer, monitors) belongs to that task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from driftline.detectors.held import UNBOUNDED
from driftline.detectors.monitor import ModelMonitor
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings
from driftline.service.buffer import ModelBuffer
from driftline.service.config import Config
from driftline.service.decode import BatchDecoder, DecodeError, DecodeLimits
from driftline.service.join import Expired, JoinBuffer
from driftline.service.ordering import OutcomeOrder, PendingLabel

Role = Literal["prediction", "outcome"]


class InputRecord(NamedTuple):
    """One message read from an input topic (a named tuple: one is built per message)."""

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

    def __bool__(self) -> bool:
        """Whether anything was observed, emitted or failed (worth publishing)."""
        return bool(
            self.alerts
            or self.dead_letters
            or self.predictions
            or self.labeled
            or self.expired_predictions
            or self.evicted
            or self.failures
        )


class Seen(NamedTuple):
    """What a restored monitor had observed when its state was written: the next prediction
    offset, the first outcome offset not yet handed out (``service.ordering``), and the outcome
    watermark (event time) then.

    Its state may be newer than its task's, whose offsets the inputs are read again from: the
    events it already observed are only joined again, not observed twice. A prediction was
    observed if its offset is below ``predictions``; a labelled event handed out in order if its
    outcome's is below ``outcomes`` (one handed out late, when its prediction came: if the
    prediction's is below ``predictions``); an expired prediction if the outcome watermark had
    already passed it.
    """

    predictions: int
    outcomes: int
    outcome_watermark_ms: int


class ModelFailedError(Exception):
    """Processing of one model failed; ``cause`` is what it raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Task:
    """State of one partition of both input topics: the join, and per model its monitor and the
    events read but not yet observed."""

    def __init__(self, partition: int, join: JoinBuffer) -> None:
        self.partition = partition
        self.join = join
        self.monitors: dict[str, ModelMonitor] = {}
        self.buffers: dict[str, ModelBuffer] = {}
        # Models observed or restarted since their state was last written, and models whose
        # written state must be deleted.
        self.changed: set[str] = set()
        self.removed: set[str] = set()
        # Restored models whose state is ahead of the offsets the task is read again from.
        self.seen: dict[str, Seen] = {}
        self.outcomes = OutcomeOrder()
        self.expiring = Expired()  # reused: predictions expire one outcome at a time
        self.filled: set[str] = set()  # buffers filled by pairs handed out of order
        # Models with alerts held for the other stream (``detectors.held``), and since when
        # (processing time; None when not timed).
        self.held: dict[str, float | None] = {}


ProfileLoader = Callable[[str], ModelProfile]


class Pipeline:
    """Decode, join, route to one ``ModelMonitor`` per model, collect outputs."""

    def __init__(
        self,
        config: Config,
        profile_loader: ProfileLoader | None = None,
        clock: Callable[[], float] | None = None,
        caught_up: Callable[[int, Role], bool] | None = None,
    ) -> None:
        self._config = config
        self._limits = DecodeLimits(
            max_message_bytes=config.limits.max_message_bytes,
            max_features=config.limits.max_features,
        )
        self._profile_loader = profile_loader
        self._decoder = BatchDecoder(self._limits)
        # Processing time (seconds) for ``max_buffer_ms``; without one (replay), a model's
        # events wait only for ``min_model_batch`` or an explicit ``flush``.
        self._clock = clock
        # Whether a task's partition of a topic has nothing left to read (``driftline run``):
        # an alert held for that stream then goes out after ``max_buffer_ms``.
        self._caught_up = caught_up
        self._settings_cache: dict[str | None, MonitorSettings] = {}
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

    def restore(
        self,
        partition: int,
        parts: tuple[JoinBuffer, OutcomeOrder] | None,
        monitors: dict[str, tuple[ModelMonitor, Seen]],
    ) -> list[str]:
        """Adopt restored state for a task, under the current config: its join and outcome
        order (or empty ones) and the monitors with what each had observed. Returns the model
        ids dropped or restarted because the config changed."""
        task = self._new_task(partition)
        if parts is not None:
            task.join, task.outcomes = parts
        now = self._clock() if self._clock is not None else None
        for model_id, (monitor, seen) in monitors.items():
            task.monitors[model_id] = monitor
            task.seen[model_id] = seen
            if monitor.n_held:
                task.held[model_id] = now
        self._tasks[partition] = task
        return self._reconcile(task)

    def monitor_roots(self, model_id: str) -> tuple[MonitorSettings, ModelProfile | None]:
        """The settings and the profile a new monitor of ``model_id`` gets now."""
        settings = self._settings(model_id)
        return settings, self._load_profile(settings)

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
                task.buffers.pop(model_id, None)
                task.held.pop(model_id, None)
                task.join.drop_model(model_id)
                task.outcomes.drop_model(model_id)
                task.changed.discard(model_id)
                task.removed.add(model_id)
                task.seen.pop(model_id, None)
                reset.append(model_id)
            elif task.monitors[model_id].settings != self._settings(model_id):
                task.monitors[model_id] = self._new_monitor(model_id)
                task.held.pop(model_id, None)
                task.changed.add(model_id)
                task.seen.pop(model_id, None)
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
        """Decode, join and buffer ``records``; observe every model whose buffer is due."""
        result = BatchResult()
        roles = [record.role == "prediction" for record in records]
        values = [record.value for record in records]
        predictions, prediction_errors = self._decoder.decode_predictions(
            [v for v, is_prediction in zip(values, roles, strict=True) if is_prediction]
        )
        outcomes, outcome_errors = self._decoder.decode_outcomes(
            [v for v, is_prediction in zip(values, roles, strict=True) if not is_prediction]
        )
        errors = (dict(outcome_errors), dict(prediction_errors))
        threshold = self._config.processing.min_model_batch
        clock = self._clock
        now = clock() if clock is not None else None
        expired_by_task: dict[int, Expired] = {}
        tasks = self._tasks
        pi = oi = 0
        partition = -1
        task: Task | None = None
        expired = Expired()
        for record, is_prediction in zip(records, roles, strict=True):
            if record.partition != partition:
                partition = record.partition
                task = tasks.get(partition)
                if task is None:
                    self.assign([partition])
                    task = tasks[partition]
                expired = expired_by_task.setdefault(partition, Expired())
            assert task is not None
            if is_prediction:
                position, doc = pi, predictions[pi]
                pi += 1
            else:
                position, doc = oi, outcomes[oi]
                oi += 1
            if doc is None:
                error = errors[is_prediction][position]
                result.dead_letters.append(DeadLetter(record, error.reason, error.detail))
                continue
            model_id = doc.model_id
            buffer = task.buffers.get(model_id)
            seen = task.seen.get(model_id) if task.seen else None
            try:
                if buffer is None:
                    buffer = self._admit(task, model_id)
                if is_prediction:
                    self._add_prediction(task, buffer, doc, record, expired, now=now, seen=seen)
                else:
                    self._add_outcome(task, buffer, doc, record, expired, now=now, seen=seen)
            except DecodeError as exc:
                result.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            except ModelFailedError as exc:
                self._fail(model_id, exc.cause, [record], result)
                continue
            if buffer.n >= threshold:
                self._observe(task, model_id, buffer, result)
        for partition, expired in expired_by_task.items():
            task = self._tasks[partition]
            task.join.expire_outcomes(expired)
            self._expire_predictions(task, now)
            self._collect_expired(task, expired, result, now)
            self._release(task, result, now)
            self._book_held(task, result)
        if now is not None:
            self._observe_due(
                now, result, behind=len(records) >= self._config.processing.batch_size
            )
        return result

    def flush(
        self,
        partitions: Iterable[int] | None = None,
        *,
        end_of_input: bool = False,
        release_held: bool = False,
    ) -> BatchResult:
        """Observe every waiting event (of ``partitions``, or of all tasks): before a commit or
        a state write that must cover everything read, such as on revoke or shutdown. Labelled
        events held back in the order of their outcomes stay held (their offsets hold the
        commit back, and they are part of the task's state), and so do alerts held for the
        other stream (they are part of their monitor's state), except at ``end_of_input`` (the
        end of a replay): then every complete pair is observed and every alert goes out.
        ``release_held``: every held alert goes out (there is no state to keep it in, or the
        config changes)."""
        result = BatchResult()
        wanted = None if partitions is None else set(partitions)
        for partition, task in self._tasks.items():
            if end_of_input:
                self._release(task, result, None, end_of_input=True)
            if wanted is None or partition in wanted:
                for model_id, buffer in list(task.buffers.items()):
                    if buffer.n:
                        self._observe(task, model_id, buffer, result)
                self._book_held(task, result, ended=end_of_input or release_held)
        return result

    def flush_due(self, *, behind: bool = False) -> BatchResult:
        """Observe the models whose oldest waiting event has waited ``max_buffer_ms``, or
        ``max_buffer_ms_behind`` when the caller's last read came back full (``behind``)."""
        result = BatchResult()
        if self._clock is not None:
            self._observe_due(self._clock(), result, behind=behind)
        return result

    def held_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the lowest offset of a record read but not yet observed: the
        committed offset must not pass it, or a crash would lose the record."""
        held: dict[tuple[str, int], int] = {}
        for partition, task in self._tasks.items():
            first = task.outcomes.first_held
            if first is not None:
                held[(first[0], partition)] = first[1]
            for buffer in task.buffers.values():
                for topic, offset in buffer.first_offsets().items():
                    key = (topic, partition)
                    if offset < held.get(key, offset + 1):
                        held[key] = offset
        return held

    def _observe_due(self, now: float, result: BatchResult, *, behind: bool) -> None:
        processing = self._config.processing
        wait_s = (processing.max_buffer_ms_behind if behind else processing.max_buffer_ms) / 1000
        for task in self._tasks.values():
            for model_id, buffer in list(task.buffers.items()):
                if buffer.n and buffer.since is not None and now - buffer.since >= wait_s:
                    self._observe(task, model_id, buffer, result)
            if task.held:
                self._book_held(task, result, idle_after=now - wait_s)

    def _add_prediction(
        self,
        task: Task,
        buffer: ModelBuffer,
        doc: Any,
        record: InputRecord,
        expired: Expired,
        *,
        now: float | None,
        seen: Seen | None = None,
    ) -> None:
        key = (doc.model_id, doc.event_id)
        join = task.join
        if join.contains_prediction(key):
            raise DecodeError(
                "duplicate_event_id",
                f"a prediction with event_id {doc.event_id!r} is already waiting for its outcome",
            )
        offset = record.offset
        timestamp = doc.timestamp
        if seen is None or offset >= seen.predictions:
            mark = max(join.prediction_watermark_ms, timestamp)
            buffer.add_prediction(doc, record, now, mark)
        # The prediction's offset rides along for the rule of ``Seen``.
        predicted = (doc.model_version, doc.prediction, doc.score, timestamp, offset, doc.segment)
        outcome = join.add_prediction(key, timestamp, predicted, expired)
        if outcome is not None:
            label, labeled_at, topic, outcome_offset, _ = outcome
            labeled = (*predicted[:4], label, labeled_at, topic, outcome_offset, doc.segment)
            out = task.outcomes.complete(key, labeled)
            if out:
                self._deliver(task, out, now, offset if out[0].unordered else None)

    def _add_outcome(
        self,
        task: Task,
        buffer: ModelBuffer,
        doc: Any,
        record: InputRecord,
        expired: Expired,
        *,
        now: float | None,
        seen: Seen | None = None,
    ) -> None:
        timestamp = doc.timestamp
        tail = (doc.label, timestamp, record.topic, record.offset)
        if doc.prediction is not None:
            # An outcome that carries its own prediction needs no join (nor has a segment).
            predicted: Any = (doc.model_version, doc.prediction, doc.score, timestamp, None, None)
        else:
            key = (doc.model_id, doc.event_id)
            predicted = task.join.add_outcome(key, timestamp, (*tail, record), expired)
            if predicted is None:
                task.outcomes.wait(key, doc.model_id, record, timestamp)
                return
        labeled = (*predicted[:4], *tail, predicted[5])
        order = task.outcomes
        if order.add(doc.model_id, record, timestamp, labeled):
            if seen is None or record.offset >= seen.outcomes:
                buffer.add_labeled(labeled, record, now, order.watermark_ms)
            self._expire_predictions(task, now)

    def _deliver(
        self,
        task: Task,
        out: Iterable[PendingLabel],
        now: float | None,
        late_prediction: int | None = None,
    ) -> None:
        """Hand pairs that left the outcome order to their models' buffers. A restored model
        had observed a pair handed out in order if its outcome's offset is below
        ``Seen.outcomes``; one handed out late (``late_prediction``: the offset of its
        prediction, which came late) if that is below ``Seen.predictions``."""
        for pending in out:
            self._deliver_one(task, pending, now, late_prediction)
            self._expire_predictions(task, now, pending.mark)

    def _deliver_one(
        self, task: Task, pending: PendingLabel, now: float | None, late_prediction: int | None
    ) -> None:
        model_id, labeled = pending.model_id, pending.labeled
        buffer = task.buffers.get(model_id)
        if buffer is None or labeled is None:
            return
        mark = task.seen.get(model_id) if task.seen else None
        if mark is not None and (
            late_prediction < mark.predictions
            if late_prediction is not None
            else pending.record.offset < mark.outcomes
        ):
            return  # observed before the restored state was written
        buffer.add_labeled(labeled, pending.record, now, pending.mark)
        if buffer.n >= self._config.processing.min_model_batch:
            task.filled.add(model_id)

    def _expire_predictions(
        self, task: Task, now: float | None, watermark_ms: int | None = None
    ) -> None:
        """The predictions the label stream has passed by ``join_wait_s`` at the outcome just
        handed out (its ``watermark_ms``; by default the order's): each joins its model's buffer
        after the labelled events handed out so far."""
        sink = task.expiring
        if watermark_ms is None:
            watermark_ms = task.outcomes.watermark_ms
        task.join.expire_predictions(watermark_ms, sink)
        if sink.predictions:
            self._add_expired(task, sink.predictions, now)
            sink.predictions.clear()

    def _add_expired(self, task: Task, predictions: list[Any], now: float | None) -> None:
        max_wait_ms = task.join.max_wait_ms
        for (model_id, _), (version, _, _, timestamp, *_) in predictions:
            buffer = task.buffers.get(model_id)
            if buffer is None:
                continue
            seen = task.seen.get(model_id) if task.seen else None
            if seen is None or timestamp >= seen.outcome_watermark_ms - max_wait_ms:
                buffer.add_expired(version, timestamp, now)

    def _release(
        self, task: Task, result: BatchResult, now: float | None, *, end_of_input: bool = False
    ) -> None:
        """Hand out the pairs whose outcomes no longer wait for a prediction that may come in
        order (``service.ordering``; at the end of the input, all of them), and observe the
        buffers that filled."""
        max_skew_ms = -(2**62) if end_of_input else int(self._config.processing.max_skew_s * 1000)
        self._deliver(
            task, task.outcomes.release(task.join.prediction_watermark_ms, max_skew_ms), now
        )
        threshold = self._config.processing.min_model_batch
        for model_id in sorted(task.filled):
            buffer = task.buffers.get(model_id)
            if buffer is not None and buffer.n >= threshold:
                self._observe(task, model_id, buffer, result)
        task.filled.clear()

    def _admit(self, task: Task, model_id: str) -> ModelBuffer:
        """Start monitoring a model read for the first time on this task; its buffer."""
        if model_id in task.monitors:
            buffer = task.buffers[model_id] = ModelBuffer()
            return buffer
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
                buffer = task.buffers[model_id] = ModelBuffer()
                return buffer
            except Exception as exc:  # a broken model (e.g. an unreadable profile) fails alone
                # Remembered until the next reload, so a broken model costs no I/O per event.
                cause = self._unstartable[model_id] = exc
        raise ModelFailedError(cause)

    def _settings(self, model_id: str) -> MonitorSettings:
        # Models without a block of their own share one (immutable) settings object: validated
        # once, held once, whatever the number of models.
        key = model_id if model_id in self._config.models else None
        settings = self._settings_cache.get(key)
        if settings is None:
            settings = self._settings_cache[key] = self._config.monitor_settings(model_id)
        return settings

    def _new_monitor(self, model_id: str) -> ModelMonitor:
        settings = self._settings(model_id)
        return ModelMonitor(model_id, settings, profile=self._load_profile(settings))

    def _load_profile(self, settings: MonitorSettings) -> ModelProfile | None:
        # One training profile per model serves data drift, prediction drift and quality.
        path = next(
            (
                d.profile
                for d in (settings.data_drift, settings.prediction_drift)
                if d.reference == "profile"
            ),
            None,
        )
        if path is None or self._profile_loader is None:
            return None
        return self._profile_loader(path)

    def _collect_expired(
        self, task: Task, expired: Expired, result: BatchResult, now: float | None
    ) -> None:
        result.evicted += expired.evicted
        for key, _ in expired.outcomes:
            task.outcomes.drop(key)
        self._add_expired(task, expired.predictions, now)  # pushed out by the size cap
        for (_, event_id), (*_, record) in expired.outcomes:
            result.dead_letters.append(
                DeadLetter(
                    record,
                    "unmatched_outcome",
                    f"no prediction with event_id {event_id!r} arrived within "
                    f"{self._config.processing.join_wait_s:g} s of event time",
                )
            )

    def _observe(self, task: Task, model_id: str, buffer: ModelBuffer, result: BatchResult) -> None:
        """One monitor call with everything the model's buffer holds; the buffer empties."""
        monitor = task.monitors.get(model_id)
        predictions, labeled, expired = buffer.batches(task.partition)
        marks = buffer.marks()
        records = buffer.records
        since = buffer.since
        buffer.clear()
        if monitor is None:
            return
        task.changed.add(model_id)
        try:
            monitor.observe_held(predictions, labeled, expired, marks)
        except Exception as exc:
            # One model's failure must not stop the others. Its monitor restarts from empty
            # state and the events of this call are dead-lettered, so they can be replayed.
            task.monitors[model_id] = self._new_monitor(model_id)
            task.held.pop(model_id, None)
            task.seen.pop(model_id, None)
            self._fail(model_id, exc, records, result)
            return
        self.failed_models.discard(model_id)
        result.predictions += predictions.n
        result.labeled += labeled.n
        result.expired_predictions += expired.n
        if monitor.n_held and model_id not in task.held:
            task.held[model_id] = since

    def _book_held(
        self,
        task: Task,
        result: BatchResult,
        *,
        ended: bool = False,
        idle_after: float | None = None,
    ) -> None:
        """Book the held alerts of the task's models that neither stream can precede any more
        (``detectors.held``). A stream's bound is the first mark waiting in the model's buffer,
        else the task's watermark of it; it is unbounded when ``ended``, or for alerts held
        since before ``idle_after`` when the stream's partition has nothing left to read (and,
        for the labels, no outcome waits for its prediction)."""
        if not task.held:
            return
        # Asked of the consumer only when some alert has waited long enough.
        idle: tuple[bool, bool] | None = (ended, ended) if ended or idle_after is None else None
        empty: list[int] = []
        for model_id in sorted(task.held):
            monitor = task.monitors.get(model_id)
            if monitor is None:
                del task.held[model_id]
                continue
            since = task.held[model_id]
            timed_out = ended or (
                idle_after is not None and since is not None and since <= idle_after
            )
            idle_predictions = idle_labels = False
            if timed_out:
                if idle is None:
                    idle = self._idle_streams(task)
                idle_predictions, idle_labels = idle
            buffer = task.buffers.get(model_id)
            alerts = monitor.release(
                _bound(
                    buffer.prediction_marks if buffer else empty,
                    idle_predictions,
                    task.join.prediction_watermark_ms,
                ),
                _bound(
                    buffer.label_marks if buffer else empty,
                    idle_labels,
                    task.outcomes.watermark_ms,
                ),
            )
            if alerts:
                task.changed.add(model_id)
                result.alerts.extend(alerts)
            if not monitor.n_held:
                del task.held[model_id]

    def _idle_streams(self, task: Task) -> tuple[bool, bool]:
        """Whether the task's predictions, and its labels, will bring nothing more for now: the
        partition has nothing left to read (and, for the labels, no outcome waits for its
        prediction). Never, without a consumer to ask."""
        caught_up = self._caught_up
        if caught_up is None:
            return False, False
        partition = task.partition
        return (
            caught_up(partition, "prediction"),
            not len(task.outcomes) and caught_up(partition, "outcome"),
        )

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


def _bound(waiting_marks: list[int], idle: bool, watermark_ms: int) -> int:
    """No alert a stream produces from now on has a smaller mark: that of its first event
    waiting in the model's buffer; else unbounded when the stream is idle; else its watermark."""
    if waiting_marks:
        return waiting_marks[0]
    return UNBOUNDED if idle else watermark_ms
