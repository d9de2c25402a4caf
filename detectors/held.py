"""A model's alerts from its two input streams, booked into incidents in one order.

The alerts of a model come from two streams: its predictions (data drift, prediction drift,
quality) and its labelled events (KPIs, concept drift). The service reads the two from different
topics, and how the reads interleave is chance; an incident, though, depends on the order its
alerts are booked in (an alert that fires after the last one resolved opens a new incident). So
the service does not book an alert when its stream produces it. Each alert gets a *mark*: the
event time its stream had reached at the event that triggered it (the task's watermark of that
stream then, which never decreases along the stream), and it is held until the other stream has
passed that mark: nothing the other stream still produces can then come before it. Alerts
leave in the order of their marks (predictions first on a tie), which depends only on the two
streams, never on how they were interleaved.

A stream that has nothing more to say (an idle topic, the end of a replay) is passed as
unbounded, which releases what waits for it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["UNBOUNDED", "HeldAlerts"]

UNBOUNDED = 2**62
"""The bound of a stream that will bring nothing earlier than any mark."""

# (mark, position of the triggering event in its stream, alert)
Held = tuple[int, int, dict[str, Any]]


class HeldAlerts:
    """The alerts of one model not yet booked, per stream, in the order of their marks.

    Examples
    --------
    >>> held = HeldAlerts()
    >>> held.add_predictions([(1_000, 7, {"alert": "drift"})])
    >>> held.add_labels([(900, 3, {"alert": "kpi"})])
    >>> held.release(prediction_bound=1_000, label_bound=950)  # the kpi alert: 900 < 1_000
    [{'alert': 'kpi'}]
    >>> held.release(prediction_bound=1_200, label_bound=950)  # labels may still bring 950
    []
    >>> held.release(prediction_bound=1_200, label_bound=1_000)
    [{'alert': 'drift'}]
    """

    def __init__(self) -> None:
        self._predictions: deque[Held] = deque()
        self._labels: deque[Held] = deque()

    def __len__(self) -> int:
        return len(self._predictions) + len(self._labels)

    def add_predictions(self, alerts: list[Held]) -> None:
        """Alerts of the prediction stream, from events after those of earlier calls."""
        self._predictions.extend(sorted(alerts, key=_order))

    def add_labels(self, alerts: list[Held]) -> None:
        """Alerts of the label stream, from events after those of earlier calls."""
        self._labels.extend(sorted(alerts, key=_order))

    def release(self, prediction_bound: int, label_bound: int) -> list[dict[str, Any]]:
        """The alerts that nothing to come can precede, in order.

        ``prediction_bound`` / ``label_bound``: no alert the stream produces from now on has a
        smaller mark (:data:`UNBOUNDED` when the stream is idle or ended).
        """
        predictions, labels = self._predictions, self._labels
        out: list[dict[str, Any]] = []
        while predictions or labels:
            if predictions and (not labels or predictions[0][0] <= labels[0][0]):
                # A later label alert has a mark >= the label bound (or the first waiting one):
                # on a tie the prediction goes first.
                if not labels and predictions[0][0] > label_bound:
                    break
                out.append(predictions.popleft()[2])
            else:
                # A later prediction alert with the same mark would go first: strictly past it.
                if not predictions and labels[0][0] >= prediction_bound:
                    break
                out.append(labels.popleft()[2])
        return out


def _order(held: Held) -> tuple[int, int]:
    return held[0], held[1]
