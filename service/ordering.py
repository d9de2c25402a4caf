"""Labelled events in the order of their outcomes, whatever the interleaving of the two topics.

The two input topics of a task are fetched independently, so one read may see an outcome before
its prediction and the next the other way round. The join pairs them either way; but if each
pair went to its model the moment it completed, the order of a model's labelled events (what
its KPI windows and concept-drift detector see) would depend on how the topics happened to
interleave, and a restart, a rebalance or a replay could decide differently from the first run.

So pairs are handed out in the order of their outcomes in the outcome partition: an outcome that
waits for its prediction holds back the outcomes read after it. It stops holding them once the
predictions of its task have moved ``max_skew_s`` (event time) past it: its prediction is then
late, and the pair goes out when the prediction comes (out of order, counted). An outcome that
expires unmatched is dropped from the order.

The order keeps its watermark: the newest event time among the outcomes handed out. Each pair
takes it as its *mark* (``detectors.held``): the point the label stream had reached.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from driftline.service.join import Key


class PendingLabel:
    """One outcome, from its read until its pair is handed to its model."""

    __slots__ = (
        "dropped",
        "labeled",
        "mark",
        "model_id",
        "record",
        "timestamp_ms",
        "unordered",
    )

    def __init__(self, model_id: str, record: Any, timestamp_ms: int, labeled: Any) -> None:
        self.model_id = model_id
        self.record = record  # the outcome's InputRecord
        self.timestamp_ms = timestamp_ms
        # (version, prediction, score, predicted_at, label, labeled_at, topic, offset), or None
        # while the prediction is unread.
        self.labeled: tuple[Any, ...] | None = labeled
        self.dropped = False
        self.unordered = False
        self.mark = 0  # the order's watermark when the pair was handed out


class OutcomeOrder:
    """The outcomes of one task not yet handed out, in the order they were read.

    Examples
    --------
    >>> order = OutcomeOrder()
    >>> order.add("m", "outcome-0", 900, ("pair-0",))  # nothing held: out at once
    True
    >>> _ = order.wait(("m", "e1"), "m", "outcome-1", 1_000)  # its prediction is unread
    >>> order.add("m", "outcome-2", 1_100, ("pair-2",))  # held behind outcome-1
    False
    >>> [p.labeled for p in order.complete(("m", "e1"), ("pair-1",))]
    [('pair-1',), ('pair-2',)]
    """

    def __init__(self) -> None:
        self._queue: deque[PendingLabel] = deque()
        self._awaiting: dict[Key, PendingLabel] = {}
        self._watermark_ms = 0

    @property
    def watermark_ms(self) -> int:
        """The newest event time among the outcomes handed out: no pair handed out from now on
        gets a smaller mark."""
        return self._watermark_ms

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, model_id: str, record: Any, timestamp_ms: int, labeled: Any) -> bool:
        """An outcome whose pair is complete (its prediction was waiting, or it carried it).
        Returns True when nothing is held back: the pair goes out now (with the order's
        watermark as its mark), and is not kept."""
        if not self._queue:
            self._watermark_ms = max(self._watermark_ms, timestamp_ms)
            return True
        self._queue.append(PendingLabel(model_id, record, timestamp_ms, labeled))
        return False

    def wait(self, key: Key, model_id: str, record: Any, timestamp_ms: int) -> PendingLabel:
        """An outcome that waits in the join for its prediction."""
        pending = self._awaiting[key] = PendingLabel(model_id, record, timestamp_ms, None)
        self._queue.append(pending)
        return pending

    def complete(self, key: Key, labeled: Any) -> list[PendingLabel]:
        """The prediction of a waiting outcome arrived. Returns what goes out now: the pair
        (and the complete ones it held back) if it was first in the order, or the pair alone if
        it stopped holding the order (its prediction was late)."""
        pending = self._awaiting.pop(key)
        pending.labeled = labeled
        if pending.unordered:
            self._hand_out(pending)
            return [pending]
        queue = self._queue
        if queue[0] is not pending:
            return []
        out: list[PendingLabel] = []
        while queue and (queue[0].labeled is not None or queue[0].dropped):
            head = queue.popleft()
            if not head.dropped:
                self._hand_out(head)
                out.append(head)
        return out

    def drop(self, key: Key) -> None:
        """A waiting outcome expired unmatched (it becomes a dead letter)."""
        pending = self._awaiting.pop(key, None)
        if pending is not None:
            pending.dropped = True

    def drop_model(self, model_id: str) -> None:
        for key in [k for k in self._awaiting if k[0] == model_id]:
            self.drop(key)
        for pending in self._queue:
            if pending.model_id == model_id:
                pending.dropped = True

    def release(self, prediction_watermark_ms: int, max_skew_ms: int) -> Iterator[PendingLabel]:
        """Hand out the complete pairs at the front, in order, up to the first outcome whose
        prediction may still come in order."""
        queue = self._queue
        horizon = prediction_watermark_ms - max_skew_ms
        while queue:
            head = queue[0]
            if head.labeled is None and not head.dropped:
                if head.timestamp_ms >= horizon:
                    return
                head.unordered = True  # its prediction is late: it holds the others no longer
                queue.popleft()
                continue
            queue.popleft()
            if not head.dropped:
                self._hand_out(head)
                yield head

    def _hand_out(self, pending: PendingLabel) -> None:
        self._watermark_ms = max(self._watermark_ms, pending.timestamp_ms)
        pending.mark = self._watermark_ms

    @property
    def first(self) -> tuple[str, int] | None:
        """The topic and offset of the first outcome not handed out (in the order), if any."""
        for pending in self._queue:
            if not pending.dropped:
                return pending.record.topic, int(pending.record.offset)
        return None

    @property
    def first_held(self) -> tuple[str, int] | None:
        """The topic and offset of the first complete pair held back, if any: read, out of the
        join, and not observed yet (an outcome still waiting is in the join)."""
        for pending in self._queue:
            if pending.labeled is not None and not pending.dropped:
                return pending.record.topic, int(pending.record.offset)
        return None
