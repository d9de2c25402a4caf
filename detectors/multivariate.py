"""Joint drift: features whose relation changed while each one alone still looks the same.

Every univariate test compares one feature's distribution with its reference; two features that
become strongly correlated while their marginals stay put pass all of them.
:class:`CorrelationDrift` compares the rank correlation (Spearman) of every pair of numeric
features in the current window with the reference's. Ranks make the test blind to the shape of
each marginal (a skewed or heavy-tailed feature does not inflate it) and cost one sort per
column.

For one pair the test is the two-sample comparison of Fisher-transformed correlations:
``z = atanh(r)`` is close to normal with variance ``1.06 / (n - 3)`` for Spearman's ``r``
(Fieller, Hartley & Pearson, 1957), so ``(z_now - z_ref) / sqrt(1.06/(n_now-3) + 1.06/(n_ref-3))``
is standard normal while the relation is unchanged. The evaluation flags a drift when the
smallest two-sided p-value of the ``d (d - 1) / 2`` pairs is below ``false_alarm_rate`` divided by
that number (Bonferroni): at most ``false_alarm_rate`` false alarms per evaluation of a stationary
stream, whatever the number of features. The evidence ranks the pairs, and the features by their
strongest pair.

The reference is kept as its correlation matrix and its row count (:class:`FeatureCorrelation`,
part of a model's reference and of its profile): ``d²`` floats, nothing else. One evaluation of
15 features over a 1,000-event window costs about 0.9 ms (two sorts of each feature's values and
a 15x1000 matrix product). :class:`~detectors.data_drift.DataDriftMonitor` runs it on its own
window and cadence (``joint_alpha``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CorrelationDrift",
    "CorrelationTest",
    "FeatureCorrelation",
    "PairChange",
    "spearman_matrix",
    "spearman_rows",
]

_SPEARMAN_VARIANCE = 1.06  # of atanh(r) times (n - 3), Fieller, Hartley & Pearson (1957)
_MAX_NULL_SHARE = 0.5  # a column with more missing values than this sits the test out
_EVIDENCE_PAIRS = 10


def _ranks(features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Average ranks along each row of ``features`` (one row per feature: sorting contiguous
    rows is several times faster than sorting columns); ties share their mean rank."""
    n = features.shape[1]
    order = np.argsort(features, axis=1)  # ties are averaged below: stability is not needed
    sorted_values = np.take_along_axis(features, order, axis=1)
    position = np.arange(n, dtype=np.float64)
    ranks = np.empty(features.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, position[None, :], axis=1)
    # Rows with ties: every member of a run of equal values gets the run's mean position.
    for i in np.flatnonzero((sorted_values[:, 1:] == sorted_values[:, :-1]).any(axis=1)).tolist():
        row = sorted_values[i]
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        lengths = np.diff(np.r_[starts, n])
        ranks[i, order[i]] = np.repeat(position[starts] + (lengths - 1) / 2.0, lengths)
    return ranks


def spearman_rows(features: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], int]:
    """Spearman's matrix of the rows of ``features`` (one row per feature, one column per
    event) over the events without a missing value, and their number."""
    complete = features[:, ~np.isnan(features).any(axis=0)]
    d, n = complete.shape
    if n < 2:
        return np.eye(d), n
    ranks = _ranks(complete)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.sqrt((ranks * ranks).sum(axis=1))
    constant = norms == 0
    norms[constant] = 1.0
    r = (ranks @ ranks.T) / np.outer(norms, norms)
    r[constant, :] = 0.0
    r[:, constant] = 0.0
    np.fill_diagonal(r, 1.0)
    return np.clip(r, -1.0, 1.0), n


def spearman_matrix(values: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], int]:
    """Spearman's correlation matrix of the columns of ``values`` over the rows without a
    missing value (NaN), and the number of those rows. A constant column correlates 0.

    >>> x = np.array([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0], [4.0, 40.0]])
    >>> r, n = spearman_matrix(x)
    >>> round(float(r[0, 1]), 3), n
    (0.8, 4)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values: expected a 2-D array, got shape {x.shape}")
    return spearman_rows(np.ascontiguousarray(x.T))


@dataclass(frozen=True, slots=True, eq=False)
class FeatureCorrelation:
    """The Spearman matrix of a reference's numeric features, over its ``n`` complete rows.

    Features missing in more than half of the reference's rows are left out (they would leave
    too few complete rows); ``features`` names the rows and columns of ``matrix``.

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [np.nan] * 4])
    >>> c = FeatureCorrelation.of(["a", "b", "gone"], x)
    >>> c.features, round(float(c.matrix[0, 1]), 2), c.n
    (('a', 'b'), 0.8, 4)
    >>> FeatureCorrelation.from_dict(c.to_dict()).matrix.tolist() == c.matrix.tolist()
    True
    """

    features: tuple[str, ...]
    matrix: npt.NDArray[np.float64]
    n: int

    @classmethod
    def of(cls, names: Sequence[str], features: npt.NDArray[Any]) -> FeatureCorrelation | None:
        """The correlation of the rows of ``features`` (one per name, one column per event);
        None with fewer than two features to correlate."""
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[0] != len(names):
            raise ValueError(f"expected {len(names)} feature rows, got shape {x.shape}")
        if x.shape[1] == 0:
            return None
        kept = np.flatnonzero(np.isnan(x).mean(axis=1) <= _MAX_NULL_SHARE).tolist()
        if len(kept) < 2:
            return None
        matrix, n = spearman_rows(x[kept].astype(np.float64))
        return cls(tuple(names[i] for i in kept), matrix, n)

    def restricted(self, names: Sequence[str]) -> FeatureCorrelation | None:
        """The correlation of those of ``names`` it has, in the order of ``names``; None with
        fewer than two."""
        index = {name: i for i, name in enumerate(self.features)}
        kept = [name for name in names if name in index]
        if len(kept) < 2:
            return None
        rows = [index[name] for name in kept]
        return FeatureCorrelation(tuple(kept), self.matrix[np.ix_(rows, rows)], self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "matrix": self.matrix.tolist(), "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureCorrelation:
        try:
            features = tuple(str(name) for name in data["features"])
            matrix = np.array(data["matrix"], dtype=np.float64)
            n = int(data["n"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed profile: correlation {exc!r}") from exc
        d = len(features)
        if matrix.shape != (d, d) or len(set(features)) != d or n < 0:
            raise ValueError(
                f"malformed profile: correlation of {d} features has a {matrix.shape} matrix"
            )
        return cls(features, matrix, n)


@dataclass(frozen=True, slots=True)
class PairChange:
    """One pair of features: its correlation in the reference and now, and the test."""

    feature_a: str
    feature_b: str
    reference: float
    current: float
    neg_log10_p: float


@dataclass(frozen=True, slots=True)
class CorrelationTest:
    """One evaluation: ``statistic`` (the largest ``-log10 p`` of the pairs) against
    ``threshold``; the ten pairs that changed most, strongest first; the rows used; the number
    of pairs the false-alarm rate is split over."""

    statistic: float
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int
    pairs: tuple[PairChange, ...]
    pairs_tested: int = 0

    @property
    def features(self) -> list[str]:
        """The features of the changed pairs, each once, from its strongest pair down."""
        out: list[str] = []
        for pair in self.pairs:
            if pair.neg_log10_p < self.threshold:
                break
            for name in (pair.feature_a, pair.feature_b):
                if name not in out:
                    out.append(name)
        return out


class CorrelationDrift:
    """A change in the rank correlation of any pair of numeric features.

    Parameters
    ----------
    features
        The names of the columns, in order.
    false_alarm_rate
        Bound on the probability that one evaluation of a stationary window flags a drift, over
        all pairs together. In (0, 1).
    min_samples
        Fewest complete rows (no missing value among the tested columns) on either side for the
        test to run.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> detector = CorrelationDrift(["x1", "x2", "x3"])
    >>> detector.fit(rng.standard_normal((5000, 3)))
    >>> detector.test(rng.standard_normal((1000, 3))).drifted
    False
    >>> x1 = rng.standard_normal(1000)
    >>> x2 = 0.9 * x1 + np.sqrt(1 - 0.81) * rng.standard_normal(1000)  # still N(0, 1)
    >>> result = detector.test(np.column_stack([x1, x2, rng.standard_normal(1000)]))
    >>> result.drifted, result.features
    (True, ['x1', 'x2'])
    """

    def __init__(
        self,
        features: list[str],
        false_alarm_rate: float = 1e-6,
        min_samples: int = 100,
    ) -> None:
        if len(features) < 2 or len(set(features)) != len(features):
            raise ValueError("features: at least two distinct names")
        if not (isinstance(false_alarm_rate, float | int) and 0 < false_alarm_rate < 1):
            raise ValueError(f"false_alarm_rate: must be in (0, 1), got {false_alarm_rate!r}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 10:
            raise ValueError(f"min_samples: must be an integer >= 10, got {min_samples!r}")
        self.features = list(features)
        self.false_alarm_rate = float(false_alarm_rate)
        self.min_samples = min_samples
        self._reference: npt.NDArray[np.float64] | None = None
        self._n_reference = 0

    @property
    def fitted(self) -> bool:
        """Whether a reference was fitted (with enough complete rows)."""
        return self._reference is not None

    @property
    def reference(self) -> npt.NDArray[np.float64] | None:
        """The reference's Spearman correlation matrix."""
        return self._reference

    def fit(self, reference: npt.ArrayLike) -> None:
        """Learn the reference correlations from its rows (one column per feature)."""
        self.fit_features(self._features_major(reference))

    def fit_features(self, features: npt.NDArray[Any]) -> None:
        """:meth:`fit` with the reference feature-major: one row per feature, one column per
        event (as a model's reference array holds it)."""
        self.fit_matrix(*spearman_rows(np.asarray(features, dtype=np.float64)))

    def fit_matrix(self, correlation: npt.NDArray[np.float64], n: int) -> None:
        """Take a reference correlation matrix (Spearman's, of ``n`` complete rows)."""
        r = np.asarray(correlation, dtype=np.float64)
        d = len(self.features)
        if r.shape != (d, d):
            raise ValueError(f"correlation: expected a {d}x{d} matrix, got {r.shape}")
        if n < self.min_samples:
            raise ValueError(
                f"reference: {n} complete rows, fewer than min_samples={self.min_samples}"
            )
        self._reference, self._n_reference = r, int(n)

    def test(self, window: npt.ArrayLike) -> CorrelationTest:
        """Compare the window's correlations with the reference's (rows of the window, one
        column per feature)."""
        return self.test_features(self._features_major(window))

    def test_features(self, features: npt.NDArray[Any]) -> CorrelationTest:
        """:meth:`test` with the window feature-major (one row per feature), as a ring of
        recent events holds it."""
        if self._reference is None:
            raise ValueError("fit a reference first")
        x = np.asarray(features)
        d = x.shape[0]
        if x.ndim != 2 or d != len(self.features):
            raise ValueError(f"expected {len(self.features)} feature rows, got shape {x.shape}")
        m = d * (d - 1) // 2
        threshold = -math.log10(self.false_alarm_rate / m)
        # Features mostly missing in the window sit out, so they do not empty it of events.
        kept = np.flatnonzero(np.isnan(x).mean(axis=1) <= _MAX_NULL_SHARE)
        if kept.size < 2:
            return CorrelationTest(0.0, threshold, False, self._n_reference, 0, (), m)
        r_now, n = spearman_rows(x[kept].astype(np.float64))
        if n < self.min_samples:
            return CorrelationTest(0.0, threshold, False, self._n_reference, n, (), m)
        r_ref = self._reference[np.ix_(kept, kept)]
        scale = math.sqrt(
            _SPEARMAN_VARIANCE / (n - 3) + _SPEARMAN_VARIANCE / (self._n_reference - 3)
        )
        limit = 1 - 1e-12  # atanh(+-1) is infinite
        z = np.arctanh(np.clip(r_now, -limit, limit)) - np.arctanh(np.clip(r_ref, -limit, limit))
        i, j = np.triu_indices(kept.size, k=1)
        strength = np.abs(z[i, j]) / scale
        # The p-values of the strongest pairs only: the evidence, and the statistic.
        order = np.argsort(-strength, kind="stable")[:_EVIDENCE_PAIRS].tolist()
        names = self.features
        pairs = tuple(
            PairChange(
                names[kept[i[k]]],
                names[kept[j[k]]],
                float(r_ref[i[k], j[k]]),
                float(r_now[i[k], j[k]]),
                _neg_log10_two_sided(float(strength[k])),
            )
            for k in order
        )
        statistic = pairs[0].neg_log10_p
        drifted = statistic > threshold
        return CorrelationTest(statistic, threshold, drifted, self._n_reference, n, pairs, m)

    def _features_major(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"expected rows of {len(self.features)} features, got shape {x.shape}"
            )
        return np.ascontiguousarray(x.T)

    def __repr__(self) -> str:
        return (
            f"CorrelationDrift(features={len(self.features)}, "
            f"false_alarm_rate={self.false_alarm_rate}, min_samples={self.min_samples}, "
            f"fitted={self.fitted})"
        )


def _neg_log10_two_sided(a: float) -> float:
    """-log10 of the two-sided standard normal p-value of ``|z| = a``: exact while ``erfc``
    does not underflow, its asymptotic tail ``2 φ(a) / a`` beyond."""
    p = math.erfc(a / math.sqrt(2.0))
    if p > 1e-290:
        return -math.log10(p)
    log_p = math.log(2.0) - a * a / 2.0 - math.log(a * math.sqrt(2.0 * math.pi))
    return -log_p / math.log(10.0)
