"""``ModelMonitor``: one model over its versions, with its incidents.

Each ``model_version`` is judged by its own :class:`~detectors.generation.Generation`: the first
prediction of a version not seen before closes the current generation's firing alerts as
``resolved`` with ``resolution: "superseded"`` and starts a fresh one, with new references, KPI
baselines and detectors (``on_new_version: reset``, the default). A new version is never judged
against the old version's reference. The generation it replaced is kept, retired, so that the
outcomes of its predictions that arrive late still count for it (its KPIs), without alerting.
Predictions of a retired version (a rollout that alternates versions) are counted but not judged.
With ``on_new_version: keep`` a new version only relabels the current generation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from driftline.detectors.batch import ExpiredBatch, LabeledBatch, PredictionBatch, version_runs
from driftline.detectors.events import Labeled, Prediction, Source
from driftline.detectors.generation import Generation, Task
from driftline.detectors.held import HeldAlerts
from driftline.detectors.incidents import IncidentBook
from driftline.detectors.reference import ModelProfile
from driftline.detectors.settings import MonitorSettings

__all__ = ["ModelMonitor"]

_B = TypeVar("_B", PredictionBatch, LabeledBatch, ExpiredBatch)
_RETIRED_VERSIONS = 16  # versions remembered as retired; older ones count as retired too


class ModelMonitor:
    """All monitoring state of one model: its current generation and its incident book.

    Parameters
    ----------
    model_id
        The model this monitor watches.
    settings
        Its effective settings (``defaults`` merged with its own block).
    profile
        Baseline profile when ``data_drift.reference`` is ``"profile"``.

    Examples
    --------
    >>> from driftline.detectors.events import Labeled, Source
    >>> import random
    >>> rng = random.Random(7)
    >>> monitor = ModelMonitor("m", MonitorSettings())
    >>> def labeled(i, accuracy, version="v1"):
    ...     y = rng.random() < 0.5
    ...     pred = y if rng.random() < accuracy else not y
    ...     return Labeled(str(i), "m", version, int(pred), None, int(y), i, i, Source("o", 0, i))
    >>> monitor.observe_labeled([labeled(i, 0.95) for i in range(4000)])
    []
    >>> out = monitor.observe_labeled([labeled(i, 0.70) for i in range(4000, 6000)])
    >>> [(e["kind"], e["status"], e["severity"]) for e in out]  # doctest: +NORMALIZE_WHITESPACE
    [('incident', 'opened', 'critical'), ('concept_drift', 'firing', 'critical'),
     ('kpi_threshold', 'firing', 'warning'), ('kpi_threshold', 'firing', 'critical')]
    >>> len({e["incident_id"] for e in out})
    1
    """

    def __init__(
        self, model_id: str, settings: MonitorSettings, profile: ModelProfile | None = None
    ) -> None:
        self.model_id = model_id
        self.settings = settings
        self.profile = profile
        self._current = Generation(model_id, settings, profile)
        self._retired: Generation | None = None
        self._retired_versions: deque[str] = deque(maxlen=_RETIRED_VERSIONS)
        self._book = IncidentBook(model_id)
        self._held = HeldAlerts()
        self._n_predictions = 0
        self._n_labeled = 0
        self._n_generations = 1
        self._n_not_judged = 0

    # -- properties --------------------------------------------------------------------------

    @property
    def task(self) -> Task | None:
        return self._current.task

    @property
    def model_version(self) -> str | None:
        """The version the current generation judges."""
        return self._current.model_version

    @property
    def n_predictions(self) -> int:
        return self._n_predictions

    @property
    def n_labeled(self) -> int:
        return self._n_labeled

    @property
    def n_generations(self) -> int:
        """Generations started: 1 plus the new versions that reset the monitor."""
        return self._n_generations

    @property
    def n_not_judged(self) -> int:
        """Predictions and labels of retired versions that no longer feed any generation."""
        return self._n_not_judged

    @property
    def firing(self) -> frozenset[tuple[str, str, str, str]]:
        """(kind, detector, feature or metric, severity) of every alert now firing."""
        return self._current.firing

    @property
    def open_incident(self) -> str | None:
        return self._book.open_incident

    @property
    def n_held(self) -> int:
        """Alerts observed with :meth:`observe_held` and not released yet."""
        return len(self._held)

    @property
    def generation(self) -> Generation:
        """The generation judging the current version."""
        return self._current

    # -- events --------------------------------------------------------------------------------

    def observe(
        self,
        predictions: PredictionBatch | Sequence[Prediction] = (),
        labeled: LabeledBatch | Sequence[Labeled] = (),
        expired: ExpiredBatch | Sequence[Prediction] = (),
    ) -> list[dict[str, Any]]:
        """One batch of the model's events: its alerts and incident events, in event time.

        The alerts of all three kinds of event are booked together, so an incident is opened
        by the earliest of them whichever side it came from. The service passes columnar
        batches; sequences of ``detectors.events`` objects are converted.
        """
        if not isinstance(predictions, PredictionBatch):
            predictions = PredictionBatch.from_events(predictions)
        if not isinstance(labeled, LabeledBatch):
            labeled = LabeledBatch.from_events(labeled)
        if not isinstance(expired, ExpiredBatch):
            expired = ExpiredBatch.from_events(expired)
        from_predictions, from_labels = self._observe_streams(predictions, labeled, expired)
        return self._book_in_order(from_predictions + from_labels)

    def observe_held(
        self,
        predictions: PredictionBatch,
        labeled: LabeledBatch,
        expired: ExpiredBatch,
        marks: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Like :meth:`observe`, but the alerts wait in the monitor until :meth:`release`
        books them in an order that does not depend on how the two streams were interleaved
        (``detectors.held``). ``marks``: per prediction and per labelled event, the event time
        its stream had reached (non-decreasing along each stream, across calls)."""
        n_predictions, n_labeled = self._n_predictions, self._n_labeled
        from_predictions, from_labels = self._observe_streams(predictions, labeled, expired)
        self._held.add_predictions(_marked(from_predictions, predictions, marks[0], n_predictions))
        self._held.add_labels(_marked(from_labels, labeled, marks[1], n_labeled))

    def release(self, prediction_bound: int, label_bound: int) -> list[dict[str, Any]]:
        """Book the held alerts that nothing to come can precede: no alert either stream
        produces from now on has a mark below its bound (``detectors.held.UNBOUNDED`` for a
        stream that is idle or ended). Returns them with their incident events."""
        if not self._held:
            return []
        return self._book.record(self._held.release(prediction_bound, label_bound))

    def observe_predictions(
        self, predictions: PredictionBatch | Sequence[Prediction]
    ) -> list[dict[str, Any]]:
        return self.observe(predictions=predictions)

    def observe_labeled(self, labeled: LabeledBatch | Sequence[Labeled]) -> list[dict[str, Any]]:
        return self.observe(labeled=labeled)

    def observe_expired(
        self, predictions: ExpiredBatch | Sequence[Prediction]
    ) -> list[dict[str, Any]]:
        """Predictions whose outcome never came: they lower label coverage."""
        return self.observe(expired=predictions)

    def kpi_snapshot(self) -> dict[str, Any]:
        snapshot = self._current.kpi_snapshot()
        snapshot["predictions"] = self._n_predictions
        snapshot["labeled"] = self._n_labeled
        return snapshot

    # -- generations ---------------------------------------------------------------------------

    def _route(
        self,
        events: _B,
        observe: Callable[[Generation, _B], list[dict[str, Any]]],
        late: bool,
    ) -> list[dict[str, Any]]:
        """Feed each run of one version to the generation that judges it.

        ``late``: the events complete predictions made earlier (outcomes, expiries), so those of
        the version just replaced still count for its retired generation.
        """
        alerts: list[dict[str, Any]] = []
        if not events.n:
            return alerts
        for version, start, stop in version_runs(events.versions, self._current.model_version):
            run: _B = events if stop - start == events.n else events.take(start, stop)
            current = self._current.model_version
            if version == current:
                alerts += observe(self._current, run)
            elif version in self._retired_versions:
                if late and self._retired is not None and version == self._retired.model_version:
                    observe(self._retired, run)  # it no longer alerts: its alerts were closed
                else:
                    self._n_not_judged += run.n
            elif isinstance(run, ExpiredBatch):
                self._n_not_judged += run.n  # an expiry never starts a version
            elif current is None or self.settings.on_new_version == "keep":
                self._current.model_version = version
                alerts += observe(self._current, run)
            else:
                alerts += self._supersede(version, *_first(run))
                alerts += observe(self._current, run)
        return alerts

    def _observe_streams(
        self, predictions: PredictionBatch, labeled: LabeledBatch, expired: ExpiredBatch
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Feed both streams to the generations; the alerts of each."""
        self._n_predictions += predictions.n
        self._n_labeled += labeled.n
        from_predictions = self._route(predictions, Generation.observe_predictions, late=False)
        return from_predictions, self._route_labels(labeled, expired)

    def _route_labels(self, labeled: LabeledBatch, expired: ExpiredBatch) -> list[dict[str, Any]]:
        """The label stream: labelled events, and predictions that expired among them. When
        the caller says where each expired (``expired.positions``) and all are of the current
        version, the label tracker takes them in that order."""
        current = self._current.model_version
        if expired.n and labeled.n and expired.positions is not None:
            runs = list(version_runs(labeled.versions, current))
            if (
                len(runs) == 1
                and runs[0][0] == current
                and all(v is None or v == current for v in expired.versions)
            ):
                return self._current.observe_labeled(replace(labeled, expired=expired))
        alerts = self._route(labeled, Generation.observe_labeled, late=True)
        return alerts + self._route(expired, Generation.observe_expired, late=True)

    def _book_in_order(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Each signal reports in its own order; the incident book reads them in event time.
        if not alerts:
            return alerts
        alerts.sort(key=_event_order)
        return self._book.record(alerts)

    def _supersede(self, version: str | None, when: int, source: Source) -> list[dict[str, Any]]:
        old = self._current
        closed = old.close(when, source, version)
        if old.model_version is not None:
            self._retired_versions.append(old.model_version)
        self._retired = old
        self._current = Generation(self.model_id, self.settings, self.profile, version)
        self._n_generations += 1
        return closed

    def __repr__(self) -> str:
        return (
            f"ModelMonitor(model_id={self.model_id!r}, version={self.model_version!r}, "
            f"generations={self._n_generations}, open_incident={self.open_incident!r})"
        )


def _marked(
    alerts: list[dict[str, Any]],
    batch: PredictionBatch | LabeledBatch,
    marks: np.ndarray,
    before: int,
) -> list[tuple[int, int, dict[str, Any]]]:
    """Each alert with the mark and the stream position of the event that triggered it (its
    ``source``; an alert points at an event of its batch)."""
    if not alerts:
        return []
    sources = batch.sources
    out = []
    for alert in alerts:
        source = alert["source"]
        found = np.flatnonzero(sources.offsets == source["offset"]).tolist()
        if len(found) > 1 and not isinstance(sources.topic, str):
            topics = sources.topic
            found = [i for i in found if topics[i] == source["topic"]]
        index = found[0] if found else batch.n - 1
        out.append((int(marks[index]), before + index, alert))
    return out


def _first(run: PredictionBatch | LabeledBatch) -> tuple[int, Source]:
    """Event time and source of the first event of ``run``: where a new version took over."""
    if isinstance(run, PredictionBatch):
        return int(run.timestamps[0]), run.sources.at(0)
    return int(run.labeled_at[0]), run.sources.at(0)


def _event_order(alert: dict[str, Any]) -> tuple[str, str, int]:
    source = alert["source"]
    return (alert["detected_at"], source["topic"], source["offset"])
