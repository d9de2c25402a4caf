"""The Kafka adapter: the consumer, the producer, the run loop and rebalances.

Each batch is handled (decoded, processed, its outputs produced), then its offsets are stored;
a checkpoint every ``commit_interval_s`` (the first one a second after the first batch, and on
revoke and shutdown) flushes the outputs, writes the state and commits the offsets, in that
order (``service.checkpoint``, which says why). The topics are checked at start-up
(``service.topics``), and the input partition that runs ahead is paused after each batch
(``service.balance``).
"""

from __future__ import annotations

import gc
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient

from driftline.service import metrics
from driftline.service.balance import InputBalancer
from driftline.service.checkpoint import Checkpointer
from driftline.service.config import Config, load_config, load_profile
from driftline.service.errors import KafkaError
from driftline.service.http import Health, serve
from driftline.service.logs import get_logger, librdkafka_logger
from driftline.service.pipeline import BatchResult, DeadLetter, InputRecord, Pipeline, Role
from driftline.service.topics import check_topology

ERROR_LOG_INTERVAL_S = 10.0
FIRST_CHECKPOINT_S = 1.0  # after the first batch: a crash soon after a start loses little


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
        self._pipeline = Pipeline(
            config,
            profile_loader=load_profile,
            clock=time.monotonic,
            caught_up=self._caught_up,
        )
        self._running = False
        self._reload_requested = False
        self._consumed = 0
        self._error_log: dict[str, tuple[float, int]] = {}
        self._kpi_gauges = metrics.GaugeFamily(metrics.KPI)
        self._pooled_gauges = metrics.GaugeFamily(metrics.SEGMENT_POOLED)
        self._firing_gauges = metrics.GaugeFamily(metrics.ALERT_ACTIVE)
        self._failed_gauges = metrics.GaugeFamily(metrics.MODEL_FAILED)
        self._monitors_changed = True  # since the alert gauges were last set
        self._lag_gauges = metrics.GaugeFamily(metrics.CONSUMER_LAG)
        # Label children resolved once, not per message.
        self._consumed_counters = {
            topic: metrics.EVENTS_CONSUMED.labels(topic)
            for topic in (config.topics.predictions, config.topics.outcomes)
        }
        self._health = Health(config.http.stuck_after_s)
        self._roles: dict[str, Role] = {
            config.topics.predictions: "prediction",
            config.topics.outcomes: "outcome",
        }
        self._config_mtime = self._mtime()
        common = config.kafka_properties()
        # A killed replica's partitions move once its session times out: 6 s (the broker's
        # smallest by default; librdkafka's own default is 45 s). Heartbeats come from
        # librdkafka's thread, so a long batch does not miss them.
        membership: dict[str, Any] = {"session.timeout.ms": 6_000, "heartbeat.interval.ms": 2_000}
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
        transactions: dict[str, Any] = {}
        if config.processing.guarantee == "exactly_once":
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
        self._checkpoints = Checkpointer(
            config,
            consumer=self._consumer,
            producer=self._producer,
            pipeline=self._pipeline,
            publish=self._publish,
            roles=self._roles,
            log=self._log,
            warn=self._warn,
        )
        self._balancer = InputBalancer(
            config,
            consumer=self._consumer,
            pipeline=self._pipeline,
            stored_offset=self._checkpoints.stored_offset,
            log=self._log,
        )
        self.http_server = None
        if config.http.enabled:
            self.http_server = serve(self._health, config.http.host, config.http.port)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        state_partitions = check_topology(self._admin, self._config)
        if state_partitions is not None:
            self._checkpoints.enable_state(state_partitions)
        self._checkpoints.start()
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
            state=self._checkpoints.has_state,
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
                self._refresh_model_gauges()  # a rebalance (in consume) changes the monitors
                if messages:
                    fetched = True
                    self._handle(messages)
                    self._balancer.balance()
                    if not started:
                        started = True
                        self._log.info("first_batch", records=len(messages))
                        # The first checkpoint comes soon, not a full interval after the start.
                        last_commit = time.monotonic() - processing.commit_interval_s
                        last_commit += FIRST_CHECKPOINT_S
                        self._checkpoints.schedule_state(time.monotonic() + FIRST_CHECKPOINT_S)
                # A full read means more is waiting: buffers may wait longer to fill.
                due = self._pipeline.flush_due(behind=len(messages) >= processing.batch_size)
                if due:  # an expiry-only or failing flush counts too (metrics, dead letters)
                    self._publish(due)
                self._producer.poll(0)
                now = time.monotonic()
                if now - last_commit >= processing.commit_interval_s:
                    self._checkpoints.commit()
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

    def _caught_up(self, partition: int, role: Role) -> bool:
        return self._balancer.caught_up(partition, role)

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
            self._publish(self._pipeline.flush(release_held=not self._config.state.enabled))
            self._checkpoints.commit(timeout_s=deadline, force=True, final=True)
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
        self._checkpoints.store(records)
        consumed = Counter(r.topic for r in records)
        for topic, count in consumed.items():
            self._consumed_counters[topic].inc(count)
        metrics.BATCH_SIZE.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _publish(self, result: BatchResult) -> None:
        topics = self._config.topics
        produce = self._producer.produce
        on_delivery = self._checkpoints.on_delivery
        for alert in result.alerts:
            produce(
                topics.alerts,
                key=alert["model_id"].encode(),
                value=orjson.dumps(alert),
                on_delivery=on_delivery,
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
                on_delivery=on_delivery,
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
        if result.alerts or result.failures:
            self._monitors_changed = True
        self._refresh_model_gauges()
        metrics.LABELED.inc(result.labeled)
        metrics.EXPIRED_PREDICTIONS.inc(result.expired_predictions)
        metrics.JOIN_EVICTIONS.inc(result.evicted)
        metrics.MODELS.set(self._pipeline.model_count)
        tasks = self._pipeline.tasks.values()
        metrics.JOIN_WAITING.labels("predictions").set(
            sum(t.join.waiting_predictions for t in tasks)
        )
        metrics.JOIN_WAITING.labels("outcomes").set(sum(t.join.waiting_outcomes for t in tasks))

    def _refresh_model_gauges(self) -> None:
        """Set the firing and failed gauges from the monitors, if anything they show changed.

        What fires changes only with an alert, a failure or the set of monitors (a reload, an
        assignment; a newly admitted model fires nothing yet): walking every monitor after
        every batch cost 1.8 us a message at 1,000 models. The run loop calls this after every
        read too, so a replica whose partitions moved away drops their series even when nothing
        more arrives for it: a stale 1 would keep ``DriftlineModelAlertFiring`` (the max over
        replicas) firing after the new owner resolved the alert.
        """
        if not self._monitors_changed:
            return
        self._monitors_changed = False
        self._failed_gauges.replace({(m,): 1.0 for m in self._pipeline.failed_models})
        firing: dict[tuple[str, ...], float] = {}
        for monitor in self._pipeline.monitors():
            for kind, _, _, severity in monitor.firing:
                key = (monitor.model_id, kind, severity)
                firing[key] = firing.get(key, 0.0) + 1.0
        self._firing_gauges.replace(firing)

    def _publish_kpis(self) -> None:
        values: dict[tuple[str, ...], float] = {}
        pooled: dict[tuple[str, ...], float] = {}
        for snapshot in self._pipeline.kpi_snapshots():
            self._producer.produce(
                self._config.topics.kpis,
                key=snapshot["model_id"].encode(),
                value=orjson.dumps(snapshot),
                on_delivery=self._checkpoints.on_delivery,
            )
            for name, value in snapshot["kpis"].items():
                if isinstance(value, int | float):
                    values[(snapshot["model_id"], name)] = float(value)
            if snapshot.get("segments"):
                pooled[(snapshot["model_id"],)] = snapshot["segments"]["pooled_events"]
        self._kpi_gauges.replace(values)
        self._pooled_gauges.replace(pooled)

    # -- rebalance callbacks ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tasks = sorted({tp.partition for tp in partitions})
        if self._checkpoints.has_state:
            self._checkpoints.restore(tasks, partitions)
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
            # Everything read from the revoked tasks is observed and out before the commit;
            # held alerts stay in the state, or go out now if there is none.
            self._publish(
                self._pipeline.flush(tasks, release_held=not self._config.state.enabled)
            )
            self._checkpoints.commit(partitions=tasks, force=True)
        except KafkaError as exc:
            self._log.error("commit_on_revoke_failed", error=str(exc))
            if self._checkpoints.transactional:
                raise  # the transaction was aborted: only a restart gets back in step
        self._pipeline.revoke(tasks)
        self._checkpoints.forget(tasks)
        self._balancer.forget(tasks)
        self._health.set_state(assigned=len(self._pipeline.tasks))
        self._monitors_changed = True
        metrics.REBALANCES.labels("revoke").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self._pipeline.tasks))
        self._log.info("partitions_revoked", tasks=sorted(tasks))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tasks = {tp.partition for tp in partitions}
        if self._checkpoints.transactional:
            # The open transaction holds outputs of tasks another replica owns now: it must not
            # commit, and the other tasks' state ran ahead of what is committed.
            self._checkpoints.abort()
            raise KafkaError(
                f"partitions {sorted(tasks)} were lost under exactly_once; exiting, so that a "
                "restart resumes from the last committed state"
            )
        # Lost, not revoked: another replica may own them already, so nothing is committed.
        self._checkpoints.drop_offsets(tasks)
        self._pipeline.revoke(tasks)
        self._checkpoints.forget(tasks)
        self._balancer.forget(tasks)
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

    # -- config reload -------------------------------------------------------------------------

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
        # A monitor the new config restarts would take its held alerts with it.
        self._publish(self._pipeline.flush(release_held=True))
        reset = self._pipeline.reconfigure(config)
        self._monitors_changed = True
        self._config = config
        self._checkpoints.reconfigure(config)
        self._balancer.reconfigure(config)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        self._log.info("config_reloaded", reset_models=reset)
