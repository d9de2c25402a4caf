"""Rolling KPI windows over labelled events: classification, regression, label coverage and delay.

A window is either the last ``size`` events (``window="count"``) or the events whose timestamp
is within ``duration_ms`` of the newest timestamp seen (``window="time"``: timestamps greater
than ``newest - duration_ms``, so a 60,000 ms window holds 60 s of events; events may arrive out
of order). Events are stored column-wise in numpy buffers and metrics are computed on demand.

To read metrics at points *inside* a batch (every 100 labelled events, say), update with
consecutive slices of the batch and call ``metrics()`` between them: the windows are the same as
after one update with the whole batch, and a slice costs a few numpy slice assignments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from detectors.labels import is_positive, labels_equal

__all__ = ["ClassificationKPIs", "LabelTracker", "RegressionKPIs", "WindowKind"]

WindowKind = Literal["count", "time"]
Labels = Sequence[object] | npt.NDArray[np.generic]
Metrics = dict[str, float | None]

_G = TypeVar("_G", bound=np.generic)

_INITIAL_TIME_CAPACITY = 1024
_EPS = float(np.finfo(np.float64).eps)
_Z95 = 1.96  # two-sided 95 % normal quantile, for the order-statistic interval of a quantile


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
    """Named numpy columns holding the rows of a count or time window, oldest first."""

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
        self._len = 0
        self._head = 0  # count windows: where the next row goes in the ring
        self._newest: int | None = None
        self._n_seen = 0

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def newest_ms(self) -> int | None:
        return self._newest

    def append(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[np.generic]]
    ) -> None:
        m = ts.shape[0]
        if m == 0:
            return
        newest = int(ts.max())
        self._newest = newest if self._newest is None else max(self._newest, newest)
        self._n_seen += m
        if self._count:
            self._append_ring(ts, cols, m)
        else:
            self._append_time(ts, cols, m)

    def _append_ring(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[np.generic]], m: int
    ) -> None:
        cap = self._size
        pairs = [(self._ts, ts), *((self._cols[k], cols[k]) for k in self._cols)]
        if m >= cap:
            for buf, src in pairs:
                buf[:] = src[m - cap :]
            self._head, self._len = 0, cap
            return
        first = min(m, cap - self._head)
        for buf, src in pairs:
            buf[self._head : self._head + first] = src[:first]
            buf[: m - first] = src[first:]
        self._head = (self._head + m) % cap
        self._len = min(self._len + m, cap)

    def _append_time(
        self, ts: npt.NDArray[np.int64], cols: Mapping[str, npt.NDArray[np.generic]], m: int
    ) -> None:
        if self._len + m > self._ts.shape[0]:
            # Drop the rows that left the window before growing: capacity stays within twice
            # the rows in the window.
            keep = self._ts[: self._len] > self._cutoff()
            k = int(keep.sum())
            self._ts[:k] = self._ts[: self._len][keep]
            for buf in self._cols.values():
                buf[:k] = buf[: self._len][keep]
            self._len = k
            if k + m > self._ts.shape[0]:
                capacity = max(2 * self._ts.shape[0], k + m)
                self._ts = _grown(self._ts, k, capacity)
                self._cols = {name: _grown(buf, k, capacity) for name, buf in self._cols.items()}
        end = self._len + m
        self._ts[self._len : end] = ts
        for name, buf in self._cols.items():
            buf[self._len : end] = cols[name]
        self._len = end

    def _cutoff(self) -> int:
        assert self._newest is not None
        return self._newest - self._duration

    def rows(self) -> dict[str, npt.NDArray[np.generic]]:
        """The window's columns, oldest row first (``"timestamp_ms"`` included)."""
        named = {"timestamp_ms": self._ts, **self._cols}
        if self._count:
            if self._len < self._size:
                return {k: v[: self._len] for k, v in named.items()}
            h = self._head
            return {k: np.concatenate((v[h:], v[:h])) for k, v in named.items()}
        if self._len == 0:
            return {k: v[:0] for k, v in named.items()}
        keep = self._ts[: self._len] > self._cutoff()
        return {k: v[: self._len][keep] for k, v in named.items()}


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

    Parameters
    ----------
    window
        ``"count"``: the last ``size`` events; ``"time"``: the events within ``duration_ms`` of
        the newest timestamp.
    size
        Length of a count window; unused by a time window.
    duration_ms
        Length of a time window, in milliseconds. A time window holds every event of that span,
        so its memory follows the traffic: about 20 bytes per event.
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

    """

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
        self._window = _Window(
            window,
            size,
            duration_ms,
            {"correct": np.bool_, "true_pos": np.bool_, "pred_pos": np.bool_, "score": np.float64},
        )

    @property
    def n_seen(self) -> int:
        """Events seen since creation, in or out of the window."""
        return self._window.n_seen

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
        n = len(y_true)
        if len(y_pred) != n:
            raise ValueError(f"y_pred: expected {n} predictions, got {len(y_pred)}")
        s = np.asarray(score, dtype=np.float64)
        if s.ndim != 1 or s.shape[0] != n:
            raise ValueError(f"score: expected {n} scores, got shape {s.shape}")
        present = s[~np.isnan(s)]
        if not ((present >= 0.0) & (present <= 1.0)).all():
            raise ValueError("score: must be a probability in [0, 1], or NaN when absent")
        ts = _timestamps(timestamps_ms, n)
        if n == 0:
            return
        self._window.append(
            ts,
            {
                "correct": labels_equal(y_true, y_pred),
                "true_pos": is_positive(y_true, self.positive_label),
                "pred_pos": is_positive(y_pred, self.positive_label),
                "score": s,
            },
        )

    def metrics(self) -> Metrics:
        """The KPIs over the current window."""
        return self._metrics(*self._columns())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once."""
        columns = self._columns()
        m = self._metrics(*columns)
        return m, self._errors(m, *columns)

    @staticmethod
    def _errors(
        m: Metrics,
        correct: npt.NDArray[np.bool_],
        true_pos: npt.NDArray[np.bool_],
        pred_pos: npt.NDArray[np.bool_],
        score: npt.NDArray[np.float64],
    ) -> Metrics:
        n = correct.shape[0]
        if n == 0:
            return dict.fromkeys(_CLASSIFICATION_METRICS)
        tp, fp, fn = _confusion(true_pos, pred_pos)
        q = tp / (tp + fp + fn) if tp + fp + fn else None
        f1_se = _proportion_se(q, tp + fp + fn)
        scored = ~np.isnan(score)
        log_loss, brier = _score_losses(score[scored], true_pos[scored])
        return {
            "accuracy": _proportion_se(m["accuracy"], n),
            "precision": _proportion_se(m["precision"], tp + fp),
            "recall": _proportion_se(m["recall"], tp + fn),
            "f1": None if q is None or f1_se is None else 2.0 / (1.0 + q) ** 2 * f1_se,
            "roc_auc": _roc_auc_standard_error(score[scored], true_pos[scored]),
            "log_loss": _mean_se(log_loss),
            "brier": _mean_se(brier),
            "positive_rate": _proportion_se(m["positive_rate"], n),
        }

    def _columns(
        self,
    ) -> tuple[
        npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.float64]
    ]:
        """The window's correct, true-positive-class, predicted-positive-class and score columns."""
        rows = self._window.rows()
        return (
            np.asarray(rows["correct"], dtype=np.bool_),
            np.asarray(rows["true_pos"], dtype=np.bool_),
            np.asarray(rows["pred_pos"], dtype=np.bool_),
            np.asarray(rows["score"], dtype=np.float64),
        )

    @staticmethod
    def _metrics(
        correct: npt.NDArray[np.bool_],
        true_pos: npt.NDArray[np.bool_],
        pred_pos: npt.NDArray[np.bool_],
        score: npt.NDArray[np.float64],
    ) -> Metrics:
        n = correct.shape[0]
        scored = ~np.isnan(score)
        out: Metrics = {"n": float(n), "n_scored": float(scored.sum())}
        if n == 0:
            out.update(dict.fromkeys(_CLASSIFICATION_METRICS))
            return out
        tp, fp, fn = _confusion(true_pos, pred_pos)
        out["accuracy"] = float(correct.mean())
        out["precision"] = tp / (tp + fp) if tp + fp else None
        out["recall"] = tp / (tp + fn) if tp + fn else None
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        s, y = score[scored], true_pos[scored]
        if s.size:
            out["roc_auc"] = _roc_auc(s, y)
            log_loss, brier = _score_losses(s, y)
            out["log_loss"] = float(np.mean(log_loss))
            out["brier"] = float(np.mean(brier))
        else:
            out["roc_auc"] = out["log_loss"] = out["brier"] = None
        out["positive_rate"] = float(pred_pos.mean())
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


_CLASSIFICATION_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "positive_rate",
)


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

    @property
    def n_seen(self) -> int:
        """Events seen since creation, in or out of the window."""
        return self._window.n_seen

    def update(
        self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, timestamps_ms: npt.ArrayLike
    ) -> None:
        """Add labelled events, oldest first: outcomes, predictions, epoch milliseconds."""
        t = _finite("y_true", y_true)
        n = t.shape[0]
        p = _finite("y_pred", y_pred, n)
        ts = _timestamps(timestamps_ms, n)
        self._window.append(ts, {"y_true": t, "y_pred": p})

    def metrics(self) -> Metrics:
        """The KPIs over the current window."""
        return self._metrics(*self._columns())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once."""
        t, p = self._columns()
        m = self._metrics(t, p)
        return m, self._errors(m, t, p)

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
        r2_se = None
        if m["r2"] is not None:
            centred = t - t.mean()
            centred_sq = centred * centred
            variance = float(centred_sq.mean())
            unexplained = float(squared.sum()) / float(centred_sq.sum())  # 1 - R², unrounded
            influence = squared - unexplained * centred_sq
            r2_se = float(np.std(influence, ddof=1)) / (math.sqrt(n) * variance)
        return {
            "mae": _mean_se(abs_err),
            "rmse": mse_se / (2.0 * rmse) if rmse > 0.0 else 0.0,
            "mape": _mean_se(abs_err[nonzero] / np.abs(t[nonzero])),
            "r2": r2_se,
        }

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
        centred = t - t.mean()
        ss_tot = float(np.dot(centred, centred))
        out["r2"] = 1.0 - float(np.dot(err, err)) / ss_tot if n >= 2 and ss_tot > 0.0 else None
        return out

    def __repr__(self) -> str:
        return (
            f"RegressionKPIs(window={self.window!r}, size={self.size}, "
            f"duration_ms={self.duration_ms})"
        )


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

    def __init__(
        self, window: WindowKind = "count", size: int = 1000, duration_ms: int | None = None
    ) -> None:
        _check_window(window, size, duration_ms)
        self.window = window
        self.size = size
        self.duration_ms = duration_ms
        self._window = _Window(window, size, duration_ms, {"delay_ms": np.float64})

    @property
    def n_seen(self) -> int:
        """Predictions seen since creation, labelled or expired."""
        return self._window.n_seen

    def update_labeled(self, delays_ms: npt.ArrayLike, timestamps_ms: npt.ArrayLike) -> None:
        """Add predictions that got their outcome, with the delay of each, in milliseconds."""
        d = _finite("delays_ms", delays_ms)
        ts = _timestamps(timestamps_ms, d.shape[0])
        self._window.append(ts, {"delay_ms": d})

    def update_expired(self, n: int, timestamps_ms: npt.ArrayLike) -> None:
        """Add ``n`` predictions that aged out without an outcome, one timestamp each."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n: must be an integer >= 0, got {n!r}")
        ts = _timestamps(timestamps_ms, int(n))
        self._window.append(ts, {"delay_ms": np.full(int(n), np.nan)})

    def metrics(self) -> Metrics:
        """Coverage and delay over the current window."""
        return self._metrics(*self._delays())

    def standard_errors(self) -> Metrics:
        """Standard errors of the ``metrics()`` over the current window (see the class notes)."""
        return self.measure()[1]

    def measure(self) -> tuple[Metrics, Metrics]:
        """``metrics()`` and ``standard_errors()`` at once, reading the window once."""
        n, labeled = self._delays()
        return self._metrics(n, labeled), self._errors(n, labeled)

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
