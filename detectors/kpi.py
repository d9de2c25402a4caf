"""Rolling KPI windows over labelled events: classification, regression, label coverage and delay.

A window is either the last ``size`` events (``window="count"``) or the events whose timestamp
is within ``duration_ms`` of the newest timestamp seen (``window="time"``: timestamps greater
than ``newest - duration_ms``, so a 60,000 ms window holds 60 s of events; events may arrive out
of order). Events are stored column-wise in numpy buffers.

``metrics()`` computes every KPI from the window's rows. ``measure(metrics)`` computes only the
KPIs asked for, and those that are sums over events (accuracy, precision, recall, F1, positive
rate, log loss, Brier score, MAE, RMSE, MAPE, label coverage) from running sums kept up to date
as events enter and leave the window: an evaluation costs O(1), not O(window). A running sum
starts when a KPI is first asked for. Counts are integers (exact); sums of floats are kept
shifted by their mean with a bound on their rounding error, and rebuilt from the window when that
bound exceeds 1e-12 of the value, so they agree with ``metrics()`` to about 1e-12 relative. ROC
AUC, R² and the delay quantiles are not sums: they are computed from the window's rows when asked.

To read metrics at points *inside* a batch (every 100 labelled events, say), update with
consecutive slices of the batch and measure between them: the windows are the same as after one
update with the whole batch. ``prepare`` validates and encodes a batch once; ``update_prepared``
with slices of it (``take``) then costs a few numpy operations per slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from driftline.detectors.labels import is_positive, labels_equal

__all__ = ["ClassificationKPIs", "LabelTracker", "PreparedEvents", "RegressionKPIs", "WindowKind"]

WindowKind = Literal["count", "time"]
Labels = Sequence[object] | npt.NDArray[np.generic]
Metrics = dict[str, float | None]
Rows = dict[str, npt.NDArray[Any]]

_G = TypeVar("_G", bound=np.generic)

_INITIAL_TIME_CAPACITY = 1024
_EPS = float(np.finfo(np.float64).eps)
_Z95 = 1.96  # two-sided 95 % normal quantile, for the order-statistic interval of a quantile
# Relative error allowed to a running mean or variance before it is rebuilt from the window.
_RUNNING_TOLERANCE = 1e-12
# Rounding of one numpy (pairwise) sum of m values is below (19 + log2(m / 128)) ulp of the sum of
# their magnitudes; 80 covers any m, with room for the rounding of each value.
_SUM_ERROR_ULPS = 80
_EXACT_INT = 2**53  # integers up to this compare with floats exactly in float64


def _label_array(labels: Labels) -> npt.NDArray[Any]:
    """Labels as one numpy array, so that slices of it compare without another conversion.

    A list of Python ``int`` and ``bool`` within ±2**53 becomes int64 (compared in one numpy
    operation, with the same result as Python equality, also against floats); any other list
    becomes an object array (compared with Python equality element by element). Arrays are
    returned as they are.

    Examples
    --------
    >>> _label_array([1, 0, True]).dtype, _label_array([1, "1"]).dtype
    (dtype('int64'), dtype('O'))

    """
    if isinstance(labels, np.ndarray):
        return labels
    if {int, bool}.issuperset(map(type, labels)):
        try:
            ints = np.fromiter(labels, dtype=np.int64, count=len(labels))
        except OverflowError:
            ints = None
        if ints is not None and (ints.size == 0 or int(np.abs(ints).max()) < _EXACT_INT):
            return ints
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """Labelled events validated and encoded for a KPI window by its ``prepare``; ``take`` gives
    consecutive slices (views) to feed ``update_prepared`` between measurements.

    Examples
    --------
    >>> import numpy as np
    >>> kpis = ClassificationKPIs(size=10)
    >>> events = kpis.prepare([1, 0, 1, 1], [1, 1, 1, 0], np.full(4, np.nan), np.arange(4))
    >>> kpis.update_prepared(events.take(0, 2))
    >>> kpis.measure(["accuracy"])[0]["accuracy"]
    0.5
    >>> kpis.update_prepared(events.take(2, 4))
    >>> kpis.measure(["accuracy"])[0]["accuracy"]
    0.5

    """

    timestamps_ms: npt.NDArray[np.int64]
    columns: Mapping[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return int(self.timestamps_ms.shape[0])

    def take(self, start: int, stop: int) -> PreparedEvents:
        return PreparedEvents(
            self.timestamps_ms[start:stop], {k: v[start:stop] for k, v in self.columns.items()}
        )


def _wanted(metrics: Collection[str], known: tuple[str, ...]) -> frozenset[str]:
    names = frozenset(metrics)
    unknown = names.difference(known)
    if isinstance(metrics, str) or unknown:
        raise ValueError(
            f"metrics: expected names among {', '.join(known)}, got {sorted(unknown) or metrics!r}"
        )
    return names


class _Moments:
    """Running count, mean and sample variance of a non-negative per-event quantity.

    Sums are kept of ``value - shift``, with ``shift`` the mean when last rebuilt, so that the
    variance ``s2 - s1**2 / n`` does not cancel. ``churn1`` and ``churn2`` sum the magnitudes of
    every term added or removed since then: the rounding error of ``s1`` stays below
    ``(_SUM_ERROR_ULPS + ops) * eps * churn1``, that of ``s2`` likewise, and ``accurate()`` says
    whether mean and variance are within ``_RUNNING_TOLERANCE`` of exact by that bound.
    """

    __slots__ = ("churn1", "churn2", "count", "ops", "s1", "s2", "shift")

    def __init__(self, values: npt.NDArray[np.float64]) -> None:
        self.count = 0
        self.shift = self.s1 = self.s2 = self.churn1 = self.churn2 = 0.0
        self.ops = 0
        self.reset(values)

    def reset(self, values: npt.NDArray[np.float64]) -> None:
        self.count = values.shape[0]
        self.shift = float(np.mean(values)) if self.count else 0.0
        d = values - self.shift
        self.s1 = float(np.sum(d))
        self.s2 = float(np.sum(d * d))
        self.churn1 = float(np.sum(np.abs(d)))
        self.churn2 = self.s2
        self.ops = 0

    def add(self, values: npt.NDArray[np.float64], sign: int) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) values."""
        m = values.shape[0]
        if m == 0:
            return
        d = values - self.shift
        t1 = float(d.sum())
        t2 = float((d * d).sum())
        self.count += sign * m
        self.s1 += sign * t1
        self.s2 += sign * t2
        # Values and shift are >= 0, so sum |v - shift| <= sum v + m shift = t1 + 2 m shift.
        self.churn1 += abs(t1) + 2.0 * m * self.shift
        self.churn2 += t2
        self.ops += 1

    def mean(self) -> float:
        return max(self.shift + self.s1 / self.count, 0.0)

    def variance(self) -> float:
        """Sample variance (ddof=1); needs ``count >= 2``."""
        return max(self.s2 - self.s1 * self.s1 / self.count, 0.0) / (self.count - 1)

    def accurate(self) -> bool:
        n = self.count
        if n == 0:
            return True
        ulps = (_SUM_ERROR_ULPS + self.ops) * _EPS
        b1 = ulps * self.churn1
        mean = self.shift + self.s1 / n
        if b1 / n + _EPS * abs(mean) > _RUNNING_TOLERANCE * abs(mean):
            return False
        if n < 2:
            return True
        b2 = ulps * self.churn2
        s1_sq = self.s1 * self.s1 / n
        m2 = self.s2 - s1_sq
        bound = b2 + (2.0 * abs(self.s1) * b1 + b1 * b1) / n + _EPS * (s1_sq + abs(m2))
        return not bound > _RUNNING_TOLERANCE * m2


class _Running:
    """Running integer counts and ``_Moments`` of per-event quantities, kept for a window.

    ``counts`` and each quantity are derived from a window's rows by the owner's functions; a
    quantity is tracked from the first time it is asked for (``moments``), so an owner only pays
    for what it measures.
    """

    def __init__(
        self,
        counts: Callable[[Rows], npt.NDArray[np.int64]],
        quantities: Mapping[str, Callable[[Rows], npt.NDArray[np.float64]]],
    ) -> None:
        self._count_fn = counts
        self._quantity_fns = dict(quantities)
        self._counts: npt.NDArray[np.int64] | None = None
        self._moments: dict[str, _Moments] = {}

    @property
    def active(self) -> bool:
        return self._counts is not None or bool(self._moments)

    def apply(self, entered: Rows, left: list[Rows] | None) -> None:
        """Account for rows that entered and left; ``left=None``: the window is ``entered``."""
        if self._counts is not None:
            if left is None:
                self._counts = self._count_fn(entered)
            else:
                self._counts = self._counts + self._count_fn(entered)
                for piece in left:
                    self._counts = self._counts - self._count_fn(piece)
        for name, moments in self._moments.items():
            values = self._quantity_fns[name]
            if left is None:
                moments.reset(values(entered))
                continue
            moments.add(values(entered), 1)
            for piece in left:
                moments.add(values(piece), -1)

    def counts(self, rows: Callable[[], Rows]) -> npt.NDArray[np.int64]:
        if self._counts is None:
            self._counts = self._count_fn(rows())
        return self._counts

    def moments(self, name: str, rows: Callable[[], Rows]) -> _Moments:
        """The running moments of a quantity, rebuilt from the window when not accurate."""
        moments = self._moments.get(name)
        if moments is None:
            moments = self._moments[name] = _Moments(self._quantity_fns[name](rows()))
        elif not moments.accurate():
            moments.reset(self._quantity_fns[name](rows()))
        return moments


def _append_prepared(window: _Window, running: _Running, events: PreparedEvents) -> None:
    if window.columns != events.columns.keys():
        raise ValueError(
            f"events: prepared for columns {sorted(events.columns)}, "
            f"this window holds {sorted(window.columns)}"
        )
    if len(events) == 0:
        return
    entered, left = window.append(events.timestamps_ms, events.columns, running.active)
    if running.active:
        running.apply(entered, left)


def _check_window(window: str, size: int, duration_ms: int | None) -> None:
    if window not in ("count", "time"):
        raise ValueError(f"window: must be 'count' or 'time', got {window!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: must be an integer >= 1, got {size!r}")
    if window == "time":
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 1:
            raise ValueError(
                f"duration_ms: must be an integer >= 1 with window='time', got {duration_ms!r}"
            )
    elif duration_ms is not None:
        raise ValueError("duration_ms: only applies to window='time'; leave it None")


def _timestamps(timestamps_ms: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    ts = np.asarray(timestamps_ms)
    if ts.ndim != 1 or ts.shape[0] != n:
        raise ValueError(f"timestamps_ms: expected {n} timestamps, got shape {ts.shape}")
    if ts.dtype.kind in "iu":
        return ts.astype(np.int64, copy=False)
    if ts.dtype.kind == "f" and np.isfinite(ts).all() and (ts == np.floor(ts)).all():
        return ts.astype(np.int64)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    raise ValueError("timestamps_ms: must be integer epoch milliseconds")


class _Window:
    """Named numpy columns holding the rows of a count or time window.

    A count window is a ring in arrival order. A time window keeps its rows sorted by timestamp
    (a late row is merged in place), so the rows that leave when the newest timestamp moves on
    are a prefix; an arrival number per row gives ``rows()`` back in arrival order. ``append``
    returns the rows that entered and the rows that left, for running sums.
    """

    def __init__(
        self,
        window: WindowKind,
        size: int,
        duration_ms: int | None,
        dtypes: Mapping[str, type[np.generic]],
    ) -> None:
        self._count = window == "count"
        self._size = size
        self._duration = 0 if duration_ms is None else duration_ms
        capacity = size if self._count else _INITIAL_TIME_CAPACITY
        self._ts = np.empty(capacity, dtype=np.int64)
        self._cols = {name: np.empty(capacity, dtype=dtype) for name, dtype in dtypes.items()}
        self._arrival = np.empty(0 if self._count else capacity, dtype=np.int64)
        self._len = 0
        self._head = 0  # count windows: where the next row goes in the ring
        self._start = 0  # time windows: the first row still in the window
        self._newest: int | None = None  # time windows: the newest timestamp seen
        self._n_seen = 0

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(self._cols)

    @property
    def length(self) -> int:
        """Rows in the window."""
        return self._len if self._count else self._len - self._start

    @property
    def span_ms(self) -> tuple[int, int] | None:
        """First and last event time of the window, None while empty: the oldest and newest
        row by arrival in a count window, the earliest and the newest timestamp in a time
        window."""
        if self.length == 0:
            return None
        if self._count:
            first = self._head if self._len == self._size else 0
            return int(self._ts[first]), int(self._ts[(self._head - 1) % self._size])
        assert self._newest is not None
        return int(self._ts[self._start]), self._newest

    def append(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[Any]], track: bool = False
    ) -> tuple[Rows, list[Rows] | None]:
        """Add rows, oldest first; return the new rows now in the window and the rows that left
        it (None: every earlier row left). ``track=False``: the rows that left are not needed."""
        m = ts.shape[0]
        if m == 0:
            return dict(cols), []
        self._n_seen += m
        if self._count:
            return self._append_ring(ts, cols, m, track)
        newest = int(ts.max())
        self._newest = newest if self._newest is None else max(self._newest, newest)
        return self._append_time(ts, cols, m)

    def _append_ring(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[Any]], m: int, track: bool
    ) -> tuple[Rows, list[Rows] | None]:
        cap = self._size
        pairs = [(self._ts, ts), *((self._cols[k], cols[k]) for k in self._cols)]
        if m >= cap:
            for buf, src in pairs:
                buf[:] = src[m - cap :]
            self._head, self._len = 0, cap
            return {k: v[m - cap :] for k, v in cols.items()}, None
        first = min(m, cap - self._head)
        left: list[Rows] = []
        if track:
            # The slots about to be overwritten: rows that leave (unless the ring is not full).
            if self._len == cap:
                left.append(self._copy(self._head, self._head + first))
            if m > first:
                left.append(self._copy(0, m - first))
        for buf, src in pairs:
            buf[self._head : self._head + first] = src[:first]
            buf[: m - first] = src[first:]
        self._head = (self._head + m) % cap
        self._len = min(self._len + m, cap)
        return dict(cols), left

    def _copy(self, start: int, stop: int) -> Rows:
        return {k: v[start:stop].copy() for k, v in self._cols.items()}

    def _append_time(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[Any]], m: int
    ) -> tuple[Rows, list[Rows] | None]:
        assert self._newest is not None
        cutoff = self._newest - self._duration
        arrival = np.arange(self._n_seen - m, self._n_seen, dtype=np.int64)
        inside = ts > cutoff
        if not inside.all():  # rows already older than the window never enter it
            ts, arrival = ts[inside], arrival[inside]
            cols = {k: v[inside] for k, v in cols.items()}
        # Rows sorted by timestamp: those the new cutoff passed are a prefix.
        stop = self._start + int(
            np.searchsorted(self._ts[self._start : self._len], cutoff, "right")
        )
        left = [self._view(self._start, stop)] if stop > self._start else []
        self._start = stop
        k = ts.shape[0]
        if k == 0:
            return dict(cols), left
        if self._len + k > self._ts.shape[0]:
            left = [{name: v.copy() for name, v in piece.items()} for piece in left]
            self._compact(k)
        new = [(self._ts, ts), (self._arrival, arrival)]
        new += [(self._cols[name], cols[name]) for name in self._cols]
        if k > 1 and not (ts[1:] >= ts[:-1]).all():
            order = np.argsort(ts, kind="stable")
            new = [(buf, rows[order]) for buf, rows in new]
        end = self._len
        first_ts = int(new[0][1][0])
        at = end
        if end > self._start and first_ts < int(self._ts[end - 1]):
            # A late row: merge the new rows with the rows newer than the earliest of them.
            at = self._start + int(np.searchsorted(self._ts[self._start : end], first_ts, "right"))
            merged = np.argsort(np.concatenate((self._ts[at:end], new[0][1])), kind="stable")
            new = [(buf, np.concatenate((buf[at:end], rows))[merged]) for buf, rows in new]
        for buf, rows in new:
            buf[at : at + rows.shape[0]] = rows
        self._len = at + new[0][1].shape[0]
        return dict(cols), left

    def _compact(self, incoming: int) -> None:
        """Drop the rows that left the window; grow when the buffer is still too small, so that
        capacity stays within twice the rows in the window."""
        alive = self._len - self._start
        capacity = self._ts.shape[0]
        buffers = [self._ts, self._arrival, *self._cols.values()]
        if alive + incoming > capacity:
            capacity = max(2 * capacity, alive + incoming)
            grown = [_grown(buf[self._start : self._len], alive, capacity) for buf in buffers]
            self._ts, self._arrival = grown[0], grown[1]
            self._cols = dict(zip(self._cols, grown[2:], strict=True))
        else:
            for buf in buffers:
                buf[:alive] = buf[self._start : self._len]
        self._start, self._len = 0, alive

    def _view(self, start: int, stop: int) -> Rows:
        return {k: v[start:stop] for k, v in self._cols.items()}

    def rows(self) -> Rows:
        """The window's columns, oldest row first (``"timestamp_ms"`` included)."""
        named = {"timestamp_ms": self._ts, **self._cols}
        if self._count:
            if self._len < self._size:
                return {k: v[: self._len] for k, v in named.items()}
            h = self._head
            return {k: np.concatenate((v[h:], v[:h])) for k, v in named.items()}
        alive = slice(self._start, self._len)
        arrival = self._arrival[alive]
        if arrival.shape[0] > 1 and not (arrival[1:] > arrival[:-1]).all():
            order = np.argsort(arrival)
            return {k: v[alive][order] for k, v in named.items()}
        return {k: v[alive] for k, v in named.items()}


def _grown(buf: npt.NDArray[_G], length: int, capacity: int) -> npt.NDArray[_G]:
    out: npt.NDArray[_G] = np.empty(capacity, dtype=buf.dtype)
    out[:length] = buf[:length]
    return out


def _roc_auc(score: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) identity; ties count half."""
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts_group = np.empty(ordered.shape[0], dtype=np.bool_)
    starts_group[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    first = np.flatnonzero(starts_group)  # 0-based position of each tie group's first score
    past = np.append(first[1:], ordered.shape[0])
    mean_rank = (first + 1 + past) / 2.0  # the 1-based ranks first+1 .. past, averaged
    group = np.cumsum(starts_group) - 1
    positives_per_group = np.bincount(group, weights=positive[order], minlength=first.shape[0])
    rank_sum = float(np.dot(mean_rank, positives_per_group))
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _roc_auc_standard_error(
    score: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]
) -> float | None:
    """DeLong et al. (1988) standard error of the rank-sum AUC, from its placement values.

    A positive's placement is the share of negatives scored below it (ties count half), a
    negative's the share of positives scored above it; the AUC is the mean of either, and its
    variance the sum of their sample variances over their counts. Unlike Hanley & McNeil's
    closed form it assumes no score distribution.
    """
    pos = np.sort(score[positive])
    neg = np.sort(score[~positive])
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    if n_pos < 2 or n_neg < 2:
        return None
    pos_placement = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")) / (
        2.0 * n_neg
    )
    neg_placement = (np.searchsorted(pos, neg, "left") + np.searchsorted(pos, neg, "right")) / (
        2.0 * n_pos
    )
    # The negatives' placement is 1 - neg_placement; a variance does not see the reflection.
    variance = np.var(pos_placement, ddof=1) / n_pos + np.var(neg_placement, ddof=1) / n_neg
    return math.sqrt(float(variance))


def _proportion_se(p: float | None, n: int) -> float | None:
    """Binomial standard error of a share ``p`` of ``n`` events (0.0 when p is 0 or 1)."""
    if p is None or n < 1:
        return None
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def _mean_se(values: npt.NDArray[np.float64]) -> float | None:
    """Standard error of the mean of i.i.d. values: sample sd (ddof=1) / sqrt(count)."""
    n = values.shape[0]
    if n < 2:
        return None
    return float(np.std(values, ddof=1)) / math.sqrt(n)


def _score_losses(
    score: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-event log loss (probabilities clipped to [eps, 1 - eps]) and Brier score."""
    p = np.clip(score, _EPS, 1.0 - _EPS)
    log_loss = -np.log(np.where(positive, p, 1.0 - p))
    brier = (score - positive) ** 2
    return log_loss, brier


class ClassificationKPIs:
    """Rolling classification KPIs over the last labelled events.

    Precision, recall and F1 are those of ``positive_label`` against all other classes, so they
    also make sense for a multiclass model; accuracy counts exact matches of the canonical
    labels (:func:`~detectors.labels.label_key`: ``1``, ``1.0`` and ``True`` match, ``"1"`` does
    not). The score-based metrics (ROC AUC, log loss, Brier score) use the events that have a
    score, the probability of ``positive_label``.

    ``metrics()`` returns, with None where a value is undefined:

    - ``n``: events in the window; ``n_scored``: those with a score.
    - ``accuracy``; ``positive_rate``: share of predictions that are ``positive_label``.
    - ``precision`` = TP / (TP + FP), None without a positive prediction; ``recall`` =
      TP / (TP + FN), None without a positive label; ``f1`` = 2 TP / (2 TP + FP + FN), None
      when there is neither.
    - ``roc_auc`` (ties count half, as in scikit-learn), None unless both classes are scored;
      ``log_loss`` (natural log, probabilities clipped to [eps, 1 - eps]) and ``brier``, None
      without a score.

    ``standard_errors()`` returns, over the same window, the sampling standard error of each of
    these metrics (the same keys without ``n`` and ``n_scored``), treating the window's events as
    i.i.d. draws, to put confidence bounds on a KPI before alerting on it. None where the metric
    is None or its standard error is undefined:

    - ``accuracy``, ``positive_rate``: binomial, ``sqrt(p (1 - p) / n)``.
    - ``precision``: ``sqrt(p (1 - p) / (TP + FP))``; ``recall``: ``sqrt(r (1 - r) / (TP + FN))``.
    - ``f1``: delta method on F1 = 2q / (1 + q), where q = TP / (TP + FP + FN) is binomial over
      TP + FP + FN events: ``2 / (1 + q)**2 * sqrt(q (1 - q) / (TP + FP + FN))``.
    - ``roc_auc``: DeLong's distribution-free estimate from the placement values of the scored
      events (each positive's share of negatives scored below it, ties half, and the converse);
      None with fewer than 2 scored events of either class. Hanley & McNeil's closed form is not
      used: it assumes a score distribution, and with binormal scores it is 10-40 % too large,
      or 15-20 % too small when the positives' scores are the more spread.
    - ``log_loss``, ``brier``: sample standard deviation (ddof=1) of the per-event values over
      the square root of ``n_scored``; None with fewer than 2 scored events.

    A proportion (accuracy, positive rate, precision, recall, F1's q) of exactly 0 or 1 has a
    standard error of 0.0 by these formulas, as does a perfectly separating AUC: the binomial
    estimate collapses at the boundary. Bound such a proportion with a Wilson-style interval
    instead of ``estimate ± z * se``.

    ``measure(metrics)`` gives the named metrics and their standard errors only, from running
    counts and sums (see the module notes): what a threshold evaluation needs, in O(1).

    Parameters
    ----------
    window
        ``"count"``: the last ``size`` events; ``"time"``: the events within ``duration_ms`` of
        the newest timestamp.
    size
        Length of a count window; unused by a time window.
    duration_ms
        Length of a time window, in milliseconds. A time window holds every event of that span,
        so its memory follows the traffic: about 25 bytes per event.
    positive_label
        The positive class.

    Examples
    --------
    >>> import numpy as np
    >>> kpis = ClassificationKPIs(size=4)
    >>> kpis.update([1, 0, 1, 1, 0], [1, 0, 0, 1, 1], np.array([0.9, 0.2, 0.4, np.nan, 0.6]),
    ...             timestamps_ms=np.arange(5))
    >>> m = kpis.metrics()
    >>> m["n"], m["accuracy"], m["precision"], m["recall"], m["roc_auc"]
    (4.0, 0.5, 0.5, 0.5, 0.5)
    >>> se = kpis.standard_errors()
    >>> se["accuracy"], round(se["brier"], 4), se["roc_auc"]
    (0.25, 0.1067, None)
    >>> kpis.measure(["accuracy"])
    ({'n': 4.0, 'n_scored': 3.0, 'accuracy': 0.5}, {'accuracy': 0.25})

    """

    METRICS: ClassVar[tuple[str, ...]] = (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "brier",
        "positive_rate",
    )

    def __init__(
        self,
        window: WindowKind = "count",
        size: int = 1000,
        duration_ms: int | None = None,
        positive_label: object = 1,
    ) -> None:
        _check_window(window, size, duration_ms)
        if isinstance(positive_label, float) and math.isnan(positive_label):
            raise ValueError("positive_label: must not be NaN")
        self.window = window
        self.size = size
        self.duration_ms = duration_ms
        self.positive_label = positive_label
        # One flag byte per event: correct, true class positive, predicted positive, scored.
        self._window = _Window(window, size, duration_ms, {"flags": np.uint8, "score": np.float64})
        self._running = _Running(
            _flag_histogram, {"log_loss": _log_loss_of_rows, "brier": _brier_of_rows}
        )

    @property
    def n_seen(self) -> int:
        """Events seen since creation, in or out of the window."""
        return self._window.n_seen

    @property
    def window_span_ms(self) -> tuple[int, int] | None:
        """First and last event time of the window (epoch ms), None while it is empty: the
        oldest and newest event by arrival in a count window, the earliest and the newest
        timestamp in a time window."""
        return self._window.span_ms

    def update(
        self,
        y_true: Labels,
        y_pred: Labels,
        score: npt.ArrayLike,
        timestamps_ms: npt.ArrayLike,
    ) -> None:
        """Add labelled events, oldest first.

        Parameters
        ----------
        y_true
            The outcomes (true classes).
        y_pred
            The predicted classes.
        score
            Probability of ``positive_label`` per event, NaN where the event has none; other
            values outside [0, 1] raise ValueError.
        timestamps_ms
            Event times, epoch milliseconds.

        """
        self.update_prepared(self.prepare(y_true, y_pred, score, timestamps_ms))

    def prepare(
        self,
        y_true: Labels,
        y_pred: Labels,
        score: npt.ArrayLike,
        timestamps_ms: npt.ArrayLike,
    ) -> PreparedEvents:
        """Validate and encode events as ``update`` would, for ``update_prepared`` (of this
        window or of one with the same ``positive_label``)."""
        n = len(y_true)
        if len(y_pred) != n:
            raise ValueError(f"y_pred: expected {n} predictions, got {len(y_pred)}")
        s = np.asarray(score, dtype=np.float64)
        if s.ndim != 1 or s.shape[0] != n:
            raise ValueError(f"score: expected {n} scores, got shape {s.shape}")
        # fmin and fmax skip NaN: only a present score outside [0, 1] is out of range.
        if n and (np.fmin.reduce(s) < 0.0 or np.fmax.reduce(s) > 1.0):
            raise ValueError("score: must be a probability in [0, 1], or NaN when absent")
        ts = _timestamps(timestamps_ms, n)
        y_true, y_pred = _label_array(y_true), _label_array(y_pred)
        flags: npt.NDArray[np.uint8] = labels_equal(y_true, y_pred).astype(np.uint8)
        flags |= is_positive(y_true, self.positive_label).view(np.uint8) << 1
        flags |= is_positive(y_pred, self.positive_label).view(np.uint8) << 2
        flags |= (~np.isnan(s)).view(np.uint8) << 3
        return PreparedEvents(ts, {"flags": flags, "score": s})

    def update_prepared(self, events: PreparedEvents) -> None:
        """Add events made by ``prepare`` (or a ``take`` of them), oldest first."""
        _append_prepared(self._window, self._running, events)

    def metrics(self) -> Metrics:
        """The KPIs over the current window."""
        return self._metrics(*self._columns())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self, metrics: Collection[str] | None = None) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once.

        Parameters
        ----------
        metrics
            Names among ``METRICS`` to measure, None for all. With names, the two dicts hold
            ``n``, ``n_scored`` and those metrics (the errors: those metrics), from running sums
            but for ``roc_auc``; values agree with the full computation to about 1e-12 relative
            (accuracy, precision, recall, F1 and positive rate and their errors: exactly).

        """
        if metrics is None:
            columns = self._columns()
            m = self._metrics(*columns)
            return m, self._errors(m, *columns)
        wanted = _wanted(metrics, self.METRICS)
        counts, n_scored = _confusion_of_histogram(self._running.counts(self._rows))
        n = self._window.length
        values: Metrics = {"n": float(n), "n_scored": float(n_scored)}
        errors: Metrics = dict.fromkeys(wanted)
        if n == 0:
            values.update(errors)
            return values, errors
        count_values, count_errors = _count_metrics(n, counts, wanted)
        values.update(count_values)
        errors.update(count_errors)
        for name in wanted.intersection(("log_loss", "brier")):
            moments = self._running.moments(name, self._rows)
            values[name] = moments.mean() if moments.count else None
            errors[name] = _moments_se(moments)
        if "roc_auc" in wanted:
            _, true_pos, _, score = self._columns()
            scored = ~np.isnan(score)
            s, y = score[scored], true_pos[scored]
            values["roc_auc"] = _roc_auc(s, y) if s.size else None
            errors["roc_auc"] = _roc_auc_standard_error(s, y)
        return values, errors

    @classmethod
    def _errors(
        cls,
        m: Metrics,
        correct: npt.NDArray[np.bool_],
        true_pos: npt.NDArray[np.bool_],
        pred_pos: npt.NDArray[np.bool_],
        score: npt.NDArray[np.float64],
    ) -> Metrics:
        n = correct.shape[0]
        if n == 0:
            return dict.fromkeys(cls.METRICS)
        tp, fp, fn = _confusion(true_pos, pred_pos)
        _, count_errors = _count_metrics(n, (int(correct.sum()), tp, fp, fn, int(pred_pos.sum())))
        scored = ~np.isnan(score)
        log_loss, brier = _score_losses(score[scored], true_pos[scored])
        return {
            "accuracy": count_errors["accuracy"],
            "precision": count_errors["precision"],
            "recall": count_errors["recall"],
            "f1": count_errors["f1"],
            "roc_auc": _roc_auc_standard_error(score[scored], true_pos[scored]),
            "log_loss": _mean_se(log_loss),
            "brier": _mean_se(brier),
            "positive_rate": count_errors["positive_rate"],
        }

    def _rows(self) -> Rows:
        return self._window.rows()

    def errors_by_score(
        self, n_bins: int = 10
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Events and wrong predictions of the window per score bin (``n_bins`` equal bins of
        [0, 1], the last one closed); events without a score are left out."""
        correct, _, _, score = self._columns()
        scored = ~np.isnan(score)
        bins = np.minimum((score[scored] * n_bins).astype(np.int64), n_bins - 1)
        n = np.bincount(bins, minlength=n_bins)
        wrong = np.bincount(bins, weights=~correct[scored], minlength=n_bins).astype(np.int64)
        return n, wrong

    def _columns(
        self,
    ) -> tuple[
        npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.float64]
    ]:
        """The window's correct, true-positive-class, predicted-positive-class and score columns."""
        rows = self._window.rows()
        flags = rows["flags"]
        return (
            (flags & 1).astype(np.bool_),
            (flags & 2).astype(np.bool_),
            (flags & 4).astype(np.bool_),
            np.asarray(rows["score"], dtype=np.float64),
        )

    @classmethod
    def _metrics(
        cls,
        correct: npt.NDArray[np.bool_],
        true_pos: npt.NDArray[np.bool_],
        pred_pos: npt.NDArray[np.bool_],
        score: npt.NDArray[np.float64],
    ) -> Metrics:
        n = correct.shape[0]
        scored = ~np.isnan(score)
        out: Metrics = {"n": float(n), "n_scored": float(scored.sum())}
        if n == 0:
            out.update(dict.fromkeys(cls.METRICS))
            return out
        tp, fp, fn = _confusion(true_pos, pred_pos)
        count_values, _ = _count_metrics(n, (int(correct.sum()), tp, fp, fn, int(pred_pos.sum())))
        out["accuracy"] = count_values["accuracy"]
        out["precision"] = count_values["precision"]
        out["recall"] = count_values["recall"]
        out["f1"] = count_values["f1"]
        s, y = score[scored], true_pos[scored]
        if s.size:
            out["roc_auc"] = _roc_auc(s, y)
            log_loss, brier = _score_losses(s, y)
            out["log_loss"] = float(np.mean(log_loss))
            out["brier"] = float(np.mean(brier))
        else:
            out["roc_auc"] = out["log_loss"] = out["brier"] = None
        out["positive_rate"] = count_values["positive_rate"]
        return out

    def __repr__(self) -> str:
        return (
            f"ClassificationKPIs(window={self.window!r}, size={self.size}, "
            f"duration_ms={self.duration_ms}, positive_label={self.positive_label!r})"
        )


def _confusion(
    true_pos: npt.NDArray[np.bool_], pred_pos: npt.NDArray[np.bool_]
) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of the positive class."""
    tp = int((true_pos & pred_pos).sum())
    fp = int((~true_pos & pred_pos).sum())
    fn = int((true_pos & ~pred_pos).sum())
    return tp, fp, fn


_FLAG_VALUES = np.arange(16)
# Columns: correct, true positive class, predicted positive class, both (TP), scored; one row per
# flag byte value, so that a bincount of the flags times this matrix counts them all.
_FLAG_MATRIX = np.stack(
    [
        (_FLAG_VALUES & 1) > 0,
        (_FLAG_VALUES & 2) > 0,
        (_FLAG_VALUES & 4) > 0,
        (_FLAG_VALUES & 6) == 6,
        (_FLAG_VALUES & 8) > 0,
    ],
    axis=1,
).astype(np.int64)


def _flag_histogram(rows: Rows) -> npt.NDArray[np.int64]:
    """How many rows have each of the 16 flag byte values: all the counts, in one bincount."""
    return np.bincount(rows["flags"], minlength=16)


def _confusion_of_histogram(
    histogram: npt.NDArray[np.int64],
) -> tuple[tuple[int, int, int, int, int], int]:
    """(correct, TP, FP, FN, predicted positives) and the scored events, from the flag counts."""
    correct, true_pos, pred_pos, tp, scored = (int(c) for c in histogram @ _FLAG_MATRIX)
    return (correct, tp, pred_pos - tp, true_pos - tp, pred_pos), scored


_COUNT_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "positive_rate"})


def _count_metrics(
    n: int, counts: tuple[int, int, int, int, int], wanted: Collection[str] = _COUNT_METRICS
) -> tuple[Metrics, Metrics]:
    """The ``wanted`` KPIs that are ratios of counts and their standard errors, over ``n >= 1``
    events; ``counts`` are the correct predictions, TP, FP, FN and positive predictions."""
    correct, tp, fp, fn, n_pred = counts
    values: Metrics = {}
    errors: Metrics = {}
    if "accuracy" in wanted:
        values["accuracy"] = correct / n
        errors["accuracy"] = _proportion_se(values["accuracy"], n)
    if "precision" in wanted:
        values["precision"] = tp / (tp + fp) if tp + fp else None
        errors["precision"] = _proportion_se(values["precision"], tp + fp)
    if "recall" in wanted:
        values["recall"] = tp / (tp + fn) if tp + fn else None
        errors["recall"] = _proportion_se(values["recall"], tp + fn)
    if "f1" in wanted:
        q = tp / (tp + fp + fn) if tp + fp + fn else None
        f1_se = _proportion_se(q, tp + fp + fn)
        values["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        errors["f1"] = None if q is None or f1_se is None else 2.0 / (1.0 + q) ** 2 * f1_se
    if "positive_rate" in wanted:
        values["positive_rate"] = n_pred / n
        errors["positive_rate"] = _proportion_se(values["positive_rate"], n)
    return values, errors


def _scored_rows(rows: Rows) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    flags, score = rows["flags"], rows["score"]
    scored = (flags & 8).astype(np.bool_)
    return score[scored], (flags[scored] & 2).astype(np.bool_)


def _log_loss_of_rows(rows: Rows) -> npt.NDArray[np.float64]:
    score, positive = _scored_rows(rows)
    p = np.clip(score, _EPS, 1.0 - _EPS)
    loss: npt.NDArray[np.float64] = -np.log(np.where(positive, p, 1.0 - p))
    return loss


def _brier_of_rows(rows: Rows) -> npt.NDArray[np.float64]:
    score, positive = _scored_rows(rows)
    brier: npt.NDArray[np.float64] = (score - positive) ** 2
    return brier


def _moments_se(moments: _Moments) -> float | None:
    """Standard error of the mean, as ``_mean_se`` of the values behind the moments."""
    if moments.count < 2:
        return None
    return math.sqrt(moments.variance()) / math.sqrt(moments.count)


def _finite(name: str, values: npt.ArrayLike, n: int | None = None) -> npt.NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or (n is not None and x.shape[0] != n):
        raise ValueError(f"{name}: expected a one-dimensional array of {n} values, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: must be finite numbers")
    return x


class RegressionKPIs:
    """Rolling regression KPIs over the last labelled events.

    ``metrics()`` returns, with None where a value is undefined (an empty window):

    - ``n``: events in the window.
    - ``mae``: mean absolute error; ``rmse``: root mean squared error.
    - ``mape``: mean of ``|y_true - y_pred| / |y_true|`` as a fraction (not a percentage), over
      the events with ``y_true != 0`` (a zero outcome has no relative error); None if none.
    - ``r2``: coefficient of determination, None with fewer than 2 events or a constant
      ``y_true``.

    ``standard_errors()`` returns, over the same window, the sampling standard error of each
    (same keys without ``n``), treating the events as i.i.d.; None where the metric is None or
    the window has fewer than 2 events that enter it:

    - ``mae``, ``mape``: sample standard deviation (ddof=1) of the per-event absolute (for
      ``mape``, relative) errors over the square root of their count.
    - ``rmse``: delta method from the MSE: se(MSE) = sd(squared errors) / sqrt(n) and
      se(RMSE) = se(MSE) / (2 RMSE); 0.0 when every error is 0.
    - ``r2``: delta method on R² = 1 - MSE / V with V = SS_tot / n, both sampled:
      ``sd(e_i**2 - (1 - R²) (y_i - mean(y))**2) / (sqrt(n) V)``. Holding V fixed
      (se(MSE) / V) would ignore the sampling of ``y_true``'s variance: 20-30 % off in
      simulations.

    Parameters
    ----------
    window, size, duration_ms
        As for :class:`ClassificationKPIs`.

    Examples
    --------
    >>> import numpy as np
    >>> kpis = RegressionKPIs(size=3)
    >>> kpis.update(np.array([9.0, 1.0, 2.0, 0.0]), np.array([0.0, 1.5, 2.0, 1.0]), np.arange(4))
    >>> {k: round(v, 3) for k, v in kpis.metrics().items()}
    {'n': 3.0, 'mae': 0.5, 'rmse': 0.645, 'mape': 0.25, 'r2': 0.375}
    >>> {k: round(v, 3) for k, v in kpis.standard_errors().items()}
    {'mae': 0.289, 'rmse': 0.233, 'mape': 0.25, 'r2': 0.472}

    """

    METRICS: ClassVar[tuple[str, ...]] = ("mae", "rmse", "mape", "r2")

    def __init__(
        self, window: WindowKind = "count", size: int = 1000, duration_ms: int | None = None
    ) -> None:
        _check_window(window, size, duration_ms)
        self.window = window
        self.size = size
        self.duration_ms = duration_ms
        self._window = _Window(
            window, size, duration_ms, {"y_true": np.float64, "y_pred": np.float64}
        )
        self._running = _Running(
            _no_counts,
            {
                "mae": _absolute_errors,
                "rmse": _squared_errors,
                "mape": _relative_errors,
            },
        )

    @property
    def n_seen(self) -> int:
        """Events seen since creation, in or out of the window."""
        return self._window.n_seen

    @property
    def window_span_ms(self) -> tuple[int, int] | None:
        """First and last event time of the window (epoch ms), None while it is empty: the
        oldest and newest event by arrival in a count window, the earliest and the newest
        timestamp in a time window."""
        return self._window.span_ms

    def update(
        self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, timestamps_ms: npt.ArrayLike
    ) -> None:
        """Add labelled events, oldest first: outcomes, predictions, epoch milliseconds."""
        self.update_prepared(self.prepare(y_true, y_pred, timestamps_ms))

    def prepare(
        self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, timestamps_ms: npt.ArrayLike
    ) -> PreparedEvents:
        """Validate events as ``update`` would, for ``update_prepared``."""
        t = _finite("y_true", y_true)
        n = t.shape[0]
        p = _finite("y_pred", y_pred, n)
        return PreparedEvents(_timestamps(timestamps_ms, n), {"y_true": t, "y_pred": p})

    def update_prepared(self, events: PreparedEvents) -> None:
        """Add events made by ``prepare`` (or a ``take`` of them), oldest first."""
        _append_prepared(self._window, self._running, events)

    def metrics(self) -> Metrics:
        """The KPIs over the current window."""
        return self._metrics(*self._columns())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self, metrics: Collection[str] | None = None) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once.

        Parameters
        ----------
        metrics
            Names among ``METRICS`` to measure, None for all. With names, the two dicts hold
            ``n`` and those metrics (the errors: those metrics), from running sums but for
            ``r2``; values agree with the full computation to about 1e-12 relative.

        """
        if metrics is None:
            t, p = self._columns()
            m = self._metrics(t, p)
            return m, self._errors(m, t, p)
        wanted = _wanted(metrics, self.METRICS)
        n = self._window.length
        values: Metrics = {"n": float(n)}
        errors: Metrics = dict.fromkeys(wanted)
        if n == 0:
            values.update(errors)
            return values, errors
        if "mae" in wanted:
            moments = self._running.moments("mae", self._rows)
            values["mae"] = moments.mean()
            errors["mae"] = _moments_se(moments)
        if "rmse" in wanted:
            moments = self._running.moments("rmse", self._rows)
            rmse = math.sqrt(moments.mean())
            values["rmse"] = rmse
            mse_se = _moments_se(moments)
            if mse_se is not None:
                errors["rmse"] = mse_se / (2.0 * rmse) if rmse > 0.0 else 0.0
        if "mape" in wanted:
            moments = self._running.moments("mape", self._rows)
            values["mape"] = moments.mean() if moments.count else None
            errors["mape"] = _moments_se(moments) if n >= 2 else None
        if "r2" in wanted:
            t, p = self._columns()
            err = t - p
            values["r2"] = _r2(t, err)
            errors["r2"] = _r2_se(t, err * err) if values["r2"] is not None else None
        return values, errors

    @staticmethod
    def _errors(m: Metrics, t: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> Metrics:
        n = t.shape[0]
        if n < 2:
            return dict.fromkeys(("mae", "rmse", "mape", "r2"))
        err = t - p
        abs_err = np.abs(err)
        squared = err * err
        mse_se = _mean_se(squared)
        rmse = m["rmse"]
        assert mse_se is not None and rmse is not None
        nonzero = t != 0.0
        return {
            "mae": _mean_se(abs_err),
            "rmse": mse_se / (2.0 * rmse) if rmse > 0.0 else 0.0,
            "mape": _mean_se(abs_err[nonzero] / np.abs(t[nonzero])),
            "r2": None if m["r2"] is None else _r2_se(t, squared),
        }

    def _rows(self) -> Rows:
        return self._window.rows()

    def _columns(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The window's outcomes and predictions."""
        rows = self._window.rows()
        return (
            np.asarray(rows["y_true"], dtype=np.float64),
            np.asarray(rows["y_pred"], dtype=np.float64),
        )

    @staticmethod
    def _metrics(t: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> Metrics:
        n = t.shape[0]
        out: Metrics = {"n": float(n)}
        if n == 0:
            out.update(mae=None, rmse=None, mape=None, r2=None)
            return out
        err = t - p
        abs_err = np.abs(err)
        out["mae"] = float(abs_err.mean())
        out["rmse"] = math.sqrt(float(np.mean(err * err)))
        nonzero = t != 0.0
        relative = abs_err[nonzero] / np.abs(t[nonzero])
        out["mape"] = float(relative.mean()) if relative.size else None
        out["r2"] = _r2(t, err)
        return out

    def __repr__(self) -> str:
        return (
            f"RegressionKPIs(window={self.window!r}, size={self.size}, "
            f"duration_ms={self.duration_ms})"
        )


def _r2(t: npt.NDArray[np.float64], err: npt.NDArray[np.float64]) -> float | None:
    """R² = 1 - SSE / SS_tot; None with fewer than 2 events or a constant outcome."""
    centred = t - t.mean()
    ss_tot = float(np.dot(centred, centred))
    if t.shape[0] < 2 or ss_tot <= 0.0:
        return None
    return 1.0 - float(np.dot(err, err)) / ss_tot


def _r2_se(t: npt.NDArray[np.float64], squared: npt.NDArray[np.float64]) -> float:
    """Delta-method standard error of R² (see ``RegressionKPIs``), for a defined R²."""
    n = t.shape[0]
    centred = t - t.mean()
    centred_sq = centred * centred
    variance = float(centred_sq.mean())
    unexplained = float(squared.sum()) / float(centred_sq.sum())  # 1 - R², unrounded
    influence = squared - unexplained * centred_sq
    return float(np.std(influence, ddof=1)) / (math.sqrt(n) * variance)


def _no_counts(rows: Rows) -> npt.NDArray[np.int64]:
    return np.zeros(0, dtype=np.int64)


def _errors_of_rows(rows: Rows) -> npt.NDArray[np.float64]:
    err: npt.NDArray[np.float64] = rows["y_true"] - rows["y_pred"]
    return err


def _absolute_errors(rows: Rows) -> npt.NDArray[np.float64]:
    return np.abs(_errors_of_rows(rows))


def _squared_errors(rows: Rows) -> npt.NDArray[np.float64]:
    err = _errors_of_rows(rows)
    return err * err


def _relative_errors(rows: Rows) -> npt.NDArray[np.float64]:
    t = rows["y_true"]
    nonzero = t != 0.0
    relative: npt.NDArray[np.float64] = np.abs(t[nonzero] - rows["y_pred"][nonzero]) / np.abs(
        t[nonzero]
    )
    return relative


class LabelTracker:
    """Label coverage and label delay over the last predictions that got, or missed, an outcome.

    Each prediction enters the window once: when its outcome arrives (``update_labeled``, with
    the delay between prediction and outcome) or when it ages out of the join buffer without one
    (``update_expired``). ``metrics()`` returns:

    - ``label_coverage``: labelled / (labelled + expired) in the window, None when empty.
    - ``label_delay_p50_ms``, ``label_delay_p95_ms``: quantiles of the delays of the labelled
      predictions in the window (linear interpolation, numpy's default), None without any.
    - ``n_labeled``, ``n_expired``: the counts behind the coverage.

    ``standard_errors()`` returns, over the same window, the sampling standard error of each
    (same keys without the counts), treating the predictions as i.i.d.:

    - ``label_coverage``: binomial, ``sqrt(c (1 - c) / (n_labeled + n_expired))``; 0.0 when
      the coverage is 0 or 1 (bound it with a Wilson-style interval), None when empty.
    - ``label_delay_p50_ms``, ``label_delay_p95_ms``: distribution-free, from the order
      statistics: with the k labelled delays, the quantiles at ``p ± 1.96 sqrt(p (1 - p) / k)``
      (clipped to [0, 1], interpolated as in ``metrics()``) bound a 95 % interval, and the
      standard error is its width / (2 × 1.96). None with fewer than 2 labelled delays. It
      assumes continuous delays: when many delays tie (whole seconds, say) a quantile has no
      proper standard error and this one can be far off either way. For p95 with a few hundred
      delays or fewer the interval is clipped at the largest delay and tends to be wide.

    Parameters
    ----------
    window, size, duration_ms
        As for :class:`ClassificationKPIs`. Timestamps are those of the moment the outcome
        arrived or the prediction expired.

    Examples
    --------
    >>> import numpy as np
    >>> tracker = LabelTracker(window="time", duration_ms=60_000)
    >>> tracker.update_labeled(np.array([1_000, 3_000, 2_000]), np.array([0, 10_000, 20_000]))
    >>> tracker.update_expired(1, np.array([70_000]))
    >>> m = tracker.metrics()
    >>> m["label_coverage"], m["label_delay_p50_ms"], m["n_expired"]
    (0.5, 2000.0, 1.0)
    >>> se = tracker.standard_errors()
    >>> round(se["label_coverage"], 4), se["label_delay_p50_ms"]  # one delay: no se for it
    (0.3536, None)

    """

    METRICS: ClassVar[tuple[str, ...]] = (
        "label_coverage",
        "label_delay_p50_ms",
        "label_delay_p95_ms",
    )

    def __init__(
        self, window: WindowKind = "count", size: int = 1000, duration_ms: int | None = None
    ) -> None:
        _check_window(window, size, duration_ms)
        self.window = window
        self.size = size
        self.duration_ms = duration_ms
        self._window = _Window(window, size, duration_ms, {"delay_ms": np.float64})
        self._running = _Running(_labeled_count, {})

    @property
    def n_seen(self) -> int:
        """Predictions seen since creation, labelled or expired."""
        return self._window.n_seen

    def update_labeled(self, delays_ms: npt.ArrayLike, timestamps_ms: npt.ArrayLike) -> None:
        """Add predictions that got their outcome, with the delay of each, in milliseconds."""
        d = _finite("delays_ms", delays_ms)
        self._append(_timestamps(timestamps_ms, d.shape[0]), d)

    def update_expired(self, n: int, timestamps_ms: npt.ArrayLike) -> None:
        """Add ``n`` predictions that aged out without an outcome, one timestamp each."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: must be an integer >= 0, got {n!r}")
        ts = _timestamps(timestamps_ms, int(n))
        self._append(ts, np.full(int(n), np.nan))

    def update(self, delays_ms: npt.ArrayLike, timestamps_ms: npt.ArrayLike) -> None:
        """Add predictions in the order they were resolved: each with its delay, or NaN for
        one that expired without an outcome."""
        d = np.asarray(delays_ms, dtype=np.float64)
        if d.ndim != 1 or np.isinf(d).any() or (d < 0).any():
            raise ValueError("delays_ms: must be a 1-D array of delays >= 0 or NaN")
        self._append(_timestamps(timestamps_ms, d.shape[0]), d)

    def _append(self, ts: npt.NDArray[np.int64], delays: npt.NDArray[np.float64]) -> None:
        _append_prepared(self._window, self._running, PreparedEvents(ts, {"delay_ms": delays}))

    def metrics(self) -> Metrics:
        """Coverage and delay over the current window."""
        return self._metrics(*self._delays())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self, metrics: Collection[str] | None = None) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once.

        Parameters
        ----------
        metrics
            Names among ``METRICS`` to measure, None for all. With names, the two dicts hold
            ``n_labeled``, ``n_expired`` and those metrics (the errors: those metrics); the
            coverage comes from running counts, the delay quantiles from the window's rows.

        """
        if metrics is None:
            n, labeled = self._delays()
            return self._metrics(n, labeled), self._errors(n, labeled)
        wanted = _wanted(metrics, self.METRICS)
        n = self._window.length
        k = int(self._running.counts(self._window.rows)[0])
        values: Metrics = {"n_labeled": float(k), "n_expired": float(n - k)}
        errors: Metrics = dict.fromkeys(wanted)
        if "label_coverage" in wanted:
            values["label_coverage"] = k / n if n else None
            errors["label_coverage"] = _proportion_se(values["label_coverage"], n)
        quantiles = wanted.difference(("label_coverage",))
        if quantiles:
            n, labeled = self._delays()
            all_values, all_errors = self._metrics(n, labeled), self._errors(n, labeled)
            for name in quantiles:
                values[name], errors[name] = all_values[name], all_errors[name]
        return values, errors

    @staticmethod
    def _errors(n: int, labeled: npt.NDArray[np.float64]) -> Metrics:
        k = labeled.shape[0]
        out: Metrics = {
            "label_coverage": _proportion_se(k / n if n else None, n),
            "label_delay_p50_ms": None,
            "label_delay_p95_ms": None,
        }
        if k >= 2:
            p = np.array([0.5, 0.95])
            half = _Z95 * np.sqrt(p * (1.0 - p) / k)
            lower = np.quantile(labeled, np.clip(p - half, 0.0, 1.0))
            upper = np.quantile(labeled, np.clip(p + half, 0.0, 1.0))
            se50, se95 = (upper - lower) / (2.0 * _Z95)
            out["label_delay_p50_ms"] = float(se50)
            out["label_delay_p95_ms"] = float(se95)
        return out

    def _delays(self) -> tuple[int, npt.NDArray[np.float64]]:
        """Predictions in the window, and the delays of the labelled ones."""
        delay = np.asarray(self._window.rows()["delay_ms"], dtype=np.float64)
        return delay.shape[0], delay[~np.isnan(delay)]

    @staticmethod
    def _metrics(n: int, labeled: npt.NDArray[np.float64]) -> Metrics:
        k = labeled.shape[0]
        out: Metrics = {
            "label_coverage": k / n if n else None,
            "label_delay_p50_ms": None,
            "label_delay_p95_ms": None,
            "n_labeled": float(k),
            "n_expired": float(n - k),
        }
        if k:
            p50, p95 = np.quantile(labeled, [0.5, 0.95])
            out["label_delay_p50_ms"] = float(p50)
            out["label_delay_p95_ms"] = float(p95)
        return out

    def __repr__(self) -> str:
        return (
            f"LabelTracker(window={self.window!r}, size={self.size}, "
            f"duration_ms={self.duration_ms})"
        )


def _labeled_count(rows: Rows) -> npt.NDArray[np.int64]:
    delay = rows["delay_ms"]
    return np.array([delay.shape[0] - np.count_nonzero(np.isnan(delay))], dtype=np.int64)
