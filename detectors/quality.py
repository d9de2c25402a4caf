"""Data quality: per-feature null, type-mismatch, out-of-range and unseen-category rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from detectors.columns import FeatureColumns, FeatureKind
from detectors.reference import CategoricalProfile, ModelProfile, NumericProfile

QualityMetric = Literal[
    "null_rate", "type_mismatch_rate", "out_of_range_rate", "unseen_category_rate"
]

# One flag byte per event and feature.
_MISSING = 1
_MISMATCH = 2
_CHECKED = 4  # a usable value compared with the reference
_OUTSIDE = 8  # ... and found out of range / in a category the reference does not have
_BITS = (_MISSING, _MISMATCH, _CHECKED, _OUTSIDE)
_BIT_VALUES = np.array(_BITS, dtype=np.uint8)
_MAX_RUNNING_CELLS = 1 << 20


@dataclass(frozen=True, slots=True)
class QualityMeasure:
    """One quality rate of one feature over the window as it stood after row ``index`` of the
    batch. ``n`` is the rate's denominator: events in the window for ``null_rate`` and
    ``type_mismatch_rate``, usable values compared with the reference for the other two.
    ``reference_value`` is the same rate in the reference (None before there is one)."""

    feature: str
    metric: QualityMetric
    value: float
    n: int
    reference_value: float | None
    index: int


class QualityMonitor:
    """Rolling data-quality rates per feature over the last ``window_size`` events.

    Every ``every`` events (counted across batches) each feature gets:

    * ``null_rate``: share of events where the feature is absent or null;
    * ``type_mismatch_rate``: share holding a value of the wrong type (or a non-finite number);
    * ``out_of_range_rate`` (numeric, needs a reference): share of usable values outside the
      reference range ``[min, max]`` widened on each side by ``range_margin`` times its width,
      so a stationary feature is almost never out of range (for a normal feature and a
      5,000-event reference, ~1e-5 of values) while a unit change or a broken scaler is;
    * ``unseen_category_rate`` (categorical, needs a reference): share of usable values whose
      category is not among the reference profile's categories (its top-K; with at most K
      categories in the reference these are exactly the never-seen ones).

    The reference is ``profile``, or else the profile of the first ``reference_size`` events
    (built exactly like :class:`~detectors.data_drift.DataDriftMonitor`'s, so sharing one via
    :meth:`set_reference` gives the same result without keeping the rows twice). Until it is
    there, only null and type-mismatch rates are measured. Features seen that are not in the
    reference are counted in :attr:`unexpected_features`, not measured. Thresholds are not
    applied here: the caller runs the measures through its alert state machines.

    Parameters
    ----------
    window_size
        Events in the rolling window.
    every
        Cadence of the measures, in events.
    profile
        Reference profile; None to build one from the first ``reference_size`` events.
    reference_size
        Events in a first-N reference.
    range_margin
        Widening of the reference range, as a fraction of its width.
    min_window
        Measures start once the window holds ``min(min_window, window_size)`` events.

    Examples
    --------
    >>> from detectors.columns import columnarize
    >>> monitor = QualityMonitor(window_size=100, every=50, reference_size=100)
    >>> kinds = {"x": "numeric"}
    >>> _ = monitor.update(columnarize([{"x": i % 10} for i in range(100)], kinds), kinds,
    ...                    np.zeros(100, np.int64))
    >>> rows = [{"x": None} if i % 5 == 0 else {"x": 100} for i in range(100)]
    >>> measures = monitor.update(columnarize(rows, kinds), kinds, np.zeros(100, np.int64))
    >>> [(m.metric, m.value, m.n) for m in measures if m.index == 99]
    [('null_rate', 0.2, 100), ('type_mismatch_rate', 0.0, 100), ('out_of_range_rate', 1.0, 80)]
    """

    def __init__(
        self,
        window_size: int = 500,
        every: int = 100,
        *,
        profile: ModelProfile | None = None,
        reference_size: int = 5000,
        range_margin: float = 0.1,
        min_window: int = 100,
    ) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        if every < 1:
            raise ValueError("every must be >= 1")
        if reference_size < 1:
            raise ValueError("reference_size must be >= 1")
        if not range_margin >= 0.0:
            raise ValueError("range_margin must be >= 0")
        if min_window < 1:
            raise ValueError("min_window must be >= 1")
        self.window_size = window_size
        self.every = every
        self.profile = profile
        self.reference_size = reference_size
        self.range_margin = range_margin
        self.min_window = min_window

        self._n_seen = 0
        self._reference: ModelProfile | None = None
        self._ref_parts: list[FeatureColumns] = []
        self._ref_rows = 0
        self._ref_kinds: dict[str, FeatureKind] = {}
        self._tracked: dict[str, FeatureKind] = {}
        self._tails: dict[str, np.ndarray] = {}
        self._bounds: dict[str, tuple[float, float]] = {}
        self._unexpected: dict[str, int] = {}
        self._pending: ModelProfile | None = None  # first-N reference, used from the split on
        if profile is not None:
            self.set_reference(profile)

    @property
    def reference_profile(self) -> ModelProfile | None:
        """The reference in use (None while a first-N reference fills)."""
        return self._reference

    @property
    def n_seen(self) -> int:
        """Events seen."""
        return self._n_seen

    @property
    def features(self) -> tuple[str, ...]:
        """Features measured."""
        return tuple(self._tracked)

    @property
    def unexpected_features(self) -> dict[str, int]:
        """Features not in the reference -> events (since the reference) that carried them."""
        return dict(self._unexpected)

    def set_reference(self, profile: ModelProfile) -> None:
        """Use ``profile`` as the reference from the next event on (e.g. the profile a
        first-N :class:`~detectors.data_drift.DataDriftMonitor` just built). Windows keep their
        null and mismatch history; range and category checks start with the next event."""
        self._reference = profile
        self._ref_parts = []
        self._tracked = profile.kinds()
        self._tails = {
            name: self._tails.get(name, np.empty(0, dtype=np.uint8)) for name in self._tracked
        }
        self._bounds = {}
        for name, feature in profile.features.items():
            if isinstance(feature, NumericProfile) and feature.count > 0:
                margin = self.range_margin * (feature.max - feature.min)
                self._bounds[name] = (feature.min - margin, feature.max + margin)

    def update(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], timestamps_ms: np.ndarray
    ) -> list[QualityMeasure]:
        """Add a batch of events; return the measures of every cadence point in it, ordered by
        ``index`` then feature. ``kinds`` gives the features before there is a reference
        (after, the reference's features are measured and the others counted as unexpected)."""
        n = columns.n
        if np.shape(timestamps_ms) != (n,):
            raise ValueError(f"timestamps_ms must have one entry per row ({n})")
        split = 0
        if self._reference is None:
            split = self._collect(columns, kinds)
        measures = self._process(columns.slice(0, split), kinds, 0) if split else []
        if split < n:
            rest = columns.slice(split, n) if split else columns
            measures.extend(self._process(rest, kinds, split))
        return measures

    def _collect(self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind]) -> int:
        """Take first-N reference rows; returns where the batch must be split (0: no split)."""
        for name, kind in kinds.items():
            self._ref_kinds.setdefault(name, kind)
        take = min(self.reference_size - self._ref_rows, columns.n)
        self._ref_parts.append(columns.slice(0, take))
        self._ref_rows += take
        if self._ref_rows < self.reference_size:
            return 0
        ref_kinds = dict(sorted(self._ref_kinds.items()))
        rows = FeatureColumns.concat(self._ref_parts, ref_kinds)
        self._pending = ModelProfile.from_columns(rows, ref_kinds)
        return take

    def _process(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], offset: int
    ) -> list[QualityMeasure]:
        reference = self._reference
        if reference is None:
            for name, kind in kinds.items():
                if name not in self._tracked:
                    self._tracked[name] = kind
                    self._tails[name] = np.empty(0, dtype=np.uint8)
        else:
            for name in columns.kinds():
                if name not in self._tracked:
                    carried = int(np.count_nonzero(~columns.missing[name]))
                    if carried:
                        self._unexpected[name] = self._unexpected.get(name, 0) + carried
        n = columns.n
        lag = self._n_seen % self.every
        points = np.arange(self.every - 1 - lag, n, self.every)
        selected = columns.select(self._tracked)
        tracked = list(self._tracked.items())
        flags = [self._flags(selected, name, kind) for name, kind in tracked]
        # Features whose tails are equally long share one window arithmetic: their histories
        # are stacked and every flag bit of all of them is counted in one cumulative sum.
        groups: dict[int, list[int]] = {}
        for i, (name, _) in enumerate(tracked):
            groups.setdefault(self._tails[name].shape[0], []).append(i)
        counted: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        for length, members in groups.items():
            ends = length + points + 1
            starts = np.maximum(ends - self.window_size, 0)
            sizes = ends - starts
            # Chunks bound the memory of the running counts for wide models and big batches.
            step = max(1, _MAX_RUNNING_CELLS // ((length + n + 1) * len(_BITS)))
            for first in range(0, len(members), step):
                chunk = members[first : first + step]
                history = np.concatenate(
                    [
                        np.stack([self._tails[tracked[i][0]] for i in chunk]),
                        np.stack([flags[i] for i in chunk]),
                    ],
                    axis=1,
                )
                running = np.zeros((len(chunk), length + n + 1, len(_BITS)), dtype=np.int64)
                np.cumsum(
                    (history[:, :, None] & _BIT_VALUES) != 0,
                    axis=1,
                    dtype=np.int64,
                    out=running[:, 1:],
                )
                counts = running[:, ends] - running[:, starts]
                for row, i in enumerate(chunk):
                    counted[i] = (sizes, [counts[row, :, b] for b in range(len(_BITS))])
                    self._tails[tracked[i][0]] = history[row, -self.window_size :]
        per_feature = [(name, kind, *counted[i]) for i, (name, kind) in enumerate(tracked)]
        self._n_seen += n
        if self._pending is not None:
            self.set_reference(self._pending)
            self._pending = None
        return self._measures(points, offset, per_feature, reference)

    def _flags(self, columns: FeatureColumns, name: str, kind: FeatureKind) -> np.ndarray:
        missing = columns.missing[name]
        flags = missing.astype(np.uint8) * _MISSING
        flags |= columns.type_mismatch[name].astype(np.uint8) * _MISMATCH
        reference = self._reference
        if reference is None:
            return flags
        profile = reference.features.get(name)
        if kind == "numeric" and isinstance(profile, NumericProfile):
            values = columns.numeric[name]
            checked = ~np.isnan(values)
            bounds = self._bounds.get(name)
            outside = (
                checked & ((values < bounds[0]) | (values > bounds[1]))
                if bounds is not None
                else checked
            )
        elif kind == "categorical" and isinstance(profile, CategoricalProfile):
            codes = profile.encode(columns.categorical[name])
            checked = codes >= 0
            outside = codes == len(profile.categories)
        else:
            return flags
        flags |= checked.astype(np.uint8) * _CHECKED
        flags |= outside.astype(np.uint8) * _OUTSIDE
        return flags

    def _measures(
        self,
        points: np.ndarray,
        offset: int,
        per_feature: list[tuple[str, FeatureKind, np.ndarray, list[np.ndarray]]],
        reference: ModelProfile | None,
    ) -> list[QualityMeasure]:
        need = min(self.min_window, self.window_size)
        out: list[QualityMeasure] = []
        for k, point in enumerate(points.tolist()):
            index = offset + point
            for name, kind, sizes, (missing, mismatch, checked, outside) in per_feature:
                size = int(sizes[k])
                if size < need:
                    continue
                profile = None if reference is None else reference.features.get(name)
                out.append(
                    QualityMeasure(
                        name,
                        "null_rate",
                        int(missing[k]) / size,
                        size,
                        None if profile is None else profile.null_rate,
                        index,
                    )
                )
                out.append(
                    QualityMeasure(
                        name,
                        "type_mismatch_rate",
                        int(mismatch[k]) / size,
                        size,
                        None if profile is None else profile.type_mismatch_rate,
                        index,
                    )
                )
                n_checked = int(checked[k])
                if profile is None or n_checked == 0:
                    continue
                if kind == "numeric":
                    out.append(
                        QualityMeasure(
                            name,
                            "out_of_range_rate",
                            int(outside[k]) / n_checked,
                            n_checked,
                            0.0,
                            index,
                        )
                    )
                elif isinstance(profile, CategoricalProfile):
                    ref_unseen = profile.other_count / profile.count if profile.count else 0.0
                    out.append(
                        QualityMeasure(
                            name,
                            "unseen_category_rate",
                            int(outside[k]) / n_checked,
                            n_checked,
                            ref_unseen,
                            index,
                        )
                    )
        return out
