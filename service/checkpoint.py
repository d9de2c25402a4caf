"""Checkpoints: the input offsets, the state and the transaction of ``driftline run``.

Delivery is at-least-once. Outputs of a batch are produced, then its offsets are *stored*
(``Checkpointer.store``). A checkpoint (``Checkpointer.commit``), every ``commit_interval_s`` (the
first one a second after the first batch, and on revoke and shutdown), goes: flush the outputs;
every ``state.snapshot_interval_s``, observe what waits in the models' buffers and write the
changed state (``service.state``), then flush again; commit the stored offsets. Nothing is
committed before it is out, and state is written only for what was processed and published.

Under ``processing.guarantee: exactly_once`` a checkpoint is one transaction instead: the outputs
since the last checkpoint, the state they leave behind and the input offsets, for every task.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from driftline.service import metrics
from driftline.service.config import Config
from driftline.service.errors import KafkaError
from driftline.service.pipeline import BatchResult, InputRecord, Pipeline, Role
from driftline.service.state import Positions, StateStore


class Checkpointer:
    """What was read, published and written: stored offsets, state, the open transaction."""

    def __init__(
        self,
        config: Config,
        *,
        consumer: Consumer,
        producer: Producer,
        pipeline: Pipeline,
        publish: Callable[[BatchResult], None],
        roles: Mapping[str, Role],
        log: Any,
        warn: Callable[..., None],
    ) -> None:
        self._config = config
        self._consumer = consumer
        self._producer = producer
        self._pipeline = pipeline
        self._publish = publish
        self._roles = roles
        self._log = log
        self._warn = warn
        self._offsets: dict[tuple[str, int], int] = {}
        self._restored: dict[tuple[str, int], int] = {}
        self._state: StateStore | None = None  # set once the state topic is known
        self._next_state_at = float("inf")
        self._delivery_errors: list[str] = []
        self.transactional = config.processing.guarantee == "exactly_once"
        self._in_transaction = False

    @property
    def has_state(self) -> bool:
        return self._state is not None

    def enable_state(self, state_partitions: int) -> None:
        self._state = StateStore(self._config, state_partitions)

    def reconfigure(self, config: Config) -> None:
        self._config = config
        if self._state is not None:
            self._state.reconfigure(config)

    def start(self) -> None:
        if self.transactional:
            # Fences (and aborts the open transaction of) an earlier incarnation of this replica.
            self._run_transactional(self._producer.init_transactions, 30.0)
            self._begin()

    def schedule_state(self, at: float) -> None:
        """The next state write is due at ``at`` (``time.monotonic()``), or at the next
        checkpoint after it."""
        self._next_state_at = at

    # -- offsets and positions -----------------------------------------------------------------

    def store(self, records: list[InputRecord]) -> None:
        positions = {(r.topic, r.partition): r.offset + 1 for r in records}
        self._offsets.update(positions)

    def stored_offset(self, topic: str, partition: int) -> int | None:
        return self._offsets.get((topic, partition))

    def drop_offsets(self, tasks: set[int]) -> None:
        for key in [k for k in self._offsets if k[1] in tasks]:
            del self._offsets[key]

    def restore(self, tasks: list[int], partitions: list[TopicPartition]) -> None:
        """Restore the tasks' state and set each partition's offset where it ends (partitions
        without state keep theirs)."""
        assert self._state is not None
        restored = self._state.restore(self._pipeline, tasks, self._state.read(tasks))
        for tp in partitions:
            at = restored.get(tp.partition)
            if at is not None:
                tp.offset = at[self._roles[tp.topic]]
                self._restored[(tp.topic, tp.partition)] = tp.offset

    def forget(self, tasks: set[int]) -> None:
        if self._state is not None:
            self._state.forget(tasks)
        self._restored = {k: v for k, v in self._restored.items() if k[1] not in tasks}

    # -- the checkpoint ----------------------------------------------------------------------

    def commit(
        self,
        *,
        timeout_s: float = 5.0,
        partitions: set[int] | None = None,
        force: bool = False,
        final: bool = False,
    ) -> None:
        """Flush outputs, write state (on its interval, or ``force``), commit stored offsets:
        nothing is committed before it is out."""
        if self.transactional:
            self._commit_transaction(timeout_s, partitions, begin_next=not final)
            return
        state_due = self._state is not None and (force or time.monotonic() >= self._next_state_at)
        if state_due:
            # The state must cover everything read: nothing may wait in a model's buffer.
            self._publish(self._pipeline.flush(partitions))
        if not self._flush_outputs(timeout_s):
            return
        if state_due and self._write_state(partitions) and not self._flush_outputs(timeout_s):
            return
        # A record still waiting in a model's buffer is not processed: the commit stops at it.
        held = self._pipeline.held_offsets()
        offsets = [
            TopicPartition(topic, partition, min(offset, held.get((topic, partition), offset)))
            for (topic, partition), offset in self._offsets.items()
            if partitions is None or partition in partitions
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == RdKafkaError._NO_OFFSET:
                return
            metrics.COMMITS.labels("error").inc()
            if err.fatal():
                raise KafkaError("offset commit failed", err.name()) from exc
            # Coordinator moves and broker outages make commits fail for a while. The offsets
            # stay stored and the next interval commits them; at worst a restart in between
            # reprocesses them (at-least-once).
            self._warn("commit_failed", err.name(), reason=err.str())
            return
        metrics.COMMITS.labels("ok").inc()
        for tp in offsets:
            if partitions is not None:
                self._offsets.pop((tp.topic, tp.partition), None)

    def _commit_transaction(
        self, timeout_s: float, partitions: set[int] | None, begin_next: bool
    ) -> None:
        """exactly_once: one transaction carries the outputs since the last checkpoint, the
        state they leave behind and the input offsets, for every task (whatever ``partitions``:
        the outputs of all of them are in it)."""
        assert self._state is not None
        self._begin()  # (a revoke after the final commit of a shutdown opens one more)
        self._publish(self._pipeline.flush())
        self._write_state(None)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        if offsets:
            metadata = self._consumer.consumer_group_metadata()
            self._run_transactional(
                self._producer.send_offsets_to_transaction, offsets, metadata, timeout_s
            )
        self._run_transactional(self._producer.commit_transaction, timeout_s)
        self._in_transaction = False
        metrics.COMMITS.labels("ok").inc()
        if partitions is not None:
            for key in [k for k in self._offsets if k[1] in partitions]:
                del self._offsets[key]
        if begin_next:
            self._begin()

    def _begin(self) -> None:
        if self.transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

    def abort(self) -> None:
        """Abort the open transaction, as far as the producer still can."""
        with contextlib.suppress(KafkaException):
            self._producer.abort_transaction(10.0)

    def _run_transactional(self, call: Any, *args: Any) -> None:
        """A transactional call, retried while its error is retriable (a broker away). Any
        other error leaves this process ahead of what is committed: the open transaction is
        aborted and the process exits, so that a restart resumes from the committed state."""
        deadline = time.monotonic() + self._config.processing.shutdown_timeout_s
        while True:
            try:
                call(*args)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    self._warn("transaction_retry", err.name(), reason=err.str())
                    continue
                metrics.COMMITS.labels("error").inc()
                if err.txn_requires_abort():
                    self.abort()
                raise KafkaError(
                    "a transaction failed; exiting, so that a restart resumes from the last "
                    f"committed state: {err.str()}",
                    err.name(),
                ) from exc

    def on_delivery(self, error: RdKafkaError | None, message: Message) -> None:
        """The delivery report of every output (``produce(on_delivery=...)``)."""
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error.name()}")
            self._log.error("delivery_failed", topic=message.topic(), code=error.name())

    def _flush_outputs(self, timeout_s: float) -> bool:
        """Whether everything produced so far was delivered."""
        remaining = self._producer.flush(timeout_s)
        if self._delivery_errors:
            # librdkafka gave up on an output (after retrying for message.timeout.ms). Committing
            # now would lose it; exiting without a commit makes the restart reprocess it.
            errors, self._delivery_errors = self._delivery_errors, []
            metrics.COMMITS.labels("skipped").inc()
            raise KafkaError(
                f"outputs could not be delivered ({errors[:5]}); offsets not committed, so "
                "the batches are processed again after a restart"
            )
        if remaining:
            # Still in flight (e.g. the broker is away): commit at a later interval.
            metrics.COMMITS.labels("deferred").inc()
            self._warn("commit_deferred", "undelivered", undelivered=remaining)
            return False
        return True

    # -- state -------------------------------------------------------------------------------

    def _write_state(self, partitions: set[int] | None) -> int:
        assert self._state is not None
        tasks = [p for p in self._pipeline.tasks if partitions is None or p in partitions]
        positions = {p: at for p in tasks if (at := self._task_positions(p)) is not None}
        records = self._state.changes(self._pipeline, positions)
        for partition, key, value in records:
            self._producer.produce(
                self._config.topics.state,
                key=key,
                value=value,
                partition=partition,
                on_delivery=self._on_state_delivery,
            )
        self._next_state_at = time.monotonic() + self._config.state.snapshot_interval_s
        return len(records)

    def _task_positions(self, partition: int) -> Positions | None:
        """Next offset of both input partitions of a task: what its state now corresponds to."""
        positions: Positions = {}
        for topic, role in self._roles.items():
            offset = self._offsets.get((topic, partition), self._restored.get((topic, partition)))
            if offset is None:
                try:
                    (tp,) = self._consumer.committed(
                        [TopicPartition(topic, partition)], timeout=5.0
                    )
                except KafkaException:
                    return None  # unknown now: the previous state stays the newest
                offset = tp.offset if tp.offset >= 0 else 0
                self._restored[(topic, partition)] = offset
            positions[role] = offset
        return positions

    def _on_state_delivery(self, error: RdKafkaError | None, message: Message) -> None:
        # A lost state record costs no data: the previous one (older offsets) is restored.
        if error is not None:
            metrics.SNAPSHOTS.labels("failed").inc()
            self._warn("state_write_failed", error.name(), key=str(message.key()))
        else:
            metrics.SNAPSHOTS.labels("written").inc()
