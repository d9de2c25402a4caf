"""Data drift: does the recent distribution of each feature still match its reference?

One :class:`DataDriftMonitor` per model watches every feature; a second one, fed a single
``"score"`` or ``"prediction"`` column, watches prediction drift. The first one's reference is the
model's reference of its features, which data quality reads too
(:attr:`DataDriftMonitor.feature_reference`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from driftline.detectors.columns import FeatureColumns, FeatureKind, encode_categories, null_mask
from driftline.detectors.multivariate import CorrelationDrift, CorrelationTest, spearman_rows
from driftline.detectors.reference import (
    CategoricalProfile,
    FeatureReference,
    ModelProfile,
    as_float32,
    categorical_summary,
    summaries_of_sorted_rows,
)
from driftline.detectors.sketch import SketchCache, SketchCdf, sketch_ks_wasserstein_rows
from driftline.detectors.stats import (
    bin_counts_rows,
    bin_counts_sorted,
    chi_square_2samp,
    js_distance,
    js_distance_rows,
    neg_log10,
    psi,
    psi_rows,
    quantile_edges,
)

ReferenceMode = Literal["first_n", "profile", "sliding"]
WindowMode = Literal["count", "time"]
Correction = Literal["bonferroni", "holm", "benjamini_hochberg"]

MIN_VALUES = 30
"""A feature is tested only with at least this many usable values on both sides."""
_SUMMARY_TOP = 10
MIN_EXPECTED = 10.0
"""Chi-square cells: a reference category expected fewer times than this in the current window
is pooled with "other", a choice made from the reference alone so the test stays valid. Sparse
cells make the chi-square tail, where the thresholds live, too heavy: with 16 cells expected ~6
times each, p < 1e-4 happened 2.2x as often as it should (300,000 simulated windows); at 10 the
worst case measured is 1.3x (many cells expected ~11 times), typical cases 0.8-1.1x."""


T = TypeVar("T")

# A summary (evidence), or what makes it on first use.
Summary = dict[str, Any] | Callable[[], dict[str, Any]]

_SKETCHES = SketchCache(max_bytes=16 << 20)
"""The KS tables of the frozen references tested most recently, shared by every monitor of the
process: a table is about ``features * (sample_size + 1) * 40`` bytes (410 KB at 20 features),
as much as the rest of a model's state, so only the busy references keep one."""


def _made(summary: Summary) -> dict[str, Any]:
    return summary() if callable(summary) else summary


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """The drift test of one feature at one evaluation.

    ``test`` is ``"ks"`` (numeric) or ``"chi_square"`` (categorical, 2 x k homogeneity test of
    reference vs current counts). ``threshold`` is the p-value threshold after the
    multiple-testing correction and ``drifted`` is ``p_value < threshold``. ``score`` is
    ``-log10(p_value)`` (capped at 300), comparable across both tests because both are
    calibrated p-values. ``psi`` and ``js_distance`` (base 2) are over the reference bins or
    categories; ``wasserstein`` is in the feature's units and ``wasserstein_normalized`` in
    reference standard deviations (None for categorical or a constant reference). These
    distances are evidence: a numeric feature's are computed on first use.
    ``unseen_share`` (categorical) is the share of current values in categories the reference
    has no count for. ``n_reference``/``n_current`` count the usable values tested.
    """

    feature: str
    kind: FeatureKind
    test: str
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    score: float
    unseen_share: float | None
    # The distances, and the reference's and the current window's summaries, or what makes
    # them: they are evidence, read only when an alert changes state, so most evaluations never
    # build them.
    distances: Summary = field(compare=False)
    summarize_reference: Summary = field(compare=False)
    summarize: Summary = field(compare=False)
    n_reference: int = 0
    n_current: int = 0

    @property
    def psi(self) -> float:
        return float(_made(self.distances)["psi"])

    @property
    def js_distance(self) -> float:
        return float(_made(self.distances)["js_distance"])

    @property
    def wasserstein(self) -> float | None:
        w: float | None = _made(self.distances)["wasserstein"]
        return w

    @property
    def wasserstein_normalized(self) -> float | None:
        w: float | None = _made(self.distances)["wasserstein_normalized"]
        return w

    @property
    def reference_summary(self) -> dict[str, Any]:
        return _made(self.summarize_reference)

    @property
    def current_summary(self) -> dict[str, Any]:
        return _made(self.summarize)


@dataclass(frozen=True, slots=True)
class DriftEvaluation:
    """One evaluation of every testable feature.

    ``index`` is the row of the batch given to :meth:`DataDriftMonitor.update` whose arrival
    completed the cadence; the window is the window as it stood after that row. ``n_current``
    counts the events in the current window, ``first_ts_ms``/``last_ts_ms`` are its smallest and
    largest event times and ``reference_size`` counts the reference events. ``features`` are
    ranked by score, most drifted first. ``n_seen`` is the event count of the monitor at ``index``.
    ``windows`` holds each tested feature's current window as it stood at ``index``: numeric
    values (NaN = no value) or category codes (-1 = no value), for tests against other samples
    (a firing alert's drifted state); views, valid until the next ``update``.
    """

    index: int
    n_current: int
    first_ts_ms: int
    last_ts_ms: int
    reference_size: int
    features: tuple[FeatureDrift, ...]
    n_seen: int = 0
    windows: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    joint: CorrelationTest | None = None
    """The multivariate test of the same window (``joint_alpha``), when it ran."""

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the drifted features, most drifted first."""
        return tuple(f.feature for f in self.features if f.drifted)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class _NumericRefs:
    """The reference side of the numeric tests, one row per numeric feature of the monitor:
    views of the :class:`~detectors.reference.FeatureReference`, or of a sliding window."""

    testable: np.ndarray  # enough reference values to test
    sample: np.ndarray  # sorted, padded with +inf or NaN
    sample_sizes: np.ndarray
    counts: np.ndarray  # reference sizes, for the KS p-value
    edges: np.ndarray  # bin edges, padded by repeating +inf (empty bins)
    proportions: np.ndarray  # bin proportions, padded with 0
    n_bins: np.ndarray
    std: np.ndarray
    summaries: tuple[Summary, ...]


@dataclass(frozen=True, slots=True)
class _CategoricalRef:
    categories: tuple[str, ...]  # name of each code; codes past the end are never used
    counts: np.ndarray  # by code, "other" last
    listed: np.ndarray  # codes shown in summaries, most frequent in the reference first
    summary: Summary

    def summarize(self, counts: np.ndarray, n_rows: int) -> dict[str, Any]:
        head = counts[self.listed]
        return categorical_summary(
            [self.categories[c] for c in self.listed.tolist()],
            np.append(head, counts.sum() - head.sum()),
            n_rows,
        )


class _Vocabulary:
    """First-come category codes for the sliding reference, at most ``size`` categories."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._names: list[str] = []
        self._sorted = np.empty(0, dtype=np.str_)
        self._codes = np.empty(0, dtype=np.int32)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    def encode(self, values: np.ndarray) -> np.ndarray:
        if len(self._names) < self.size:
            present = values[~null_mask(values)]
            if present.shape[0]:
                text = present.astype(np.str_)
                names, first = np.unique(text, return_index=True)
                known = set(self._names)
                new = [str(names[i]) for i in np.argsort(first) if str(names[i]) not in known]
                if new:
                    self._names.extend(new[: self.size - len(self._names)])
                    ordered = np.array(self._names, dtype=np.str_)
                    order = np.argsort(ordered, kind="stable")
                    self._sorted, self._codes = ordered[order], order.astype(np.int32)
        return encode_categories(values, self._sorted, self._codes, self.size)


def _code_dtype(largest: int) -> type[np.signedinteger[Any]]:
    """The smallest signed integer type holding codes ``-1 ... largest``."""
    if largest <= np.iinfo(np.int8).max:
        return np.int8
    if largest <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


class _Ring:
    """The last ``capacity`` events after the reference: numeric values (float32), category
    codes and event times, allocated once. Event ``t`` (counted from the first event after the
    reference) sits in column ``t % capacity``."""

    def __init__(
        self,
        n_numeric: int,
        n_categorical: int,
        capacity: int,
        code_dtype: type[np.signedinteger[Any]],
    ) -> None:
        self.capacity = capacity
        self.numeric = np.full((n_numeric, capacity), np.nan, dtype=np.float32)
        self.codes = np.full((n_categorical, capacity), -1, dtype=code_dtype)
        self.ts = np.zeros(capacity, dtype=np.int64)
        self.end = 0  # events written

    @property
    def nbytes(self) -> int:
        return int(self.numeric.nbytes + self.codes.nbytes + self.ts.nbytes)

    def append(self, numeric: np.ndarray, codes: np.ndarray, ts: np.ndarray) -> None:
        b = ts.shape[0]
        kept = min(b, self.capacity)  # a longer block overwrites its own head: skip it
        at = (self.end + b - kept) % self.capacity
        first = min(kept, self.capacity - at)
        for ring, block in ((self.numeric, numeric), (self.codes, codes)):
            ring[:, at : at + first] = block[:, b - kept : b - kept + first]
            ring[:, : kept - first] = block[:, b - kept + first :]
        self.ts[at : at + first] = ts[b - kept : b - kept + first]
        self.ts[: kept - first] = ts[b - kept + first :]
        self.end += b

    def columns(self, start: int, stop: int) -> np.ndarray:
        """Columns of events ``start ... stop - 1`` (among the last ``capacity``)."""
        return np.arange(start, stop) % self.capacity


class DataDriftMonitor:
    """Per-feature two-sample drift tests of a current window against a reference.

    Numeric features get a Kolmogorov-Smirnov test (p-value) plus PSI, Jensen-Shannon distance
    over the reference quantile bins and the Wasserstein distance; categorical features get a
    chi-square homogeneity test of category counts (reference categories, plus one cell for
    every other or unseen category) plus PSI, JS distance and the unseen share. Statistics are
    computed on a cadence, every ``every`` events, on the window as it stood at that event.

    Parameters
    ----------
    reference
        ``"first_n"``: the first ``reference_size`` events become the reference, then it is
        frozen. ``"profile"``: ``profile`` is the reference (e.g. from training data).
        ``"sliding"``: the reference is the window just before the current one (the
        ``window_size`` events, or ``window_duration_ms``, preceding it), so the monitor flags
        *changes* rather than distance from a baseline; slow drift goes unseen. Categories are
        then coded first-come (at most ``top_k``, later ones count as "other").
    reference_size
        Events in a ``"first_n"`` reference.
    profile
        The reference of ``"profile"`` mode (only then).
    window
        ``"count"``: the last ``window_size`` events. ``"time"``: events newer than
        ``window_duration_ms`` before the newest event time seen, at most ``window_size`` of
        them (memory bound).
    window_size, window_duration_ms
        See ``window``.
    every
        Evaluation cadence in events, counted across batches (from the moment the reference is
        ready).
    alpha
        Family-wise false-alarm probability of one evaluation, across all features tested.
    correction
        How ``alpha`` is split over the features: ``"bonferroni"`` (``alpha / m`` each),
        ``"holm"`` (step-down, same guarantee, more power) or ``"benjamini_hochberg"``
        (controls the false discovery rate, not the family-wise error).
    n_bins, top_k, sample_size
        Shape of the reference (see :class:`~detectors.reference.FeatureReference`): quantile
        bins and sketch points per numeric feature, categories kept per categorical feature;
        ``n_bins`` also bins the sliding reference.
    min_window
        An evaluation needs at least ``min(min_window, window_size)`` events in the current
        window (and in a sliding reference); a feature needs :data:`MIN_VALUES` usable values.
    joint_alpha
        With a value, each evaluation also tests the numeric features jointly: a change in the
        rank correlation of any pair (:class:`~detectors.multivariate.CorrelationDrift`), at
        most ``joint_alpha`` false alarms per evaluation of a stationary stream. None: no joint
        test.
    joint_min_samples
        Fewest complete rows (every numeric feature present) in the window and the reference
        for the joint test to run.

    Notes
    -----
    What the defaults guarantee, measured on a seeded model with 20 features (15 numeric of
    varied shapes, ties included, and 5 categorical with 3-8 categories; see
    ``tests/unit/test_data_drift.py``):

    * Calibration. KS and chi-square are two-sample tests, so a first-N reference, itself a
      random sample, is accounted for. Per-feature rejection rates at p < 1e-2 and 1e-3 are
      0.9-1.1 times nominal over 200 independent references (ties make KS conservative: 0.2x
      for a Poisson(3) feature; chi-square has sparse cells pooled, see :data:`MIN_EXPECTED`);
      with one frozen reference they vary between 0.7x and 1.4x. PSI, JS and Wasserstein are
      evidence and ranking only: as thresholds they would need calibrating per feature and
      reference size.
    * One evaluation. Bonferroni (or Holm) keeps the chance of any drifted feature below
      ``alpha``: at 1e-5 and ``every = 250``, ~0.04 drifted evaluations per million stationary
      events.
    * Consecutive evaluations. Windows overlap by 75% and share the reference, so a feature
      drifted by chance is drifted again at the next evaluation with probability ~0.15-0.3
      (lower the smaller the level). Two in a row, what ``ModelMonitor`` alerts on, is then
      expected ~0.005 times per million stationary events at ``alpha = 1e-5`` (~0.05 at 1e-4).
      Observed: no such pair in 6.2 million events at 1e-4 (3 single drifted evaluations in
      24,700) nor in 2 million at 1e-5.
    * Power. A 0.5 standard deviation mean shift of one numeric feature, or one category's
      share moving 0.15 -> 0.30, gives two consecutive drifted evaluations 500-1,000 events
      after the change, with no other feature flagged (100 seeded runs at 1e-4, 30 at 1e-5);
      a 0.3 standard deviation shift takes 750-1,250. Going from 1e-4 to 1e-5 cost at most one
      cadence step.

    The reference is compact (:class:`~detectors.reference.FeatureReference`); against the
    full 5,000-event reference (``scipy.stats`` on all of it, 1,200 seeded feature windows of
    ``tests/unit/test_compact_reference.py``):

    * KS: numeric features are tested against a sorted float32 sketch of ``sample_size``
      order statistics, its ECDF exact at each point and interpolated in between, with the
      full reference size in the p-value. ``|D - D_full| <= 1 / sample_size`` always
      (observed max 0.00106 at 512, mean 0.00026, unbiased); p-values within 0.15 decades of
      scipy's for p >= 1e-12; the decision ``p < level`` at 1e-2, 1e-3 and 5e-7 differed in
      1, 0 and 4 of 1,200 cases, each with the full-sample p-value within a factor 1.3 of
      the level. A reference of at most ``sample_size`` values is kept whole: exact.
    * Wasserstein: within 0.004 reference standard deviations of the full-sample distance.
    * PSI, JS distance, chi-square, summaries, ``n_reference``: exact (bins, counts and
      statistics are made from the full reference before it is condensed).
    * Values are held as float32 (7 significant digits), in the reference and the windows
      alike, so a value on a bin edge or tied with a reference value compares the same way on
      both sides.

    Memory. The bytes of numpy arrays held (:attr:`nbytes`), with ``Fn`` numeric and ``Fc``
    categorical features, ``W = window_size``, ``S = sample_size``, ``B = n_bins`` and
    ``R = reference_size``; nothing else grows with events:

    * window, a ring allocated once: ``W * (4 Fn + Fc + 8)`` (float32 values, one-byte
      category codes while features keep at most 127 categories, int64 event times); twice
      that for a ``"sliding"`` reference, which keeps its raw window and no other reference;
    * reference, once ready: ``Fn * (4 S + 12 B + 140) + 8 Fn² + sum(D(k))``: ``8 Fn²`` the
      rank-correlation matrix of the joint test (with two or more numeric features), the sum
      over the categorical features, ``D(k)`` the size of a dict of ``k + 1`` keys (each of
      ``k`` categories and no value, to their codes): 352 bytes up to 5 categories, 632 up to
      10, 1,168 up to 21, 2,264 up to 42, 4,688 up to 85;
    * while a first-N reference fills: ``4 R Fn`` (the fill array, allocated once), instead;
    * not per model: the KS tables of the references tested most recently, at most 16 MiB per
      process (``_SKETCHES``).

    At the defaults and 20 features (15 numeric, 5 categorical of 3 to 8 categories):
    73,000 + 1,800 + 36,940 = 111,740 bytes, 300,000 while filling. A model's prediction side adds
    prediction drift on a numeric score, ``12 W + 4 S + 12 B + 140`` (14,308), and data quality
    reading this reference, ``(Fn + Fc) * (Wq + 88)`` with ``Wq`` its window (11,760): 137,808
    bytes in all, ``4 R (Fn + 1) + (Fn + Fc) * (Wq + 40)`` = 330,800 while the references fill.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> monitor = DataDriftMonitor(reference_size=2000, window_size=500, every=250)
    >>> def feed(mean, n=1000):
    ...     x = rng.normal(mean, 1.0, n)
    ...     no = np.zeros(n, dtype=bool)
    ...     cols = FeatureColumns(n, {"x": x}, {}, {"x": no}, {"x": no})
    ...     return monitor.update(cols, {"x": "numeric"}, np.arange(n, dtype=np.int64))
    >>> [[e.drifted for e in feed(0.0)] for _ in range(3)]  # 2000 reference events, then quiet
    [[], [], [(), (), (), ()]]
    >>> [(e.index, e.drifted) for e in feed(1.0)]  # the mean moves by one standard deviation
    [(249, ('x',)), (499, ('x',)), (749, ('x',)), (999, ('x',))]
    >>> monitor.nbytes  # window 500 * (4 + 8), reference 4 * 512 + 12 * 10 + 140
    8308
    """

    def __init__(
        self,
        reference: ReferenceMode = "first_n",
        reference_size: int = 5000,
        profile: ModelProfile | None = None,
        window: WindowMode = "count",
        window_size: int = 1000,
        *,
        window_duration_ms: int | None = None,
        every: int = 250,
        alpha: float = 1e-5,
        correction: Correction = "bonferroni",
        n_bins: int = 10,
        min_window: int = 200,
        top_k: int = 50,
        sample_size: int = 512,
        joint_alpha: float | None = None,
        joint_min_samples: int = 200,
    ) -> None:
        if reference not in ("first_n", "profile", "sliding"):
            raise ValueError(f"reference must be first_n, profile or sliding, not {reference!r}")
        if reference_size < 1:
            raise ValueError("reference_size must be >= 1")
        if (profile is None) != (reference != "profile"):
            raise ValueError("profile must be given exactly when reference is 'profile'")
        if window not in ("count", "time"):
            raise ValueError(f"window must be count or time, not {window!r}")
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        if window == "time" and (window_duration_ms is None or window_duration_ms <= 0):
            raise ValueError("window_duration_ms must be > 0 when window is 'time'")
        if every < 1:
            raise ValueError("every must be >= 1")
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if correction not in ("bonferroni", "holm", "benjamini_hochberg"):
            raise ValueError(
                f"correction must be bonferroni, holm or benjamini_hochberg, not {correction!r}"
            )
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        if min_window < 1:
            raise ValueError("min_window must be >= 1")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if sample_size < 10:
            raise ValueError("sample_size must be >= 10")
        if joint_alpha is not None and not 0.0 < joint_alpha < 1.0:
            raise ValueError("joint_alpha must be in (0, 1) or None")
        if joint_min_samples < 10:
            raise ValueError("joint_min_samples must be >= 10")
        self.reference = reference
        self.reference_size = reference_size
        self.profile = profile
        self.window = window
        self.window_size = window_size
        self.window_duration_ms = window_duration_ms
        self.every = every
        self.alpha = alpha
        self.correction = correction
        self.n_bins = n_bins
        self.min_window = min_window
        self.top_k = top_k
        self.sample_size = sample_size
        self.joint_alpha = joint_alpha
        self.joint_min_samples = joint_min_samples

        self._n_seen = 0
        self._since_ready = 0
        self._n_evaluations = 0
        self._newest = np.iinfo(np.int64).min  # newest event time after the reference
        self._sliding_kinds: dict[str, FeatureKind] = {}
        self._reference: FeatureReference | None = (
            None
            if reference == "sliding"
            else FeatureReference(
                reference_size,
                profile=profile,
                n_bins=n_bins,
                top_k=top_k,
                sample_size=sample_size,
            )
        )
        self._numeric_names: tuple[str, ...] = ()
        self._categorical_names: tuple[str, ...] = ()
        self._encoders: list[CategoricalProfile | _Vocabulary] = []
        self._frozen: tuple[_NumericRefs, list[_CategoricalRef | None]] | None = None
        self._ring: _Ring | None = None
        # The joint test and the rows of the numeric block it reads.
        self._joint: CorrelationDrift | None = None
        self._joint_rows = np.empty(0, dtype=np.intp)
        if self._reference is not None and self._reference.ready:
            self._install_reference(self._reference)

    # -- state -------------------------------------------------------------------------------

    @property
    def reference_ready(self) -> bool:
        """Whether evaluations can happen (a sliding reference is ready once features are known;
        its windows fill as events come)."""
        return self._ring is not None or (self._reference is not None and self._reference.ready)

    @property
    def feature_reference(self) -> FeatureReference | None:
        """The reference tested against (None in sliding mode). Give it to the model's
        :class:`~detectors.quality.QualityMonitor` as ``shared_reference``: both then use one
        reference, filled once."""
        return self._reference

    @property
    def reference_profile(self) -> ModelProfile | None:
        """The frozen reference as a profile (None while a first-N reference fills, and in
        sliding mode); a ``"profile"`` monitor given it behaves exactly like this one."""
        return None if self._reference is None else self._reference.to_profile()

    @property
    def n_seen(self) -> int:
        """Events seen, reference events included."""
        return self._n_seen

    @property
    def n_evaluations(self) -> int:
        """Evaluations made so far."""
        return self._n_evaluations

    @property
    def features(self) -> tuple[str, ...]:
        """Features watched (empty until the reference is ready), numeric then categorical."""
        return self._numeric_names + self._categorical_names

    @property
    def nbytes(self) -> int:
        """Bytes of the numpy arrays held: the window and the reference (see Notes)."""
        ring = 0 if self._ring is None else self._ring.nbytes
        return ring + (0 if self._reference is None else self._reference.nbytes)

    def window_values(self, feature: str) -> np.ndarray:
        """The current window of ``feature`` after the last event: numeric values (float32,
        NaN = no value) or category codes (-1 = no value), oldest first."""
        ring = self._ring
        if ring is None or ring.end == 0:
            return np.empty(0)
        columns = self._current_columns(ring, ring.end, self._newest)
        if feature in self._numeric_names:
            return np.asarray(ring.numeric[self._numeric_names.index(feature), columns])
        return np.asarray(ring.codes[self._categorical_names.index(feature), columns])

    # -- update ------------------------------------------------------------------------------

    def update(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], timestamps_ms: np.ndarray
    ) -> list[DriftEvaluation]:
        """Add a batch of events (in arrival order); return the evaluations it completed.

        ``kinds`` fixes the features of a first-N or sliding reference (the kind first seen for
        a name wins; features that appear after the reference is made are ignored here, data
        quality counts them). A feature of the reference missing from ``columns``, or held with
        another kind, counts as missing in every row.
        """
        n = columns.n
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        if ts.shape != (n,):
            raise ValueError(f"timestamps_ms must have one entry per row ({n}), not {ts.shape}")
        offset = 0
        reference = self._reference
        if reference is not None:
            offset = reference.observe(columns, kinds, self._n_seen)
            if self._ring is None and reference.ready:
                self._install_reference(reference)
        elif self._ring is None:
            for name, kind in kinds.items():
                self._sliding_kinds.setdefault(name, kind)
            if self._sliding_kinds:
                self._install_sliding(dict(sorted(self._sliding_kinds.items())))
        ring = self._ring
        if ring is None or offset == n:
            self._n_seen += n
            return []
        self._n_seen += offset
        rest = columns.slice(offset, n) if offset else columns
        numeric, codes, ts = self._numeric_block(rest), self._code_block(rest), ts[offset:]
        b = n - offset
        newest = np.maximum.accumulate(np.maximum(ts, self._newest))
        lag = self._since_ready % self.every
        evaluations = []
        done = 0
        # The ring holds no more than the windows: write up to each cadence point, evaluate.
        for j in range(self.every - 1 - lag, b, self.every):
            ring.append(numeric[:, done : j + 1], codes[:, done : j + 1], ts[done : j + 1])
            done = j + 1
            evaluation = self._evaluate(ring, offset + j, self._n_seen + j + 1, int(newest[j]))
            if evaluation is not None:
                evaluations.append(evaluation)
        if done < b:
            ring.append(numeric[:, done:], codes[:, done:], ts[done:])
        if b:
            self._newest = int(newest[-1])
        self._since_ready += b
        self._n_seen += b
        self._n_evaluations += len(evaluations)
        return evaluations

    def _install_reference(self, reference: FeatureReference) -> None:
        self._frozen = None
        categorical = reference.categorical
        self._numeric_names = reference.numeric.names
        self._categorical_names = tuple(categorical)
        self._encoders = list(categorical.values())
        largest = max((len(c.categories) for c in categorical.values()), default=0)
        self._ring = _Ring(
            len(self._numeric_names),
            len(self._categorical_names),
            self.window_size,
            _code_dtype(largest),
        )
        correlation = reference.correlation
        if self.joint_alpha is None or correlation is None:
            return
        correlation = correlation.restricted(self._numeric_names)
        if correlation is None or correlation.n < self.joint_min_samples:
            return
        self._install_joint(correlation.features).fit_matrix(correlation.matrix, correlation.n)

    def _install_joint(self, features: tuple[str, ...]) -> CorrelationDrift:
        assert self.joint_alpha is not None
        self._joint = CorrelationDrift(list(features), self.joint_alpha, self.joint_min_samples)
        self._joint_rows = np.array([self._numeric_names.index(f) for f in features], np.intp)
        return self._joint

    def _install_sliding(self, kinds: Mapping[str, FeatureKind]) -> None:
        self._numeric_names = tuple(k for k, v in kinds.items() if v == "numeric")
        self._categorical_names = tuple(k for k, v in kinds.items() if v != "numeric")
        self._encoders = [_Vocabulary(self.top_k) for _ in self._categorical_names]
        # The current window and the one before it, the reference.
        self._ring = _Ring(
            len(self._numeric_names),
            len(self._categorical_names),
            2 * self.window_size,
            _code_dtype(self.top_k),
        )
        if self.joint_alpha is not None and len(self._numeric_names) >= 2:
            self._install_joint(self._numeric_names)

    def _numeric_block(self, columns: FeatureColumns) -> np.ndarray:
        block = np.full((len(self._numeric_names), columns.n), np.nan)
        for i, name in enumerate(self._numeric_names):
            values = columns.numeric.get(name)
            if values is not None:
                block[i] = values
        return as_float32(block)

    def _code_block(self, columns: FeatureColumns) -> np.ndarray:
        block = np.full((len(self._categorical_names), columns.n), -1, dtype=np.int32)
        for i, name in enumerate(self._categorical_names):
            if name in columns.categorical:
                block[i] = columns.encoded(name, self._encoders[i])
        return block

    # -- evaluation --------------------------------------------------------------------------

    def _current_columns(self, ring: _Ring, end: int, newest: int) -> np.ndarray:
        columns = ring.columns(max(0, end - self.window_size), end)
        if self.window == "count":
            return columns
        assert self.window_duration_ms is not None
        return np.asarray(columns[ring.ts[columns] > newest - self.window_duration_ms])

    def _sliding_columns(self, ring: _Ring, end: int, newest: int) -> np.ndarray:
        size = self.window_size
        if self.window == "count":
            return ring.columns(max(0, end - 2 * size), max(0, end - size))
        assert self.window_duration_ms is not None
        columns = ring.columns(max(0, end - 2 * size), end)
        ts = ring.ts[columns]
        duration = self.window_duration_ms
        chosen = columns[(ts <= newest - duration) & (ts > newest - 2 * duration)]
        return np.asarray(chosen[-size:])

    def _evaluate(
        self, ring: _Ring, index: int, n_seen: int, newest: int
    ) -> DriftEvaluation | None:
        need = min(self.min_window, self.window_size)
        columns = self._current_columns(ring, ring.end, newest)
        ts = ring.ts[columns]
        n_current = int(ts.shape[0])
        if n_current < need:
            return None
        reference_columns: np.ndarray | None = None  # a sliding reference's place in the ring
        if self._reference is None:
            reference_columns = self._sliding_columns(ring, ring.end, newest)
            reference_size = int(reference_columns.shape[0])
            if reference_size < need:
                return None
            numeric_refs, categorical_refs = self._sliding_refs(ring, reference_columns)
        else:
            reference_size = self._reference.n_rows
            if self._frozen is None:  # the reference no longer changes: built once
                self._frozen = self._frozen_refs(self._reference)
            numeric_refs, categorical_refs = self._frozen
        results: list[tuple[str, FeatureKind, str, float, float, dict[str, Any]]] = []
        windows: dict[str, np.ndarray] = {}
        joint = None
        if self._numeric_names:
            window = ring.numeric[:, columns]
            frozen = self._reference is not None
            results.extend(self._numeric_tests(numeric_refs, window, n_current, frozen))
            for i in np.flatnonzero(numeric_refs.testable).tolist():
                windows[self._numeric_names[i]] = window[i]
            joint = self._joint_test(ring, window, reference_columns)
        if self._categorical_names:
            codes = ring.codes[:, columns]
            for i, name in enumerate(self._categorical_names):
                cref = categorical_refs[i]
                if cref is None:
                    continue
                row = codes[i]
                windows[name] = row
                counts = np.bincount(row[row >= 0], minlength=cref.counts.shape[0])
                if counts.sum() < MIN_VALUES:
                    continue
                results.append(_categorical_test(name, cref, counts, n_current))
        if not results:
            return None
        p_values = np.array([r[4] for r in results])
        thresholds = _thresholds(p_values, self.alpha, self.correction)
        features = [
            FeatureDrift(
                feature=name,
                kind=kind,
                test=test,
                statistic=statistic,
                p_value=p,
                threshold=float(t),
                drifted=bool(p < t),
                score=neg_log10(p),
                **extra,
            )
            for (name, kind, test, statistic, p, extra), t in zip(results, thresholds, strict=True)
        ]
        return DriftEvaluation(
            index=index,
            n_current=n_current,
            first_ts_ms=int(ts.min()),
            last_ts_ms=int(ts.max()),
            reference_size=reference_size,
            features=_ranked(features),
            n_seen=n_seen,
            windows=windows,
            joint=joint,
        )

    def _joint_test(
        self, ring: _Ring, window: np.ndarray, reference_columns: np.ndarray | None
    ) -> CorrelationTest | None:
        joint = self._joint
        if joint is None:
            return None
        rows = self._joint_rows
        if reference_columns is not None:  # sliding: the reference moved since the last time
            matrix, n = spearman_rows(ring.numeric[np.ix_(rows, reference_columns)])
            if n < self.joint_min_samples:
                return None
            joint.fit_matrix(matrix, n)
        return joint.test_features(window[rows])

    def _frozen_refs(
        self, reference: FeatureReference
    ) -> tuple[_NumericRefs, list[_CategoricalRef | None]]:
        numeric = reference.numeric
        testable = numeric.count >= MIN_VALUES
        numeric_refs = _NumericRefs(
            testable=testable,
            sample=numeric.sample,
            sample_sizes=numeric.sample_sizes,
            counts=numeric.count,
            edges=numeric.edges,
            proportions=numeric.proportions,
            n_bins=numeric.n_bins,
            std=numeric.stats[:, 3],
            summaries=tuple(
                partial(numeric.summary, i) if ok else {} for i, ok in enumerate(testable.tolist())
            ),
        )
        categorical: list[_CategoricalRef | None] = []
        for profile in self._encoders:
            assert isinstance(profile, CategoricalProfile)
            categorical.append(
                _CategoricalRef(
                    profile.categories,
                    profile.code_counts,
                    np.arange(min(_SUMMARY_TOP, len(profile.categories))),
                    profile.summary,
                )
                if profile.count >= MIN_VALUES
                else None
            )
        return numeric_refs, categorical

    def _sliding_refs(
        self, ring: _Ring, columns: np.ndarray
    ) -> tuple[_NumericRefs, list[_CategoricalRef | None]]:
        n_rows = int(columns.shape[0])
        values = np.sort(ring.numeric[:, columns], axis=1).astype(np.float64)  # NaN last
        finite = np.count_nonzero(~np.isnan(values), axis=1)
        k = len(self._numeric_names)
        edges = np.full((k, self.n_bins + 1), np.inf)
        proportions = np.zeros((k, self.n_bins))
        n_bins = np.ones(k, dtype=np.int64)
        std = np.zeros(k)
        for i in range(k):
            if finite[i] < MIN_VALUES:
                continue
            sample = values[i, : finite[i]]
            row = np.concatenate([[-np.inf], quantile_edges(sample, self.n_bins), [np.inf]])
            edges[i, : row.shape[0]] = row
            n_bins[i] = row.shape[0] - 1
            proportions[i, : n_bins[i]] = bin_counts_sorted(sample, row) / finite[i]
            std[i] = sample.std()
        numeric_refs = _NumericRefs(
            testable=finite >= MIN_VALUES,
            sample=values,
            sample_sizes=finite,
            counts=finite,
            edges=edges,
            proportions=proportions,
            n_bins=n_bins,
            std=std,
            summaries=tuple(summaries_of_sorted_rows(values, finite, n_rows)),
        )
        categorical: list[_CategoricalRef | None] = []
        codes = ring.codes[:, columns]
        for i in range(len(self._categorical_names)):
            row = codes[i]
            counts = np.bincount(row[row >= 0], minlength=self.top_k + 1)
            if counts.sum() < MIN_VALUES:
                categorical.append(None)
                continue
            vocabulary = self._encoders[i]
            assert isinstance(vocabulary, _Vocabulary)
            names = vocabulary.names
            seen = counts[: len(names)]
            order = np.argsort(-seen, kind="stable")
            listed = order[seen[order] > 0][:_SUMMARY_TOP]
            ref = _CategoricalRef(names, counts, listed, {})
            categorical.append(
                _CategoricalRef(names, counts, listed, ref.summarize(counts, n_rows))
            )
        return numeric_refs, categorical

    def _numeric_tests(
        self, refs: _NumericRefs, window: np.ndarray, n_rows: int, frozen: bool
    ) -> list[tuple[str, FeatureKind, str, float, float, dict[str, Any]]]:
        """KS of every numeric feature against its current ``window`` (float32, one row per
        feature, NaN = no value) of ``n_rows`` events; PSI, JS and Wasserstein on first use."""
        current = np.sort(window, axis=1)  # NaN sorts last
        finite = np.count_nonzero(~np.isnan(current), axis=1)
        cdf = _SKETCHES.get(refs, partial(_sketch_cdf, refs)) if frozen else _sketch_cdf(refs)
        d, p = cdf.ks(current, finite)
        as_float64 = _Once(partial(current.astype, np.float64))
        distances = _Rows(partial(_numeric_distances, refs, as_float64, finite))
        summaries = _Rows(lambda: summaries_of_sorted_rows(as_float64.value, finite, n_rows))
        out: list[tuple[str, FeatureKind, str, float, float, dict[str, Any]]] = []
        for i in np.flatnonzero(refs.testable & (finite >= MIN_VALUES)).tolist():
            extra = {
                "unseen_share": None,
                "distances": partial(distances.item, i),
                "summarize_reference": refs.summaries[i],
                "summarize": partial(summaries.item, i),
                "n_reference": int(refs.counts[i]),
                "n_current": int(finite[i]),
            }
            name = self._numeric_names[i]
            out.append((name, "numeric", "ks", float(d[i]), float(p[i]), extra))
        return out


def _sketch_cdf(refs: _NumericRefs) -> SketchCdf:
    return SketchCdf(refs.sample, refs.sample_sizes, refs.counts)


def _numeric_distances(
    refs: _NumericRefs, current: _Once[np.ndarray], finite: np.ndarray
) -> list[dict[str, Any]]:
    values = current.value
    _, _, distance = sketch_ks_wasserstein_rows(
        refs.sample, refs.sample_sizes, refs.counts, values, finite
    )
    counts = bin_counts_rows(values, refs.edges)
    psis = psi_rows(refs.proportions, counts, refs.n_bins)
    jss = js_distance_rows(refs.proportions, counts)
    out = []
    for i in range(values.shape[0]):
        std, w = float(refs.std[i]), float(distance[i])
        out.append(
            {
                "psi": float(psis[i]),
                "js_distance": float(jss[i]),
                "wasserstein": w,
                "wasserstein_normalized": w / std if std > 0 else None,
            }
        )
    return out


def _ranked(features: list[FeatureDrift]) -> tuple[FeatureDrift, ...]:
    """Most drifted first: by score, then JS distance, then name. The JS distance is evidence
    computed on first use, so it is read only to break a tie of scores."""
    features.sort(key=lambda f: (-f.score, f.feature))
    out: list[FeatureDrift] = []
    for _, tied in itertools.groupby(features, key=lambda f: f.score):
        group = list(tied)
        if len(group) > 1:
            group.sort(key=lambda f: (-_or_zero(f.js_distance), f.feature))
        out.extend(group)
    return tuple(out)


class _Once(Generic[T]):
    """A value computed on first use."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] | None = make
        self._value: T | None = None

    @property
    def value(self) -> T:
        if self._make is not None:
            self._value, self._make = self._make(), None
        return self._value  # type: ignore[return-value]  # set above

    def __call__(self) -> T:
        return self.value


class _Rows:
    """A list computed on first use (all numeric features at once)."""

    __slots__ = ("_list",)

    def __init__(self, make: Callable[[], list[dict[str, Any]]]) -> None:
        self._list = _Once(make)

    def item(self, i: int) -> dict[str, Any]:
        return self._list.value[i]


def _categorical_test(
    name: str, ref: _CategoricalRef, counts: np.ndarray, n_rows: int
) -> tuple[str, FeatureKind, str, float, float, dict[str, Any]]:
    m = int(counts.sum())
    ref_total = ref.counts.sum()
    # Cells from the reference alone: categories expected >= MIN_EXPECTED times in the window
    # keep their own cell, the rest (and every category the reference never saw) share one.
    own = ref.counts[:-1] * (m / ref_total) >= MIN_EXPECTED
    pooled_ref = np.append(ref.counts[:-1][own], ref.counts[:-1][~own].sum() + ref.counts[-1])
    pooled_cur = np.append(counts[:-1][own], counts[:-1][~own].sum() + counts[-1])
    statistic, p, _ = chi_square_2samp(pooled_ref, pooled_cur)
    unseen = float(counts[ref.counts == 0].sum() / m)
    return (
        name,
        "categorical",
        "chi_square",
        statistic,
        p,
        {
            "distances": _Once(partial(_categorical_distances, ref.counts, counts)),
            "unseen_share": unseen,
            "summarize_reference": ref.summary,
            "summarize": partial(ref.summarize, counts, n_rows),
            "n_reference": int(ref_total),
            "n_current": m,
        },
    )


def _categorical_distances(ref_counts: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    return {
        "psi": psi(ref_counts, counts),
        "js_distance": js_distance(ref_counts, counts),
        "wasserstein": None,
        "wasserstein_normalized": None,
    }


def _thresholds(p_values: np.ndarray, alpha: float, correction: Correction) -> np.ndarray:
    """Per-feature p-value thresholds such that ``p < threshold`` is the corrected decision."""
    m = p_values.shape[0]
    if correction == "bonferroni":
        return np.full(m, alpha / m)
    order = np.argsort(p_values, kind="stable")
    ranked = p_values[order]
    out = np.empty(m)
    if correction == "holm":
        steps = alpha / (m - np.arange(m))
        failed = np.flatnonzero(ranked >= steps)
        stop = int(failed[0]) if failed.shape[0] else m
        levels = steps.copy()
        if stop < m:
            levels[stop:] = steps[stop]
        out[order] = levels
        return out
    steps = alpha * np.arange(1, m + 1) / m
    passed = np.flatnonzero(ranked < steps)
    out[:] = steps[int(passed[-1])] if passed.shape[0] else alpha / m
    return out


def _or_zero(x: float) -> float:
    return 0.0 if math.isnan(x) else x
