"""Data quality: per-feature null, type-mismatch, out-of-range and unseen-category rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from driftline.detectors.columns import FeatureColumns, FeatureKind
from driftline.detectors.reference import CategoricalProfile, FeatureReference, ModelProfile

QualityMetric = Literal[
    "null_rate", "type_mismatch_rate", "out_of_range_rate", "unseen_category_rate"
]

# One flag byte per event and feature.
_MISSING = 1
_MISMATCH = 2
_CHECKED = 4  # a usable value compared with the reference
_OUTSIDE = 8  # ... and found out of range / in a category the reference does not have
_BITS = (_MISSING, _MISMATCH, _CHECKED, _OUTSIDE)
# Which of _BITS each of the 16 flag values sets: a histogram of flag values times this matrix
# counts every bit.
_VALUE_BITS = np.array([[int(v & b != 0) for b in _BITS] for v in range(16)], dtype=np.int64)


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

    The reference is a :class:`~detectors.reference.FeatureReference`: ``shared_reference``,
    the one a :class:`~detectors.data_drift.DataDriftMonitor` of the same model tests against
    (so the model holds one reference, filled once), or else one of the monitor's own, made
    from ``profile`` or from the first ``reference_size`` events. Until it is there, only null
    and type-mismatch rates are measured. Features seen that are not in the reference are
    counted in :attr:`unexpected_features`, not measured. Thresholds are not applied here: the
    caller runs the measures through its alert state machines.

    The window is one flag byte per feature and event in a ring allocated once, with running
    counts of each flag: ``window_size`` bytes per feature, plus the reference.

    Parameters
    ----------
    window_size
        Events in the rolling window.
    every
        Cadence of the measures, in events.
    profile
        Reference profile; None to use ``shared_reference`` or the first ``reference_size``
        events.
    reference_size
        Events in a first-N reference of the monitor's own.
    range_margin
        Widening of the reference range, as a fraction of its width.
    min_window
        Measures start once the window holds ``min(min_window, window_size)`` events.
    shared_reference
        A reference shared with other monitors (not with ``profile``). Feed every monitor
        sharing it the same events.

    Examples
    --------
    >>> from driftline.detectors.columns import columnarize
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
        shared_reference: FeatureReference | None = None,
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
        if profile is not None and shared_reference is not None:
            raise ValueError("shared_reference and profile cannot both be given")
        self.window_size = window_size
        self.every = every
        self.profile = profile
        self.reference_size = reference_size
        self.range_margin = range_margin
        self.min_window = min_window
        self.shared_reference = shared_reference

        self._n_seen = 0
        self._reference = (
            shared_reference
            if shared_reference is not None
            else FeatureReference(reference_size, profile=profile)
        )
        self._in_use = False  # range and category checks against the reference
        self._tracked: dict[str, FeatureKind] = {}
        # The window: a ring of flags per tracked feature, event t in column t % window_size.
        self._flags = np.zeros((0, window_size), dtype=np.uint8)
        self._totals = np.zeros((0, len(_BITS)), dtype=np.int64)  # flags set in the window
        self._filled = np.zeros(0, dtype=np.int64)  # events since the feature is tracked
        self._written = 0
        # Per tracked feature, once the reference is in use: its rates and range.
        self._reference_rates = np.zeros((0, 3))  # null, type mismatch, unseen category
        self._bounds = np.zeros((0, 2))  # range of numeric values that are not out of range
        self._other_codes = np.zeros(0, dtype=np.int64)  # code of unseen categories
        self._categories: dict[str, CategoricalProfile] = {}
        self._unexpected: dict[str, int] = {}
        if self._reference.ready:
            self._use_reference()

    @property
    def reference_profile(self) -> ModelProfile | None:
        """The reference in use (None while a first-N reference fills)."""
        return self._reference.to_profile() if self._in_use else None

    @property
    def feature_reference(self) -> FeatureReference:
        """The reference (filling, or in use)."""
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

    @property
    def nbytes(self) -> int:
        """Bytes of the numpy arrays held: the window and the reference (a shared reference
        counts in every monitor that uses it)."""
        own = (
            self._flags,
            self._totals,
            self._filled,
            self._reference_rates,
            self._bounds,
            self._other_codes,
        )
        return sum(a.nbytes for a in own) + self._reference.nbytes

    def set_reference(self, profile: ModelProfile | FeatureReference) -> None:
        """Use ``profile`` (or a ready reference) from the next event on, e.g. a profile made
        elsewhere. Windows keep their null and mismatch history; range and category checks
        start with the next event."""
        if isinstance(profile, FeatureReference):
            if not profile.ready:
                raise ValueError("set_reference needs a complete reference")
            self._reference = profile
        else:
            self._reference = FeatureReference(self.reference_size, profile=profile)
        self._use_reference()

    def update(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], timestamps_ms: np.ndarray
    ) -> list[QualityMeasure]:
        """Add a batch of events; return the measures of every cadence point in it, ordered by
        ``index`` then feature. ``kinds`` gives the features before there is a reference
        (after, the reference's features are measured and the others counted as unexpected)."""
        n = columns.n
        if np.shape(timestamps_ms) != (n,):
            raise ValueError(f"timestamps_ms must have one entry per row ({n})")
        # Rows before ``split`` are reference events: their values are not checked against it.
        split = 0 if self._in_use else self._reference.observe(columns, kinds, self._n_seen)
        measures = []
        if split:
            head = columns.slice(0, split) if split < n else columns
            measures = self._process(head, kinds, 0, checked=False)
        if not self._in_use and self._reference.ready:
            self._use_reference()
        if split < n:
            rest = columns.slice(split, n) if split else columns
            measures.extend(self._process(rest, kinds, split, checked=True))
        return measures

    def _use_reference(self) -> None:
        """Measure the reference's features from now on, keeping the windows of those
        already tracked."""
        reference = self._reference
        tracked = reference.kinds()
        k = len(tracked)
        flags = np.zeros((k, self.window_size), dtype=np.uint8)
        totals = np.zeros((k, len(_BITS)), dtype=np.int64)
        filled = np.zeros(k, dtype=np.int64)
        before = {name: i for i, name in enumerate(self._tracked)}
        for i, name in enumerate(tracked):
            j = before.get(name)
            if j is not None:
                flags[i], totals[i], filled[i] = self._flags[j], self._totals[j], self._filled[j]
        self._tracked, self._flags, self._totals, self._filled = tracked, flags, totals, filled
        numeric = reference.numeric
        row_of = {name: i for i, name in enumerate(numeric.names)}
        self._categories = reference.categorical
        self._reference_rates = np.zeros((k, 3))
        self._bounds = np.tile([np.inf, -np.inf], (k, 1))
        self._other_codes = np.full(k, -2, dtype=np.int64)
        for i, (name, kind) in enumerate(tracked.items()):
            if kind == "numeric":
                r = row_of[name]
                n_rows = int(numeric.n_rows[r])
                self._reference_rates[i, :2] = [
                    _rate(int(numeric.n_missing[r]), n_rows),
                    _rate(int(numeric.n_type_mismatch[r]), n_rows),
                ]
                if numeric.count[r] > 0:
                    low, high = float(numeric.stats[r, 0]), float(numeric.stats[r, 1])
                    margin = self.range_margin * (high - low)
                    self._bounds[i] = (low - margin, high + margin)
            else:
                category = self._categories[name]
                self._other_codes[i] = len(category.categories)
                unseen = category.other_count / category.count if category.count else 0.0
                self._reference_rates[i] = [
                    category.null_rate,
                    category.type_mismatch_rate,
                    unseen,
                ]
        self._in_use = True

    def _track(self, kinds: Mapping[str, FeatureKind]) -> None:
        """Start tracking features not tracked yet (all of a batch's at once)."""
        new = {name: kind for name, kind in kinds.items() if name not in self._tracked}
        if not new:
            return
        k = len(new)
        self._tracked.update(new)
        self._flags = np.concatenate([self._flags, np.zeros((k, self.window_size), np.uint8)])
        self._totals = np.concatenate([self._totals, np.zeros((k, len(_BITS)), np.int64)])
        self._filled = np.append(self._filled, np.zeros(k, self._filled.dtype))

    def _process(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], offset: int, checked: bool
    ) -> list[QualityMeasure]:
        if not self._in_use:
            self._track(kinds)
        else:
            for name in columns.kinds():
                if name not in self._tracked:
                    carried = int(np.count_nonzero(~columns.missing[name]))
                    if carried:
                        self._unexpected[name] = self._unexpected.get(name, 0) + carried
        flags = self._flag_block(columns, checked)
        lag = self._n_seen % self.every
        measures: list[QualityMeasure] = []
        done = 0
        for j in range(self.every - 1 - lag, columns.n, self.every):
            self._push(flags[:, done : j + 1])
            done = j + 1
            measures.extend(self._measures(offset + j, checked))
        self._push(flags[:, done:])
        self._n_seen += columns.n
        return measures

    def _flag_block(self, columns: FeatureColumns, checked: bool) -> np.ndarray:
        """The flags of every tracked feature (row) and event (column)."""
        n = columns.n
        absent = np.ones(n, dtype=bool)  # absent, or held with another kind: missing
        no = np.zeros(n, dtype=bool)
        none = np.full(n, np.nan)
        missing_rows, mismatch_rows, value_rows = [], [], []
        codes: dict[int, np.ndarray] = {}
        numeric, categorical = columns.numeric, columns.categorical
        for i, (name, kind) in enumerate(self._tracked.items()):
            held = (numeric if kind == "numeric" else categorical).get(name)
            if held is None:
                missing_rows.append(absent)
                mismatch_rows.append(no)
                value_rows.append(none)
                continue
            missing_rows.append(columns.missing[name])
            mismatch_rows.append(columns.type_mismatch[name])
            if kind == "numeric" or not checked:
                value_rows.append(held if kind == "numeric" else none)
            else:
                value_rows.append(none)
                codes[i] = columns.encoded(name, self._categories[name])
        k = len(missing_rows)
        missing = np.stack(missing_rows) if k else np.ones((0, n), dtype=bool)
        mismatch = np.stack(mismatch_rows) if k else np.zeros((0, n), dtype=bool)
        flags = missing.view(np.uint8) | (mismatch.view(np.uint8) << 1)
        if checked:
            values = np.stack(value_rows) if k else np.full((0, n), np.nan)
            usable = ~np.isnan(values)
            # A feature without usable reference values has bounds (+inf, -inf): all outside.
            low, high = self._bounds[:, :1], self._bounds[:, 1:]
            outside = usable & ((values < low) | (values > high))
            for i, row in codes.items():
                usable[i] = row >= 0
                outside[i] = row == self._other_codes[i]
            flags |= (usable.view(np.uint8) << 2) | (outside.view(np.uint8) << 3)
        return flags

    def _push(self, flags: np.ndarray) -> None:
        """Write events into the window ring, keeping the flag counts of the window."""
        b = flags.shape[1]
        if b == 0:
            return
        size = self.window_size
        if b >= size:
            kept = flags[:, b - size :]
            self._totals = _bit_counts(kept)
            self._flags[:, (self._written + b - size + np.arange(size)) % size] = kept
        else:
            columns = (self._written + np.arange(b)) % size
            leaving = self._flags[:, columns]
            self._totals += _bit_counts(flags) - _bit_counts(leaving)
            self._flags[:, columns] = flags
        self._written += b
        self._filled += b

    def _measures(self, index: int, checked: bool) -> list[QualityMeasure]:
        need = min(self.min_window, self.window_size)
        sizes = np.minimum(self._filled, self.window_size).tolist()
        totals = self._totals.tolist()
        rates = self._reference_rates.tolist() if checked else None
        out: list[QualityMeasure] = []
        for i, (name, kind) in enumerate(self._tracked.items()):
            size = sizes[i]
            if size < need:
                continue
            missing, mismatch, n_checked, outside = totals[i]
            null_ref, mismatch_ref, unseen_ref = (None, None, None) if rates is None else rates[i]
            out.append(QualityMeasure(name, "null_rate", missing / size, size, null_ref, index))
            out.append(
                QualityMeasure(
                    name, "type_mismatch_rate", mismatch / size, size, mismatch_ref, index
                )
            )
            if rates is None or n_checked == 0:
                continue
            metric: QualityMetric = "out_of_range_rate"
            reference_value: float | None = 0.0
            if kind != "numeric":
                metric, reference_value = "unseen_category_rate", unseen_ref
            out.append(
                QualityMeasure(name, metric, outside / n_checked, n_checked, reference_value, index)
            )
        return out


def _bit_counts(flags: np.ndarray) -> np.ndarray:
    """Per feature (row), how many events (columns) have each flag of :data:`_BITS` set."""
    k = flags.shape[0]
    keys = flags + (np.arange(k, dtype=np.int64) * 16)[:, None]  # (feature, flag value)
    histogram = np.bincount(keys.ravel(), minlength=16 * k).reshape(k, 16)
    return np.asarray(histogram @ _VALUE_BITS)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0
