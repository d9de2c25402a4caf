"""The Kafka adapter: one module owns the consumer, the producer, the run loop and rebalances.

Delivery is at-least-once. Outputs of a batch are produced, then its offsets are *stored*. A
checkpoint, every ``commit_interval_s`` (the first one a second after the first batch, and on
revoke and shutdown), goes: flush the outputs; every ``state.snapshot_interval_s``, observe what
waits in the models' buffers and write the changed state (``service.state``), then flush again;
commit the stored offsets. Nothing is committed before it is out, and state is written only for
what was processed and published.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from detectors.reference import ModelProfile
from service import metrics
from service.balance import side_ahead
from service.config import Config, load_config
from service.errors import KafkaError, TopologyError
from service.http import Health, serve
from service.logs import get_logger, librdkafka_logger
from service.pipeline import BatchResult, DeadLetter, InputRecord, Pipeline, Role
from service.state import Positions, StateStore

ERROR_LOG_INTERVAL_S = 10.0
FIRST_CHECKPOINT_S = 1.0  # after the first batch: a crash soon after a start loses little


def load_profile(path: str) -> ModelProfile:
    return ModelProfile.from_dict(orjson.loads(Path(path).read_bytes()))


def dead_letter_headers(letter: DeadLetter, max_bytes: int) -> list[tuple[str, str | bytes | None]]:
    record = letter.record
    size = len(record.value or b"")
    extra: list[tuple[str, str | bytes | None]] = (
        [("driftline.original.size", str(size).encode())] if size > max_bytes else []
    )
    return [
        *extra,
        ("driftline.error.class", letter.error_class.encode()),
        ("driftline.error.reason", letter.reason.encode()),
        ("driftline.error.detail", letter.detail.encode()[:1000]),
        ("driftline.source.topic", record.topic.encode()),
        ("driftline.source.partition", str(record.partition).encode()),
        ("driftline.source.offset", str(record.offset).encode()),
        ("driftline.source.timestamp", str(record.timestamp_ms or "").encode()),
    ]


class DriftlineApp:
    """``driftline run``: consume, process, produce, commit; until SIGTERM/SIGINT."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self._config = config
        self._config_path = config_path
        self._log = get_logger(component="app")
        self._pipeline = Pipeline(config, profile_loader=load_profile, clock=time.monotonic)
        self._running = False
        self._reload_requested = False
        self._offsets: dict[tuple[str, int], int] = {}
        self._consumed = 0
        self._error_log: dict[str, tuple[float, int]] = {}
        self._paused: set[tuple[str, int]] = set()
        self._state: StateStore | None = None  # set once the state topic is known
        self._next_state_at = float("inf")
        self._restored: dict[tuple[str, int], int] = {}
        self._kpi_gauges = metrics.GaugeFamily(metrics.KPI)
        self._firing_gauges = metrics.GaugeFamily(metrics.ALERT_ACTIVE)
        self._failed_gauges = metrics.GaugeFamily(metrics.MODEL_FAILED)
        self._monitors_changed = True  # since the alert gauges were last set
        self._lag_gauges = metrics.GaugeFamily(metrics.CONSUMER_LAG)
        # Label children resolved once, not per message.
        self._consumed_counters = {
            topic: metrics.EVENTS_CONSUMED.labels(topic)
            for topic in (config.topics.predictions, config.topics.outcomes)
        }
        self._delivery_errors: list[str] = []
        self._health = Health(config.http.stuck_after_s)
        self._roles: dict[str, Role] = {
            config.topics.predictions: "prediction",
            config.topics.outcomes: "outcome",
        }
        self._config_mtime = self._mtime()
        common = config.kafka_properties()
        membership: dict[str, Any] = {"session.timeout.ms": 10_000}
        if config.kafka.instance_id:
            # Static membership: a replica restarted under the same id gets its partitions back
            # at once instead of after a rebalance.
            membership["group.instance.id"] = config.kafka.instance_id
        self._consumer = Consumer(
            {
                **membership,
                **common,
                "group.id": config.kafka.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Partition p of both topics must land on the same replica: range does that for
                # co-partitioned topics.
                "partition.assignment.strategy": "range",
                "error_cb": self._on_error,
                "logger": librdkafka_logger(),
            }
        )
        self._transactional = config.processing.guarantee == "exactly_once"
        self._in_transaction = False
        transactions: dict[str, Any] = {}
        if self._transactional:
            transactions = {
                "transactional.id": f"driftline/{config.kafka.group_id}/{config.kafka.instance_id}",
                "transaction.timeout.ms": 60_000,
            }
        self._producer = Producer(
            {
                **transactions,
                **common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                # Snapshots can be large; the topics' own limits still apply to everything else.
                "message.max.bytes": config.state.max_snapshot_bytes + 1024 * 1024,
                "error_cb": self._on_error,
                "logger": librdkafka_logger(),
            }
        )
        admin_config: dict[str, Any] = {**common, "logger": librdkafka_logger()}
        self._admin = AdminClient(admin_config)
        self.http_server = None
        if config.http.enabled:
            self.http_server = serve(self._health, config.http.host, config.http.port)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._check_topology()
        if self._transactional:
            # Fences (and aborts the open transaction of) an earlier incarnation of this replica.
            self._run_transactional(self._producer.init_transactions, 30.0)
            self._begin()
        # A batch allocates tens of thousands of short-lived objects while the join and the
        # models' state hold hundreds of thousands of long-lived ones: young collections every
        # 50,000 allocations instead of 700, and what exists at start-up is never scanned again.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        topics = [self._config.topics.predictions, self._config.topics.outcomes]
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._running = True
        self._health.set_state(started=True, broker_ok=True)
        self._log.info(
            "started",
            topics=topics,
            group_id=self._config.kafka.group_id,
            state=self._state is not None,
            instance_id=self._config.kafka.instance_id,
        )
        processing = self._config.processing
        last_commit = last_kpis = last_lag = time.monotonic()
        fetched = False  # messages arrived since the last lag update
        started = False  # the first batch was read
        try:
            while self._running:
                messages = self._consumer.consume(processing.batch_size, processing.poll_timeout_s)
                self._health.beat()
                if messages:
                    fetched = True
                    self._handle(messages)
                    self._balance()
                    if not started:
                        started = True
                        self._log.info("first_batch", records=len(messages))
                        # The first checkpoint comes soon, not a full interval after the start.
                        last_commit = time.monotonic() - processing.commit_interval_s
                        last_commit += FIRST_CHECKPOINT_S
                        self._next_state_at = time.monotonic() + FIRST_CHECKPOINT_S
                # A full read means more is waiting: buffers may wait longer to fill.
                due = self._pipeline.flush_due(behind=len(messages) >= processing.batch_size)
                if due:  # an expiry-only or failing flush counts too (metrics, dead letters)
                    self._publish(due)
                self._producer.poll(0)
                now = time.monotonic()
                if now - last_commit >= processing.commit_interval_s:
                    self._commit()
                    last_commit = now
                if now - last_kpis >= processing.kpi_interval_s:
                    self._publish_kpis()
                    last_kpis = now
                if now - last_lag >= 5.0:
                    self._update_lag(fetched)
                    last_lag, fetched = now, False
                if self._reload_requested or self._config_changed():
                    self._reload()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._running = False

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._request_reload())

    def _request_reload(self) -> None:
        self._reload_requested = True

    def _shutdown(self) -> None:
        self._log.info("stopping")
        deadline = self._config.processing.shutdown_timeout_s
        try:
            self._publish(self._pipeline.flush())
            self._commit(timeout_s=deadline, force=True, final=True)
        finally:
            self._consumer.close()
            if self.http_server is not None:
                self.http_server.shutdown()
            self._log.info("stopped", consumed=self._consumed)

    # -- the batch ---------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        records: list[InputRecord] = []
        append = records.append
        roles = self._roles
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(error)
                continue
            topic = message.topic()
            timestamp = message.timestamp()[1]
            append(
                InputRecord(
                    roles[topic],  # type: ignore[index]
                    topic,  # type: ignore[arg-type]
                    message.partition() or 0,
                    message.offset() or 0,
                    message.key(),
                    message.value(),
                    timestamp if timestamp > 0 else None,
                )
            )
        self._consumed += len(records)
        result = self._pipeline.process(records)
        self._publish(result)
        # Offsets are stored only now, after the batch's outputs were produced (the commit still
        # stops at any record waiting in a model's buffer).
        positions = {(r.topic, r.partition): r.offset + 1 for r in records}
        self._offsets.update(positions)
        consumed = Counter(r.topic for r in records)
        for topic, count in consumed.items():
            self._consumed_counters[topic].inc(count)
        metrics.BATCH_SIZE.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _publish(self, result: BatchResult) -> None:
        topics = self._config.topics
        produce = self._producer.produce
        for alert in result.alerts:
            produce(
                topics.alerts,
                key=alert["model_id"].encode(),
                value=orjson.dumps(alert),
                on_delivery=self._on_delivery,
            )
            if alert["kind"] == "incident":
                metrics.INCIDENTS.labels(alert["status"], alert["severity"]).inc()
                self._log.warning(
                    "incident",
                    model_id=alert["model_id"],
                    incident_id=alert["incident_id"],
                    status=alert["status"],
                    severity=alert["severity"],
                    kinds=alert["kinds"],
                    resolution=alert.get("resolution"),
                )
                continue
            metrics.ALERTS.labels(alert["kind"], alert["severity"], alert["status"]).inc()
            self._log.warning(
                "alert",
                model_id=alert["model_id"],
                partition=alert["source"]["partition"],
                kind=alert["kind"],
                status=alert["status"],
                severity=alert["severity"],
                detector=alert["detector"],
                subject=alert.get("feature", alert.get("metric")),
                value=alert["value"],
                threshold=alert["threshold"],
                alert_id=alert["alert_id"],
                incident_id=alert["incident_id"],
            )
        cap = self._config.limits.dead_letter_max_bytes
        for letter in result.dead_letters:
            value = letter.record.value
            produce(
                topics.dead_letters,
                key=letter.record.key,
                value=value[:cap] if value is not None else None,
                headers=dead_letter_headers(letter, cap),
                on_delivery=self._on_delivery,
            )
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
        if result.dead_letters:
            self._log.info(
                "dead_letters",
                count=len(result.dead_letters),
                reasons=sorted({d.reason for d in result.dead_letters}),
            )
        for model_id, error in result.failures:
            metrics.MODEL_FAILURES.labels(model_id).inc()
            self._log.error("model_failed", model_id=model_id, error=error)
        # What fires changes only with an alert, a failure or the set of monitors (a reload,
        # an assignment; a newly admitted model fires nothing yet): walking every monitor after
        # every batch cost 1.8 us a message at 1,000 models.
        if result.alerts or result.failures or self._monitors_changed:
            self._monitors_changed = False
            self._failed_gauges.replace({(m,): 1.0 for m in self._pipeline.failed_models})
            firing: dict[tuple[str, ...], float] = {}
            for monitor in self._pipeline.monitors():
                for kind, *_ in monitor.firing:
                    key = (monitor.model_id, kind)
                    firing[key] = firing.get(key, 0.0) + 1.0
            self._firing_gauges.replace(firing)
        metrics.LABELED.inc(result.labeled)
        metrics.EXPIRED_PREDICTIONS.inc(result.expired_predictions)
        metrics.JOIN_EVICTIONS.inc(result.evicted)
        metrics.MODELS.set(self._pipeline.model_count)
        tasks = self._pipeline.tasks.values()
        metrics.JOIN_WAITING.labels("predictions").set(
            sum(t.join.waiting_predictions for t in tasks)
        )
        metrics.JOIN_WAITING.labels("outcomes").set(sum(t.join.waiting_outcomes for t in tasks))

    def _publish_kpis(self) -> None:
        values: dict[tuple[str, ...], float] = {}
        for snapshot in self._pipeline.kpi_snapshots():
            self._producer.produce(
                self._config.topics.kpis,
                key=snapshot["model_id"].encode(),
                value=orjson.dumps(snapshot),
                on_delivery=self._on_delivery,
            )
            for name, value in snapshot["kpis"].items():
                if isinstance(value, int | float):
                    values[(snapshot["model_id"], name)] = float(value)
        self._kpi_gauges.replace(values)

    # -- offsets -------------------------------------------------------------------------------

    def _commit(
        self,
        timeout_s: float = 5.0,
        partitions: set[int] | None = None,
        force: bool = False,
        final: bool = False,
    ) -> None:
        """Flush outputs, write state (on its interval, or ``force``), commit stored offsets:
        nothing is committed before it is out."""
        if self._transactional:
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
        if self._transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

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
                    with contextlib.suppress(KafkaException):
                        self._producer.abort_transaction(10.0)
                raise KafkaError(
                    "a transaction failed; exiting, so that a restart resumes from the last "
                    f"committed state: {err.str()}",
                    err.name(),
                ) from exc

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

    # -- keeping both input topics of a task in step ---------------------------------------------

    def _balance(self) -> None:
        """Pause the input partition that runs ahead once its side fills the join buffer.

        Pausing costs a fetch round trip on resume, so it happens only when it matters: when the
        side that is more than ``max_skew_s`` ahead has filled half of ``join_max_entries`` while
        the other side still has unread messages. It resumes below a quarter (hysteresis).
        """
        topics = self._config.topics
        max_skew_ms = int(self._config.processing.max_skew_s * 1000)
        cap = self._config.limits.join_max_entries
        wanted: set[tuple[str, int]] = set()
        for partition, task in self._pipeline.tasks.items():
            join = task.join
            watermarks = (join.prediction_watermark_ms, join.outcome_watermark_ms)
            ahead = side_ahead(*watermarks, max_skew_ms)
            if ahead is None:
                # Near the cap any lead counts: with many models a task's join can fill within
                # max_skew_s of event time, and evicting loses entries whose partner is unread.
                ahead = side_ahead(*watermarks, 0)
                waiting_ahead = (
                    join.waiting_predictions if ahead == "prediction" else join.waiting_outcomes
                )
                if ahead is None or waiting_ahead <= cap * 3 // 4:
                    continue
            if ahead == "prediction":
                ahead_topic, behind_topic = topics.predictions, topics.outcomes
                waiting = join.waiting_predictions
            else:
                ahead_topic, behind_topic = topics.outcomes, topics.predictions
                waiting = join.waiting_outcomes
            threshold = cap // 4 if (ahead_topic, partition) in self._paused else cap // 2
            if waiting > threshold and self._unread(behind_topic, partition) > 0:
                wanted.add((ahead_topic, partition))
        pause, resume = wanted - self._paused, self._paused - wanted
        if pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in sorted(pause)])
        if resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in sorted(resume)])
        if pause or resume:
            metrics.PAUSES.inc(len(pause))
            self._log.info("input_balance", paused=sorted(f"{t}[{p}]" for t, p in wanted))
        self._paused = wanted
        metrics.PAUSED_PARTITIONS.set(len(wanted))

    def _unread(self, topic: str, partition: int) -> int:
        """Messages of a partition not read yet, from what the consumer already knows.

        This runs after every batch while one side is ahead, so it never asks the broker (a
        round trip took 0.3 s under load: 7 of the 17 s of a backlog bench). Before the first
        fetch response of the partition its end is unknown: that counts as unread, so the side
        ahead waits at most one fetch; an empty partition's fetch response says 0.
        """
        tp = TopicPartition(topic, partition)
        try:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return 1
            position = self._offsets.get((topic, partition))
            if position is None:
                (current,) = self._consumer.position([tp])
                position = current.offset
                if position < 0:  # nothing read from it yet
                    return high
        except KafkaException:
            return 0
        return max(high - position, 0)

    # -- rebalance callbacks ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tasks = sorted({tp.partition for tp in partitions})
        if self._state is not None:
            restored = self._state.restore(self._pipeline, tasks, self._state.read(tasks))
            for tp in partitions:
                at = restored.get(tp.partition)
                if at is not None:
                    tp.offset = at[self._roles[tp.topic]]
                    self._restored[(tp.topic, tp.partition)] = tp.offset
            # Start where the restored state ends (tasks without state keep their committed
            # offsets).
            consumer.assign(partitions)
        self._pipeline.assign(tasks)
        self._health.set_state(assigned=len(self._pipeline.tasks))
        self._monitors_changed = True
        metrics.REBALANCES.labels("assign").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self._pipeline.tasks))
        self._log.info("partitions_assigned", tasks=tasks)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tasks = {tp.partition for tp in partitions}
        try:
            # Everything read from the revoked tasks is observed and out before the commit.
            self._publish(self._pipeline.flush(tasks))
            self._commit(partitions=tasks, force=True)
        except KafkaError as exc:
            self._log.error("commit_on_revoke_failed", error=str(exc))
            if self._transactional:
                raise  # the transaction was aborted: only a restart gets back in step
        self._pipeline.revoke(tasks)
        if self._state is not None:
            self._state.forget(tasks)
        self._paused = {(t, p) for t, p in self._paused if p not in tasks}
        self._restored = {k: v for k, v in self._restored.items() if k[1] not in tasks}
        self._health.set_state(assigned=len(self._pipeline.tasks))
        self._monitors_changed = True
        metrics.REBALANCES.labels("revoke").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self._pipeline.tasks))
        self._log.info("partitions_revoked", tasks=sorted(tasks))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tasks = {tp.partition for tp in partitions}
        if self._transactional:
            # The open transaction holds outputs of tasks another replica owns now: it must not
            # commit, and the other tasks' state ran ahead of what is committed.
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(10.0)
            raise KafkaError(
                f"partitions {sorted(tasks)} were lost under exactly_once; exiting, so that a "
                "restart resumes from the last committed state"
            )
        # Lost, not revoked: another replica may own them already, so nothing is committed.
        for key in [k for k in self._offsets if k[1] in tasks]:
            del self._offsets[key]
        self._pipeline.revoke(tasks)
        if self._state is not None:
            self._state.forget(tasks)
        self._paused = {(t, p) for t, p in self._paused if p not in tasks}
        self._restored = {k: v for k, v in self._restored.items() if k[1] not in tasks}
        self._health.set_state(assigned=len(self._pipeline.tasks))
        self._monitors_changed = True
        metrics.ASSIGNED_PARTITIONS.set(len(self._pipeline.tasks))
        metrics.REBALANCES.labels("lost").inc()
        self._log.warning("partitions_lost", tasks=sorted(tasks))

    # -- errors and health ---------------------------------------------------------------------

    def _on_error(self, error: RdKafkaError) -> None:
        metrics.KAFKA_ERRORS.labels(error.name()).inc()
        if error.code() in (RdKafkaError._ALL_BROKERS_DOWN, RdKafkaError._TRANSPORT):
            self._health.set_state(broker_ok=False)
        if error.fatal():
            self._log.error("kafka_error", code=error.name(), reason=error.str(), fatal=True)
            self._running = False
        else:
            self._warn("kafka_error", error.name(), reason=error.str())

    def _warn(self, event: str, code: str, **fields: Any) -> None:
        """A warning that repeats while the broker is away: the first of each (event, code),
        then one per ``ERROR_LOG_INTERVAL_S`` saying how many were not logged."""
        now = time.monotonic()
        key = f"{event}/{code}"
        last, suppressed = self._error_log.get(key, (-ERROR_LOG_INTERVAL_S, 0))
        if now - last < ERROR_LOG_INTERVAL_S:
            self._error_log[key] = (last, suppressed + 1)
            return
        self._error_log[key] = (now, 0)
        self._log.warning(event, code=code, suppressed=suppressed, **fields)

    def _on_message_error(self, error: RdKafkaError) -> None:
        if error.code() == RdKafkaError._PARTITION_EOF:
            return
        metrics.KAFKA_ERRORS.labels(error.name()).inc()
        if error.fatal():
            raise KafkaError("consumer failed", error.name())
        self._log.warning("consume_error", code=error.name(), reason=error.str())

    def _on_delivery(self, error: RdKafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error.name()}")
            self._log.error("delivery_failed", topic=message.topic(), code=error.name())

    def _update_lag(self, fetched: bool) -> None:
        """Consumer lag per partition, and whether the broker is reachable.

        While messages arrive the broker evidently is, and the high watermarks the consumer
        already holds (from its fetch responses) are fresh: no round trip, which under load took
        0.2 s per partition of the main loop. Otherwise the broker is asked.
        """
        try:
            assignment = self._consumer.assignment()
            positions = self._consumer.position(assignment)
            lags: dict[tuple[str, ...], float] = {}
            for tp in positions:
                if fetched:
                    _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                    if high < 0:  # no fetch response for this partition yet
                        continue
                else:
                    _, high = self._consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                lag = high - tp.offset if tp.offset >= 0 else high
                lags[(tp.topic, str(tp.partition))] = float(max(lag, 0))
            self._lag_gauges.replace(lags)
            self._health.set_state(broker_ok=True)
        except KafkaException as exc:
            self._health.set_state(broker_ok=False)
            self._warn("lag_check_failed", exc.args[0].name(), reason=str(exc))

    # -- topology and reload -------------------------------------------------------------------

    def _check_topology(self) -> None:
        topics = self._config.topics
        try:
            metadata = self._admin.list_topics(timeout=30)
        except KafkaException as exc:
            raise KafkaError("cannot reach the Kafka cluster", exc.args[0].name()) from exc
        counts = {}
        for name in (topics.predictions, topics.outcomes):
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise TopologyError(
                    f"input topic {name!r} does not exist; create it (driftline create-topics) "
                    "or set topics.predictions / topics.outcomes"
                )
            counts[name] = len(topic.partitions)
        if self._config.state.enabled:
            state = metadata.topics.get(topics.state)
            if state is None or state.error is not None:
                raise TopologyError(
                    f"state topic {topics.state!r} does not exist; create it compacted "
                    "(driftline create-topics) or set state.enabled: false to run without state"
                )
            self._state = StateStore(self._config, len(state.partitions))
        if len(set(counts.values())) != 1:
            raise TopologyError(
                f"input topics are not co-partitioned: {counts}; both must have the same number "
                "of partitions, keyed by model_id"
            )

    def _mtime(self) -> float | None:
        if self._config_path is None:
            return None
        try:
            return Path(self._config_path).stat().st_mtime
        except OSError:
            return None

    def _config_changed(self) -> bool:
        mtime = self._mtime()
        return mtime is not None and mtime != self._config_mtime

    def _reload(self) -> None:
        self._reload_requested = False
        self._config_mtime = self._mtime()
        try:
            config = load_config(self._config_path)
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels("error").inc()
            self._log.error("config_reload_failed", error=str(exc))
            return
        self._publish(self._pipeline.flush())
        reset = self._pipeline.reconfigure(config)
        self._monitors_changed = True
        self._config = config
        if self._state is not None:
            self._state.reconfigure(config)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        self._log.info("config_reloaded", reset_models=reset)


def create_topics(config: Config, partitions: int, wait_s: float = 30.0) -> list[str]:
    """Create the input and output topics that do not exist yet. Returns the names created."""
    admin = AdminClient(config.kafka_properties())
    existing = set(admin.list_topics(timeout=wait_s).topics)
    topics = config.topics
    wanted = [topics.predictions, topics.outcomes, topics.alerts, topics.dead_letters, topics.kpis]
    # The state topic is added below with its own settings.
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1)
        for name in wanted
        if name not in existing
    ]
    if topics.state not in existing:
        # Compacted, with the inputs' partition count: task p's state is in partition p, so a
        # replica reads only its own tasks' state.
        new.append(
            NewTopic(
                topics.state,
                num_partitions=partitions,
                replication_factor=-1,
                config={
                    "cleanup.policy": "compact",
                    "max.message.bytes": str(config.state.max_snapshot_bytes),
                    # Only closed segments are compacted: roll hourly, so the topic holds about
                    # one record per key plus an hour of rewrites, not a week of them.
                    "segment.ms": "3600000",
                },
            )
        )
    if not new:
        return []
    futures = admin.create_topics(new, operation_timeout=wait_s)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=wait_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != RdKafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"cannot create topic {name}", exc.args[0].name()) from exc
    return created
