"""Prometheus metrics, defined once at module level.

Label values are bounded: topics, partitions, dead-letter reasons (a closed set), alert kinds and
severities, and model ids (capped by ``limits.max_models``). Never an event id or a feature value.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "driftline_events_consumed_total", "Messages read from the input topics.", ["topic"]
)
DEAD_LETTERS = Counter(
    "driftline_dead_letters_total", "Messages sent to the dead-letter topic.", ["reason"]
)
ALERTS = Counter("driftline_alerts_total", "Alert events produced.", ["kind", "severity", "status"])
INCIDENTS = Counter(
    "driftline_incidents_total", "Incident events produced.", ["status", "severity"]
)
BATCH_SIZE = Histogram(
    "driftline_batch_size",
    "Messages per processed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
BATCH_SECONDS = Histogram(
    "driftline_batch_processing_seconds",
    "Time to process one batch (decode to produce).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "driftline_consumer_lag_messages", "High watermark minus position.", ["topic", "partition"]
)
JOIN_WAITING = Gauge(
    "driftline_join_buffer_entries", "Entries waiting in the join buffers.", ["side"]
)
JOIN_EVICTIONS = Counter(
    "driftline_join_evictions_total", "Join-buffer entries evicted by the size cap."
)
EXPIRED_PREDICTIONS = Counter(
    "driftline_predictions_expired_total", "Predictions that aged out without an outcome."
)
LABELED = Counter("driftline_labeled_events_total", "Predictions joined with their outcome.")
MODELS = Gauge("driftline_models", "Models monitored by this process.")
MODEL_FAILED = Gauge(
    "driftline_model_failed", "1 while a model's processing has failed.", ["model_id"]
)
MODEL_FAILURES = Counter(
    "driftline_model_failures_total", "Batches whose processing failed, per model.", ["model_id"]
)
KPI = Gauge("driftline_model_kpi", "Rolling KPI value per model.", ["model_id", "metric"])
SEGMENT_POOLED = Gauge(
    "driftline_segment_events_pooled",
    "Labelled events of segment values beyond max_segments_per_key, judged as __other__.",
    ["model_id"],
)
ALERT_ACTIVE = Gauge(
    "driftline_alerts_firing",
    "Alerts currently firing per model, kind and severity.",
    ["model_id", "kind", "severity"],
)
COMMITS = Counter("driftline_offset_commits_total", "Offset commits.", ["result"])
REBALANCES = Counter("driftline_rebalances_total", "Partition assignment changes.", ["event"])
KAFKA_ERRORS = Counter("driftline_kafka_errors_total", "Errors reported by librdkafka.", ["code"])
CONFIG_RELOADS = Counter("driftline_config_reloads_total", "Config reloads.", ["result"])
ASSIGNED_PARTITIONS = Gauge("driftline_assigned_partitions", "Tasks assigned to this replica.")
PAUSED_PARTITIONS = Gauge(
    "driftline_paused_partitions",
    "Input partitions paused because they ran ahead of their task's other topic.",
)
SNAPSHOTS = Counter(
    "driftline_snapshots_total",
    "Task snapshots by outcome (written, failed, too_large, restored, refused, unreadable).",
    ["result"],
)
SNAPSHOT_BYTES = Histogram(
    "driftline_snapshot_bytes",
    "Size of written task snapshots.",
    buckets=(1e4, 1e5, 1e6, 4e6, 16e6, 64e6),
)
PAUSES = Counter(
    "driftline_input_pauses_total",
    "Times an input partition was paused to let the task's other topic catch up.",
)
READY = Gauge("driftline_ready", "1 while /readyz answers ready.")
BROKER_REACHABLE = Gauge("driftline_broker_reachable", "1 while the broker answers.")


class GaugeFamily:
    """Sets a labelled gauge from a complete snapshot and removes the children that are gone.

    Per-model and per-partition series must disappear when the model is dropped or the partition
    moves to another replica; otherwise a stale value keeps an alerting rule firing.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._present: set[tuple[str, ...]] = set()

    def replace(self, values: dict[tuple[str, ...], float]) -> None:
        for labels in self._present - values.keys():
            self._gauge.remove(*labels)
        for labels, value in values.items():
            self._gauge.labels(*labels).set(value)
        self._present = set(values)
