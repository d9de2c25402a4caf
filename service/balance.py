"""Which input topic of a task runs ahead of the other in event time, and pausing it.

The topics are fetched independently; on a backlog librdkafka happily delivers one of them far
ahead of the other, and the join would have to buffer everything in between (or evict it at its
cap). The service pauses the side that runs ahead once its buffered entries fill half the cap,
while the other side still has unread messages (``InputBalancer.balance``). A side that has
nothing left to read never causes a pause, so an idle or empty topic cannot stall the other one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition

from driftline.service import metrics
from driftline.service.config import Config
from driftline.service.pipeline import Pipeline, Role

Side = Literal["prediction", "outcome"]


def side_ahead(
    prediction_watermark_ms: int, outcome_watermark_ms: int, max_skew_ms: int
) -> Side | None:
    """The side of one task that is more than ``max_skew_ms`` ahead of the other, if any.

    It is paused only while the other side still has unread messages (the caller asks the broker
    only then, so the common in-step case costs nothing).
    """
    if prediction_watermark_ms - outcome_watermark_ms > max_skew_ms:
        return "prediction"
    if outcome_watermark_ms - prediction_watermark_ms > max_skew_ms:
        return "outcome"
    return None


class InputBalancer:
    """Keeps both input topics of a task in step: the consumer's pauses and resumes."""

    def __init__(
        self,
        config: Config,
        *,
        consumer: Consumer,
        pipeline: Pipeline,
        stored_offset: Callable[[str, int], int | None],
        log: Any,
    ) -> None:
        self._config = config
        self._consumer = consumer
        self._pipeline = pipeline
        self._stored_offset = stored_offset  # the next offset to read, once a batch was handled
        self._log = log
        self._paused: set[tuple[str, int]] = set()

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def forget(self, tasks: set[int]) -> None:
        """The tasks were revoked or lost: their pauses went with them."""
        self._paused = {(t, p) for t, p in self._paused if p not in tasks}

    def balance(self) -> None:
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
            if waiting > threshold and self.unread(behind_topic, partition) > 0:
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

    def caught_up(self, partition: int, role: Role) -> bool:
        """Whether the task's partition of the ``role`` topic has nothing left to read."""
        topics = self._config.topics
        topic = topics.predictions if role == "prediction" else topics.outcomes
        return self.unread(topic, partition) == 0

    def unread(self, topic: str, partition: int) -> int:
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
            position = self._stored_offset(topic, partition)
            if position is None:
                (current,) = self._consumer.position([tp])
                position = current.offset
                if position < 0:  # nothing read from it yet
                    return high
        except KafkaException:
            return 0
        return max(high - position, 0)
