"""Task and model state in a compacted Kafka topic: written when it changes, restored on assignment.

Each task (partition *p* of both input topics) keeps, under keys that start with
``{group}/{p}/``:

* ``task``: the input offsets its state corresponds to and its join buffer (the predictions and
  outcomes still waiting for their partner);
* ``model/{model_id}``: one record per model monitor, rewritten only when the monitor observed
  something (or restarted) since it was last written, with what it had observed then
  (:class:`~service.pipeline.Seen`). A model that leaves the config gets a tombstone.

Records are in :mod:`service.state_format` (no pickle; signed when ``state.hmac_key`` is set). On
assignment the newest records of each task are read and its inputs are read again from the task
record's offsets. A model record may be newer than its task record (a crash between the two
writes): the events it already observed are joined again but not observed twice. A model whose
settings or profile changed since its record was written starts fresh, as on a reload.

Task *p*'s records live in partition ``p % n`` of the state topic, so a replica reads only the
state of its own tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from driftline.detectors.monitor import ModelMonitor
from driftline.service import metrics
from driftline.service.config import Config
from driftline.service.errors import SnapshotError
from driftline.service.join import JoinBuffer
from driftline.service.logs import get_logger
from driftline.service.ordering import OutcomeOrder
from driftline.service.pipeline import Pipeline, Role, Seen, Task
from driftline.service.state_format import StateCodec, digest, from_tree, to_tree

Positions = dict[Role, int]
"""Next offset of a task's prediction and outcome partitions."""
Record = tuple[int, bytes, bytes | None]
"""(partition of the state topic, key, value or None for a tombstone)."""


def task_prefix(group_id: str, partition: int) -> bytes:
    return f"{group_id}/{partition}/".encode()


def task_key(group_id: str, partition: int) -> bytes:
    return task_prefix(group_id, partition) + b"task"


def model_key(group_id: str, partition: int, model_id: str) -> bytes:
    return task_prefix(group_id, partition) + b"model/" + model_id.encode()


def read_latest(
    consumer_config: dict[str, Any],
    topic: str,
    partitions: Iterable[int],
    wanted: Callable[[bytes], bool],
    timeout_s: float,
) -> dict[bytes, bytes]:
    """The newest value of each key ``wanted`` in ``partitions`` of ``topic`` (read to the end);
    a tombstone removes its key."""
    found: dict[bytes, bytes] = {}
    consumer = Consumer(
        {
            **consumer_config,
            "group.id": "driftline-state-reader",
            "enable.auto.commit": False,
            # State written in an aborted transaction (exactly_once) never counts.
            "isolation.level": "read_committed",
        }
    )
    try:
        ends: dict[int, int] = {}
        for partition in sorted(set(partitions)):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                ends[partition] = high
        if not ends:
            return found
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        remaining = dict(ends)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise SnapshotError(f"reading {topic} did not reach its end in {timeout_s:g} s")
            for message in consumer.consume(1000, 0.2):
                if message.error() is not None:
                    continue
                key, value = message.key(), message.value()
                if key is None or not wanted(key):
                    continue
                if value is None:
                    found.pop(key, None)
                else:
                    found[key] = value
            # Positions, not message offsets: compaction leaves gaps before the end offset.
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= remaining[tp.partition]:
                    del remaining[tp.partition]
    except KafkaException as exc:
        raise SnapshotError(f"cannot read state topic {topic}: {exc}") from exc
    finally:
        consumer.close()
    return found


class StateStore:
    """The changed state of a pipeline's tasks as state records; a pipeline's tasks restored
    from them. Kafka stays outside: the caller produces the records and reads them back."""

    def __init__(self, config: Config, state_partitions: int) -> None:
        self._config = config
        self._partitions = max(state_partitions, 1)
        self._codec = StateCodec(config.state.key())
        self._log = get_logger(component="state")
        self._written: dict[int, Positions] = {}  # task -> positions of its last task record
        # id(settings or profile) -> (it, its digest); the object is held so the id stays its.
        self._digests: dict[int, tuple[Any, str]] = {}

    def reconfigure(self, config: Config) -> None:
        self._config = config
        self._digests.clear()  # the old settings and profiles are replaced

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._written.pop(partition, None)

    # -- writing -------------------------------------------------------------------------------

    def changes(self, pipeline: Pipeline, positions: dict[int, Positions]) -> list[Record]:
        """The records to write for the tasks in ``positions`` (what each task's state now
        corresponds to): its changed models, tombstones of removed ones, and its task record
        when anything moved. The tasks' change sets are cleared."""
        records: list[Record] = []
        for partition, at in sorted(positions.items()):
            task = pipeline.tasks.get(partition)
            if task is not None:
                self._task_changes(partition, task, at, records)
        return records

    def _task_changes(self, partition: int, task: Task, at: Positions, out: list[Record]) -> None:
        group = self._config.kafka.group_id
        produced = len(out)
        watermark = task.outcomes.watermark_ms  # what predictions expire by
        for model_id, seen in list(task.seen.items()):
            if at["prediction"] >= seen.predictions and at["outcome"] >= seen.outcomes:
                del task.seen[model_id]  # read past what it had observed
        for model_id in sorted(task.changed):
            monitor = task.monitors.get(model_id)
            if monitor is None:
                continue
            first = task.outcomes.first
            mark = Seen(at["prediction"], at["outcome"] if first is None else first[1], watermark)
            ahead = task.seen.get(model_id)
            if ahead is not None:
                mark = Seen(*(max(a, b) for a, b in zip(mark, ahead, strict=True)))
            document = {
                "kind": "model",
                "partition": partition,
                "model_id": model_id,
                "seen": list(mark),
                "settings": self._digest(monitor.settings),
                "profile": None if monitor.profile is None else self._digest(monitor.profile),
                "monitor": to_tree(
                    monitor, {"settings": monitor.settings, "profile": monitor.profile}
                ),
            }
            self._add(out, model_key(group, partition, model_id), document)
        task.changed.clear()
        for model_id in sorted(task.removed):
            out.append((partition % self._partitions, model_key(group, partition, model_id), None))
        task.removed.clear()
        if len(out) > produced or self._written.get(partition) != at:
            document = {
                "kind": "task",
                "partition": partition,
                "positions": dict(at),
                # One tree: the outcome order and the join share nothing, but a tree keeps
                # whatever its parts share.
                "join": to_tree((task.join, task.outcomes)),
            }
            self._add(out, task_key(group, partition), document)
            self._written[partition] = dict(at)

    def _digest(self, obj: Any) -> str:
        # Digested once per object, not at every write of a changed model: models without a
        # block of their own share one settings object, and a profile (hundreds of KB) lasts
        # as long as its monitor.
        cached = self._digests.get(id(obj))
        if cached is None or cached[0] is not obj:
            cached = self._digests[id(obj)] = (obj, digest(obj))
        return cached[1]

    def _add(self, out: list[Record], key: bytes, document: dict[str, Any]) -> None:
        data = self._codec.encode(document)
        limit = self._config.state.max_snapshot_bytes
        if len(data) > limit:
            metrics.SNAPSHOTS.labels("too_large").inc()
            self._log.error("state_too_large", key=key.decode(), bytes=len(data), limit=limit)
            return
        metrics.SNAPSHOT_BYTES.observe(len(data))
        out.append((document["partition"] % self._partitions, key, data))

    # -- restoring -----------------------------------------------------------------------------

    def read(self, partitions: Iterable[int]) -> dict[bytes, bytes]:
        """The newest state records of the tasks ``partitions``, from the state topic."""
        wanted_tasks = sorted(set(partitions))
        group = self._config.kafka.group_id
        prefixes = tuple(task_prefix(group, p) for p in wanted_tasks)
        try:
            return read_latest(
                self._config.kafka_properties(),
                self._config.topics.state,
                {p % self._partitions for p in wanted_tasks},
                lambda key: key.startswith(prefixes),
                self._config.state.restore_timeout_s,
            )
        except SnapshotError as exc:
            metrics.SNAPSHOTS.labels("unreadable").inc()
            self._log.error("state_unreadable", error=str(exc))
            return {}

    def restore(
        self, pipeline: Pipeline, partitions: Iterable[int], found: dict[bytes, bytes]
    ) -> dict[int, Positions]:
        """Restore each task of ``partitions`` into ``pipeline`` from its records in ``found``;
        returns the positions each restored task's inputs are to be read from again."""
        wanted_tasks = sorted(set(partitions))
        group = self._config.kafka.group_id
        positions: dict[int, Positions] = {}
        for partition in wanted_tasks:
            prefix = task_prefix(group, partition)
            records = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
            if records:
                at = self._restore_task(pipeline, partition, records)
                if at is not None:
                    positions[partition] = at
        return positions

    def _restore_task(
        self, pipeline: Pipeline, partition: int, records: dict[bytes, bytes]
    ) -> Positions | None:
        parts: tuple[JoinBuffer, OutcomeOrder] | None = None
        at: Positions | None = None
        data = records.pop(b"task", None)
        if data is not None:
            try:
                document = self._codec.decode(data)
                join, outcomes = from_tree(document["join"])
                if not (isinstance(join, JoinBuffer) and isinstance(outcomes, OutcomeOrder)):
                    raise SnapshotError("the task record holds no join buffer")
                parts = (join, outcomes)
                raw = document["positions"]
                at = {"prediction": int(raw["prediction"]), "outcome": int(raw["outcome"])}
            except (SnapshotError, KeyError, TypeError, ValueError) as exc:
                parts, at = None, None
                metrics.SNAPSHOTS.labels("refused").inc()
                self._log.error("state_refused", task=partition, record="task", error=str(exc))
        monitors: dict[str, tuple[ModelMonitor, Seen]] = {}
        stale: list[str] = []
        for suffix, value in sorted(records.items()):
            if not suffix.startswith(b"model/"):
                continue
            model_id = suffix[len(b"model/") :].decode(errors="replace")
            restored = self._restore_model(pipeline, partition, model_id, value)
            if restored is None:
                stale.append(model_id)
            else:
                monitors[model_id] = restored
        reset = pipeline.restore(partition, parts, monitors)
        task = pipeline.tasks[partition]
        task.removed.update(m for m in stale if m not in task.monitors)
        if at is not None:
            self._written[partition] = dict(at)
        metrics.SNAPSHOTS.labels("restored").inc(len(monitors) + (parts is not None))
        self._log.info(
            "state_restored",
            task=partition,
            positions=at,
            models=len(monitors),
            fresh=sorted(stale),
            reset=reset,
        )
        return at

    def _restore_model(
        self, pipeline: Pipeline, partition: int, model_id: str, data: bytes
    ) -> tuple[ModelMonitor, Seen] | None:
        if not self._config.is_monitored(model_id):
            return None
        try:
            document = self._codec.decode(data)
            settings, profile = pipeline.monitor_roots(model_id)
            if document["settings"] != self._digest(settings) or document["profile"] != (
                None if profile is None else self._digest(profile)
            ):
                metrics.SNAPSHOTS.labels("reset").inc()
                self._log.info("state_reset", task=partition, model_id=model_id)
                return None
            monitor = from_tree(document["monitor"], {"settings": settings, "profile": profile})
            if not isinstance(monitor, ModelMonitor) or monitor.model_id != model_id:
                raise SnapshotError("the model record holds no monitor of this model")
            seen = Seen(*(int(v) for v in document["seen"]))
        except Exception as exc:  # a record that cannot be used costs its model a fresh start
            metrics.SNAPSHOTS.labels("refused").inc()
            self._log.error(
                "state_refused", task=partition, model_id=model_id, error=f"{exc}"[:500]
            )
            return None
        return monitor, seen
