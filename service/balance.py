"""Which input topic of a task runs ahead of the other in event time.

The topics are fetched independently; on a backlog librdkafka happily delivers one of them far
ahead of the other, and the join would have to buffer everything in between (or evict it at its
cap). The service pauses the side that runs ahead once its buffered entries fill half the cap,
while the other side still has unread messages (``DriftlineApp._balance``). A side that has
nothing left to read never causes a pause, so an idle or empty topic cannot stall the other one.
"""

from __future__ import annotations

from typing import Literal

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
