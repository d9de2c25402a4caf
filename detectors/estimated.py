"""Performance without labels: confidence-based performance estimation (CBPE) of a classifier.

A binary classifier's score is its probability that the event is of the positive class. If the
probabilities are calibrated, every prediction is right with a known probability, ``p`` for a
positive prediction and ``1 - p`` for a negative one, so the expected accuracy, precision,
recall, F1 and ROC AUC of a window follow from its scores alone, long before (or without) any
label. Inputs that move toward the decision boundary, or a score that loses its confidence,
lower the expected accuracy at once; a change in the relation of features to labels (concept
drift) is invisible to it, which is why the labels' KPIs and concept drift remain the authority
once labels come.

Calibration is learnt from labelled reference data (:class:`IsotonicCalibrator`, made by
``driftline profile`` from labelled training or validation rows). Without one, the scores are
assumed calibrated, and the estimates say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Estimate",
    "EstimateCheck",
    "IsotonicCalibrator",
    "PerformanceEstimator",
    "chance_right",
    "expected_metrics",
]

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class IsotonicCalibrator:
    """The probability that an event is positive, as a non-decreasing function of its score.

    Fitted by pool-adjacent-violators on labelled scores (equal scores pooled first), the
    calibration of scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``: between the
    scores it was fitted on it interpolates linearly, outside them it clips. Kept as the knots of
    that piecewise-linear function, at most two per block of the fit.

    Parameters
    ----------
    scores, probabilities
        The knots (scores increasing, probabilities non-decreasing).
    n
        Labelled events it was fitted on.
    positive_label
        The class the scores are the probability of (as the profile that holds it says).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> score = rng.random(5000)
    >>> label = rng.random(5000) < score**2  # over-confident: P(positive) is score squared
    >>> calibrator = IsotonicCalibrator.fit(score, label)
    >>> [round(float(p), 2) for p in calibrator.predict(np.array([0.1, 0.5, 0.9]))]
    [0.0, 0.23, 0.84]
    """

    def __init__(
        self,
        scores: npt.ArrayLike,
        probabilities: npt.ArrayLike,
        n: int,
        positive_label: str | int | bool | None = None,
    ) -> None:
        x = np.asarray(scores, dtype=np.float64)
        y = np.asarray(probabilities, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError("scores, probabilities: two 1-d arrays of one non-zero length")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("scores, probabilities: must be finite")
        if (np.diff(x) < 0).any() or (np.diff(y) < 0).any():
            raise ValueError("scores, probabilities: must be non-decreasing")
        if y[0] < 0 or y[-1] > 1:
            raise ValueError("probabilities: must lie in [0, 1]")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: must be a positive integer, got {n!r}")
        self.scores = x
        self.probabilities = y
        self.n = n
        self.positive_label = positive_label

    @classmethod
    def fit(
        cls,
        scores: npt.ArrayLike,
        labels: npt.ArrayLike,
        positive_label: str | int | bool | None = None,
    ) -> IsotonicCalibrator:
        """Fit on ``scores`` and whether each event was positive (rows with a NaN score are
        left out)."""
        s = np.asarray(scores, dtype=np.float64)
        positive = np.asarray(labels, dtype=np.float64)
        if s.shape != positive.shape or s.ndim != 1:
            raise ValueError("scores, labels: two 1-d arrays of one length")
        kept = ~np.isnan(s)
        s, positive = s[kept], positive[kept]
        if s.size == 0:
            raise ValueError("scores: no score to fit on")
        unique, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=positive) / counts
        fitted = _pool_adjacent_violators(means, counts.astype(np.float64))
        # Knots: the first and last score of each block of equal fitted values.
        change = np.flatnonzero(np.diff(fitted) != 0)
        ends = np.union1d(np.r_[0, change + 1], np.r_[change, unique.size - 1])
        return cls(unique[ends], fitted[ends], int(s.size), positive_label)

    def predict(self, scores: FloatArray) -> FloatArray:
        """The calibrated probability of each score (NaN stays NaN)."""
        out = np.interp(scores, self.scores, self.probabilities)
        return np.where(np.isnan(scores), np.nan, out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "isotonic",
            "scores": self.scores.tolist(),
            "probabilities": self.probabilities.tolist(),
            "n": self.n,
            "positive_label": self.positive_label,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IsotonicCalibrator:
        if data.get("method") != "isotonic":
            raise ValueError(f"malformed profile: calibration method {data.get('method')!r}")
        try:
            positive = data.get("positive_label")
            if positive is not None and not isinstance(positive, str | int | bool):
                raise ValueError(f"positive_label {positive!r} is not a label")
            return cls(data["scores"], data["probabilities"], int(data["n"]), positive)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed profile: calibration {exc!r}") from exc
        except ValueError as exc:
            raise ValueError(f"malformed profile: calibration {exc}") from exc

    def __repr__(self) -> str:
        return f"IsotonicCalibrator(knots={self.scores.size}, n={self.n})"


def _pool_adjacent_violators(values: FloatArray, weights: FloatArray) -> FloatArray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            pooled = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / pooled
            totals[-2] = pooled
            sizes[-2] += sizes[-1]
            del means[-1], totals[-1], sizes[-1]
    return np.repeat(np.array(means), sizes)


def chance_right(probabilities: FloatArray, predicted: BoolArray) -> FloatArray:
    """Each prediction's chance of being right: ``p`` where it predicted the positive class,
    ``1 - p`` where it did not."""
    return np.where(predicted, probabilities, 1.0 - probabilities)


def expected_metrics(
    probabilities: FloatArray, predicted: BoolArray, scores: FloatArray | None = None
) -> dict[str, float]:
    """Expected accuracy, precision, recall, F1 and ROC AUC of predictions whose chance of being
    positive is ``probabilities`` (calibrated), predicted positive where ``predicted``.

    Precision, recall and F1 are ratios of expected counts (``TP = sum p`` over the positive
    predictions, and so on); ROC AUC is the expected share of (positive, negative) pairs of
    distinct events that ``scores`` (default: the probabilities) order correctly, ties counting
    one half. Undefined ratios are NaN.

    Examples
    --------
    >>> p = np.array([0.9, 0.8, 0.3, 0.1])
    >>> m = expected_metrics(p, p > 0.5)
    >>> round(m["accuracy"], 3), round(m["precision"], 3), round(m["recall"], 3)
    (0.825, 0.85, 0.81)
    """
    p = probabilities
    n = p.shape[0]
    if n == 0:
        return dict.fromkeys(METRICS, math.nan)
    tp = float(p[predicted].sum())
    fp = float(predicted.sum()) - tp
    positives = float(p.sum())
    fn = positives - tp
    correct = chance_right(p, predicted)
    return {
        "accuracy": float(correct.mean()),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, positives),
        "f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "roc_auc": _expected_auc(p, p if scores is None else scores),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _expected_auc(p: FloatArray, scores: FloatArray) -> float:
    order = np.argsort(scores, kind="stable")
    s, q = scores[order], p[order]
    negative = 1.0 - q
    # Groups of tied scores: the negative weight strictly below each, and within it.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    group_negative = np.add.reduceat(negative, starts)
    below = np.r_[0.0, np.cumsum(group_negative)[:-1]]
    pairs = q * (below[group] + 0.5 * (group_negative[group] - negative))
    denominator = float(q.sum() * negative.sum() - (q * negative).sum())
    return _ratio(float(pairs.sum()), denominator)


@dataclass(frozen=True, slots=True)
class Estimate:
    """One evaluation of the current window.

    ``index`` is the row of the batch given to :meth:`PerformanceEstimator.update` whose
    arrival completed the cadence. ``metrics`` are the window's expected metrics and
    ``reference`` the reference's; ``accuracy_se`` is the standard error of the difference of
    their expected accuracies (both are means of each prediction's chance of being right), and
    ``realized_se`` that of the accuracy the window's labels will show, if the probabilities are
    calibrated. ``first_ms`` and ``last_ms`` bound the window's event times.
    """

    index: int
    n: int
    first_ms: int
    last_ms: int
    metrics: dict[str, float]
    reference: dict[str, float]
    n_reference: int
    accuracy_se: float
    realized_se: float


class PerformanceEstimator:
    """Confidence-based performance estimation of a binary classifier over a sliding window.

    The first ``reference_size`` scored predictions are the reference; after it, every
    ``every`` scored predictions the last ``window_size`` of them are evaluated. Predictions
    without a score are left out.

    Parameters
    ----------
    reference_size
        Scored predictions in the reference.
    window_size
        Scored predictions in the current window.
    every
        Evaluation cadence, in scored predictions after the reference.
    min_samples
        Fewest scored predictions in the window for an evaluation.
    calibrator
        The calibration of the scores, or None: the scores are taken as calibrated.

    Examples
    --------
    Scores that lose their confidence: the expected accuracy falls from about 0.83 to 0.78.

    >>> rng = np.random.default_rng(2)
    >>> estimator = PerformanceEstimator(reference_size=2000, window_size=1000, every=500)
    >>> def feed(beta, n):
    ...     confidence = 0.5 + 0.5 * rng.beta(beta, 1.0, n)
    ...     positive = rng.random(n) < 0.3
    ...     score = np.where(positive, confidence, 1.0 - confidence)
    ...     return estimator.update(score, positive)
    >>> [(e.index, round(e.metrics["accuracy"], 3)) for e in feed(2.0, 3000)]
    [(2499, 0.836), (2999, 0.839)]
    >>> round(estimator.reference["accuracy"], 3)
    0.833
    >>> [(e.index, round(e.metrics["accuracy"], 3)) for e in feed(1.3, 2000)]
    [(499, 0.814), (999, 0.781), (1499, 0.781), (1999, 0.783)]
    """

    def __init__(
        self,
        reference_size: int = 5000,
        window_size: int = 1000,
        every: int = 250,
        min_samples: int = 200,
        calibrator: IsotonicCalibrator | None = None,
    ) -> None:
        for name, value, least in (
            ("reference_size", reference_size, 10),
            ("window_size", window_size, 10),
            ("every", every, 1),
            ("min_samples", min_samples, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: must be an integer >= {least}, got {value!r}")
        if calibrator is not None and not isinstance(calibrator, IsotonicCalibrator):
            raise ValueError("calibrator: an IsotonicCalibrator or None")
        self.reference_size = reference_size
        self.window_size = window_size
        self.every = every
        self.min_samples = min_samples
        self.calibrator = calibrator

        # The reference's scores and classes while it fills (allocated at the first score),
        # then only its metrics and the variance of its chance of a right prediction.
        self._fill_scores = np.empty(0, dtype=np.float32)
        self._fill_predicted = np.empty(0, dtype=np.bool_)
        self._filled = 0
        self._reference: dict[str, float] | None = None
        self._reference_variance = 0.0
        # The window: a ring of scores (float32, as the data-drift windows hold values),
        # predicted classes and event times; probabilities are computed when it is evaluated.
        self._scores = np.zeros(window_size, dtype=np.float32)
        self._predicted = np.zeros(window_size, dtype=np.bool_)
        self._ts = np.zeros(window_size, dtype=np.int64)
        self._end = 0  # scored predictions written to the ring
        self._latest: Estimate | None = None

    @property
    def calibrated(self) -> bool:
        """Whether a calibrator maps the scores (else they are taken as calibrated)."""
        return self.calibrator is not None

    @property
    def reference(self) -> dict[str, float] | None:
        """The reference's expected metrics (None while it fills)."""
        return self._reference

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held: ``13 * window_size``, plus ``5 * reference_size`` while
        the reference fills."""
        arrays = (self._fill_scores, self._fill_predicted, self._scores, self._predicted, self._ts)
        return sum(a.nbytes for a in arrays)

    @property
    def latest(self) -> Estimate | None:
        """The last evaluation."""
        return self._latest

    def update(
        self,
        scores: npt.ArrayLike,
        predicted: npt.ArrayLike,
        timestamps_ms: npt.ArrayLike | None = None,
    ) -> list[Estimate]:
        """Add a batch: each prediction's score (its probability of the positive class, NaN for
        none), whether it predicted the positive class, and its event time (default: its
        position). Returns the evaluations it completed."""
        s = np.asarray(scores, dtype=np.float64)
        yhat = np.asarray(predicted, dtype=np.bool_)
        ts = (
            np.arange(s.shape[0], dtype=np.int64)
            if timestamps_ms is None
            else np.asarray(timestamps_ms, dtype=np.int64)
        )
        if s.ndim != 1 or s.shape != yhat.shape or s.shape != ts.shape:
            raise ValueError("scores, predicted, timestamps_ms: 1-d arrays of one length")
        rows = np.flatnonzero(~np.isnan(s))
        s32, yhat, ts = s[rows].astype(np.float32), yhat[rows], ts[rows]
        taken = 0
        if self._reference is None:
            taken = min(s32.size, self.reference_size - self._filled)
            self._fill(s32[:taken], yhat[:taken])
        estimates = []
        every = self.every
        done = taken
        # The ring is written up to each cadence point, then evaluated.
        lag = self._end % every
        for j in range(taken + every - 1 - lag, s32.size, every):
            self._write(s32[done : j + 1], yhat[done : j + 1], ts[done : j + 1])
            done = j + 1
            estimate = self._evaluate(int(rows[j]))
            if estimate is not None:
                estimates.append(estimate)
        self._write(s32[done:], yhat[done:], ts[done:])
        if estimates:
            self._latest = estimates[-1]
        return estimates

    def _write(
        self, scores: npt.NDArray[np.float32], predicted: BoolArray, ts: npt.NDArray[np.int64]
    ) -> None:
        size = self.window_size
        b = scores.shape[0]
        kept = min(b, size)
        at = (self._end + b - kept) % size
        first = min(kept, size - at)
        for ring, block in ((self._scores, scores), (self._predicted, predicted), (self._ts, ts)):
            ring[at : at + first] = block[b - kept : b - kept + first]
            ring[: kept - first] = block[b - kept + first :]
        self._end += b

    def _fill(self, scores: npt.NDArray[np.float32], predicted: BoolArray) -> None:
        if not self._fill_scores.size:
            self._fill_scores = np.zeros(self.reference_size, dtype=np.float32)
            self._fill_predicted = np.zeros(self.reference_size, dtype=np.bool_)
        at = self._filled
        self._fill_scores[at : at + scores.size] = scores
        self._fill_predicted[at : at + scores.size] = predicted
        self._filled += scores.size
        if self._filled < self.reference_size:
            return
        scores64 = self._fill_scores.astype(np.float64)
        p, fill_predicted = self.probabilities(scores64), self._fill_predicted
        self._reference = expected_metrics(p, fill_predicted, scores64)
        self._reference_variance = float(chance_right(p, fill_predicted).var())
        self._fill_scores = np.empty(0, dtype=np.float32)
        self._fill_predicted = np.empty(0, dtype=np.bool_)

    def probabilities(self, scores: FloatArray) -> FloatArray:
        """The calibrated probability of the positive class of each score (the scores
        themselves without a calibrator)."""
        return scores if self.calibrator is None else self.calibrator.predict(scores)

    def _evaluate(self, index: int) -> Estimate | None:
        n = min(self._end, self.window_size)
        if n < self.min_samples or self._reference is None:
            return None
        scores = self._scores[:n].astype(np.float64)
        p, predicted = self.probabilities(scores), self._predicted[:n]
        metrics = expected_metrics(p, predicted, scores)
        correct = chance_right(p, predicted)
        accuracy_se = math.sqrt(
            float(correct.var(ddof=1)) / n + self._reference_variance / self.reference_size
        )
        realized_se = math.sqrt(float((correct * (1.0 - correct)).sum())) / n
        ts = self._ts[:n]
        return Estimate(
            index,
            n,
            int(ts.min()),
            int(ts.max()),
            metrics,
            self._reference,
            self.reference_size,
            accuracy_se,
            realized_se,
        )

    def __repr__(self) -> str:
        return (
            f"PerformanceEstimator(reference_size={self.reference_size}, "
            f"window_size={self.window_size}, every={self.every}, "
            f"calibrated={self.calibrated}, ready={self._reference is not None})"
        )


class EstimateCheck:
    """How far the expected accuracy was from the realized one, over the last ``size`` labelled
    predictions: what makes an estimate worth trusting.

    Examples
    --------
    >>> check = EstimateCheck(size=3)
    >>> check.update(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]))
    >>> check.summary()
    {'n': 3, 'estimated_accuracy': 0.7, 'realized_accuracy': 0.666667, 'error': 0.033333}
    """

    def __init__(self, size: int = 1000) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size: must be a positive integer, got {size!r}")
        self.size = size
        self._expected = np.zeros(size)
        self._correct = np.zeros(size, dtype=np.bool_)
        self._end = 0

    def update(self, expected: FloatArray, correct: BoolArray) -> None:
        """Add labelled predictions: each one's chance of being right, and whether it was."""
        kept = ~np.isnan(expected)
        expected, correct = expected[kept], correct[kept]
        b = expected.shape[0]
        take = min(b, self.size)
        at = np.arange(self._end + b - take, self._end + b) % self.size
        self._expected[at] = expected[b - take :]
        self._correct[at] = correct[b - take :]
        self._end += b

    def summary(self) -> dict[str, float | int | None]:
        n = min(self._end, self.size)
        if n == 0:
            return {"n": 0, "estimated_accuracy": None, "realized_accuracy": None, "error": None}
        estimated = float(self._expected[:n].mean())
        realized = float(self._correct[:n].mean())
        return {
            "n": n,
            "estimated_accuracy": round(estimated, 6),
            "realized_accuracy": round(realized, 6),
            "error": round(estimated - realized, 6),
        }
