"""The topics of driftline: created by ``driftline create-topics``, checked by ``driftline run``.

Both input topics must exist with the same number of partitions: task p joins partition p of
each. With state on, the state topic must exist too; it is created compacted, with the inputs'
partition count, so that task p's state is in its partition p.
"""

from __future__ import annotations

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from driftline.service.config import Config
from driftline.service.errors import KafkaError, TopologyError


def check_topology(admin: AdminClient, config: Config) -> int | None:
    """Check that the topics ``driftline run`` reads exist and fit. Returns the state topic's
    partition count (``None`` with state off)."""
    topics = config.topics
    try:
        metadata = admin.list_topics(timeout=30)
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
    state_partitions = None
    if config.state.enabled:
        state = metadata.topics.get(topics.state)
        if state is None or state.error is not None:
            raise TopologyError(
                f"state topic {topics.state!r} does not exist; create it compacted "
                "(driftline create-topics) or set state.enabled: false to run without state"
            )
        state_partitions = len(state.partitions)
    if len(set(counts.values())) != 1:
        raise TopologyError(
            f"input topics are not co-partitioned: {counts}; both must have the same number "
            "of partitions, keyed by model_id"
        )
    return state_partitions


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
