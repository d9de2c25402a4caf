"""Distribution statistics for drift tests: pure functions on numpy arrays, numpy and ``math`` only.

Every p-value here is computed from its survival function directly (never as ``1 - cdf``), so
it stays accurate far into the tail (relative error ~1e-12 down to 1e-300), where the
multiple-testing thresholds of the drift monitors live.
"""

from __future__ import annotations

import math

import numpy as np

_TINY = 1e-300
_SERIES_EPS = 1e-16
_MAX_TERMS = 100_000


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin of ``edges`` (ascending, ``len(edges) - 1`` bins).

    Bins are ``[edges[i], edges[i+1])``, the last one closed on the right (the convention of
    ``np.histogram``). NaN and values outside ``[edges[0], edges[-1]]`` are not counted, so with
    outer edges at -inf/+inf every finite value is.

    >>> bin_counts(np.array([0.5, 1.0, 2.0, np.nan, 9.0]), np.array([-np.inf, 1.0, 2.0, np.inf]))
    array([1, 1, 2])
    """
    k = edges.shape[0] - 1
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = k - 1
    keep = (index >= 0) & (index < k) & ~np.isnan(values)
    return np.bincount(index[keep], minlength=k)


def bin_counts_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """:func:`bin_counts` of values already sorted ascending without NaN, in O(bins log n).

    >>> bin_counts_sorted(np.array([0.5, 1.0, 2.0, 9.0]), np.array([-np.inf, 1.0, 2.0, np.inf]))
    array([1, 1, 2])
    """
    below = np.searchsorted(sorted_values, edges, side="left")
    below[-1] = np.searchsorted(sorted_values, edges[-1], side="right")
    return np.diff(below)


def quantiles_sorted(sorted_values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of sorted values, linear interpolation (``np.quantile``'s default method),
    without its per-call overhead. Empty input gives NaN.

    >>> quantiles_sorted(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 0.5, 1.0])).tolist()
    [1.0, 2.5, 4.0]
    """
    n = sorted_values.shape[0]
    if n == 0:
        return np.full(probs.shape[0], np.nan)
    position = probs * (n - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = position - lo
    a, b = sorted_values[lo], sorted_values[hi]
    return np.asarray(np.where(frac > 0, a + (b - a) * frac, a))


def quantile_edges(sorted_values: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges: the distinct ``1/n_bins, ..., (n_bins-1)/n_bins`` quantiles of sorted
    values, taken as observed values (inverted CDF) so a discrete feature gets edges on its
    atoms, never between them.

    >>> quantile_edges(np.array([0.0] * 7 + [1.0] * 3), 10).tolist()
    [0.0, 1.0]
    """
    n = sorted_values.shape[0]
    if n == 0:
        return np.empty(0)
    ranks = np.ceil(np.arange(1, n_bins) * (n / n_bins)).astype(np.int64) - 1
    return np.unique(sorted_values[np.clip(ranks, 0, n - 1)])


def psi(ref_props: np.ndarray, cur_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index of ``cur_counts`` against reference proportions.

    ``sum((q - p) * ln(q / p))`` over bins, after additive smoothing of both proportion vectors
    (``(p + eps) / (1 + k * eps)``) so empty bins give a finite value. NaN when there are no
    current counts.

    >>> round(psi(np.array([0.5, 0.5]), np.array([50, 50])), 12)
    0.0
    """
    ref = np.asarray(ref_props, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    total_ref, total_cur = ref.sum(), cur.sum()
    if total_cur <= 0 or total_ref <= 0:
        return math.nan
    k = ref.shape[0]
    p = (ref / total_ref + eps) / (1.0 + k * eps)
    q = (cur / total_cur + eps) / (1.0 + k * eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two histograms, each normalised to 1.

    >>> js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return math.nan
    a = a / a.sum()
    b = b / b.sum()
    m = 0.5 * (a + b)
    divergence = 0.5 * (_kl_base2(a, m) + _kl_base2(b, m))
    return float(math.sqrt(min(max(divergence, 0.0), 1.0)))


def _kl_base2(a: np.ndarray, m: np.ndarray) -> float:
    nz = a > 0
    return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))


def ks_2samp(
    ref_sorted: np.ndarray, cur: np.ndarray, *, n_ref: int | None = None
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: statistic D and two-sided asymptotic p-value.

    ``ref_sorted`` must be sorted ascending; ``cur`` need not be. NaN must be removed first.
    The p-value is the Kolmogorov survival function at Stephens' corrected
    ``lambda = (sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D`` with ``ne = n * m / (n + m)``.
    ``n_ref`` is the size of the sample that ``ref_sorted`` stands for when it is a sketch
    (evenly spaced order statistics) of a larger reference: D is computed on the sketch, the
    sample size on the full reference. Empty input gives ``(0.0, 1.0)``: no evidence.

    Ties make the test conservative (the p-value is too large), never anti-conservative.

    >>> rng = np.random.default_rng(0)
    >>> d, p = ks_2samp(np.sort(rng.normal(size=2000)), rng.normal(0.5, 1.0, size=500))
    >>> round(d, 3), p < 1e-12
    (0.193, True)
    """
    d, p, _ = ks_wasserstein(ref_sorted, np.sort(cur), n_ref=n_ref)
    return d, p


def wasserstein_1d(ref_sorted: np.ndarray, cur: np.ndarray) -> float:
    """First Wasserstein (earth mover's) distance between two samples, in the data's units.

    ``ref_sorted`` sorted ascending, ``cur`` any order, no NaN. NaN when either is empty.

    >>> wasserstein_1d(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    2.0
    """
    u = np.asarray(ref_sorted, dtype=np.float64)
    v = np.sort(np.asarray(cur, dtype=np.float64))
    if u.shape[0] == 0 or v.shape[0] == 0:
        return math.nan
    return ks_wasserstein(u, v)[2]


def ks_wasserstein(
    ref_sorted: np.ndarray, cur_sorted: np.ndarray, *, n_ref: int | None = None
) -> tuple[float, float, float]:
    """KS statistic, KS p-value and Wasserstein distance of two *sorted* samples, in one pass.

    Both ECDFs are read off one stable merge of the two sorted samples (timsort merges two runs
    in linear time). See :func:`ks_2samp` for ``n_ref`` and the p-value. Either sample empty:
    ``(0.0, 1.0, nan)``.
    """
    ref = np.asarray(ref_sorted, dtype=np.float64)
    cur = np.asarray(cur_sorted, dtype=np.float64)
    n, m = ref.shape[0], cur.shape[0]
    if n == 0 or m == 0:
        return 0.0, 1.0, math.nan
    both = np.concatenate([ref, cur])
    order = np.argsort(both, kind="stable")
    merged = both[order]
    from_ref = order < n
    gap = np.abs(np.cumsum(from_ref) / n - np.cumsum(~from_ref) / m)
    # The ECDFs are right-continuous step functions: compare them after the last of equal values.
    last = np.empty(n + m, dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    d = float(gap[last].max())
    distance = float(np.dot(gap[:-1], np.diff(merged)))
    size = float(n if n_ref is None else n_ref)
    root = math.sqrt(size * m / (size + m))
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d), distance


def kolmogorov_sf(x: float) -> float:
    """Survival function of the Kolmogorov distribution, ``P(K > x)``.

    For ``x >= 1`` the alternating series ``2 * sum (-1)^(k-1) exp(-2 k^2 x^2)`` is summed
    directly (its first term dominates in the tail, so tiny values keep full relative
    precision); below 1 the Jacobi-theta form of the CDF converges fast and ``1 - cdf`` loses
    nothing because the value is not small there.

    >>> round(kolmogorov_sf(1.3581), 4)
    0.05
    """
    if not x > 0.0:
        return 1.0
    if x < 1.0:
        w = math.pi * math.pi / (8.0 * x * x)
        total = 0.0
        for k in range(1, _MAX_TERMS):
            term = math.exp(-((2 * k - 1) ** 2) * w)
            total += term
            if term <= _SERIES_EPS * total:
                break
        return min(1.0, max(0.0, 1.0 - math.sqrt(2.0 * math.pi) / x * total))
    total = 0.0
    sign = 1.0
    for k in range(1, _MAX_TERMS):
        term = math.exp(-2.0 * k * k * x * x)
        total += sign * term
        if term <= _SERIES_EPS * abs(total):
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def chi2_sf(statistic: float, dof: int) -> float:
    """``P(X > statistic)`` for ``X ~ chi-square(dof)``; 1.0 when ``dof < 1``.

    >>> round(chi2_sf(3.841458820694124, 1), 6)
    0.05
    """
    if dof < 1 or not statistic > 0.0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    return gammaincc(0.5 * dof, 0.5 * statistic)


def gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x)``, ``a > 0``, ``x >= 0``.

    Series for ``P`` when ``x < a + 1`` (then ``Q`` is not small and ``1 - P`` is exact enough),
    modified Lentz continued fraction for ``Q`` itself otherwise (accurate in the far tail).
    """
    if x <= 0.0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(_MAX_TERMS):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _SERIES_EPS:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_prefactor)))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _SERIES_EPS:
            break
    return min(1.0, max(0.0, math.exp(log_prefactor) * h))


def chi_square(ref_props: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Goodness of fit of ``cur_counts`` to the reference proportions: (statistic, p, dof).

    Cells with zero reference proportion and zero count are dropped; a count in a cell the
    reference gives zero probability makes the statistic infinite (p = 0). ``dof`` is the
    number of cells with positive expectation minus one. No counts: ``(0.0, 1.0, 0)``.

    >>> stat, p, dof = chi_square(np.array([0.5, 0.5]), np.array([60, 40]))
    >>> stat, round(p, 4), dof
    (4.0, 0.0455, 1)
    """
    props = np.asarray(ref_props, dtype=np.float64)
    counts = np.asarray(cur_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0 or props.sum() <= 0:
        return 0.0, 1.0, 0
    expected = props / props.sum() * total
    positive = expected > 0
    dof = int(positive.sum()) - 1
    if np.any(counts[~positive] > 0):
        return math.inf, 0.0, dof
    e = expected[positive]
    statistic = float(np.sum((counts[positive] - e) ** 2 / e))
    return statistic, chi2_sf(statistic, dof), dof


def chi_square_2samp(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Chi-square test of homogeneity of two count vectors (a 2 x k table): (statistic, p, dof).

    Unlike :func:`chi_square`, the reference is treated as the sample it is, so a category the
    reference never saw contributes a finite amount. Categories empty in both are dropped;
    ``dof = k' - 1``. Either sample empty: ``(0.0, 1.0, 0)``. Same as
    ``scipy.stats.chi2_contingency(..., correction=False)``.

    >>> stat, p, dof = chi_square_2samp(np.array([50, 50]), np.array([60, 40]))
    >>> round(stat, 4), round(p, 4), dof
    (2.0202, 0.1552, 1)
    """
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    n, m = ref.sum(), cur.sum()
    if n <= 0 or m <= 0:
        return 0.0, 1.0, 0
    column = ref + cur
    keep = column > 0
    ref, cur, column = ref[keep], cur[keep], column[keep]
    total = n + m
    e_ref = column * (n / total)
    e_cur = column * (m / total)
    statistic = float(np.sum((ref - e_ref) ** 2 / e_ref) + np.sum((cur - e_cur) ** 2 / e_cur))
    dof = int(column.shape[0]) - 1
    return statistic, chi2_sf(statistic, dof), dof


def normalized_wasserstein(ref_sorted: np.ndarray, cur: np.ndarray, scale: float) -> float:
    """:func:`wasserstein_1d` in units of ``scale`` (e.g. the reference standard deviation), so
    one threshold fits every feature; NaN when ``scale`` is not positive.

    >>> normalized_wasserstein(np.array([0.0, 1.0]), np.array([2.0, 3.0]), 0.5)
    4.0
    """
    if not scale > 0.0:
        return math.nan
    return wasserstein_1d(ref_sorted, cur) / scale


# -- row-wise versions: one feature per row, for evaluating every feature of a model at once ----


def ks_wasserstein_rows(
    ref: np.ndarray,
    ref_sizes: np.ndarray,
    n_ref: np.ndarray,
    cur: np.ndarray,
    cur_sizes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ks_wasserstein` of every row pair at once: (D, p-value, Wasserstein) arrays.

    Row ``i`` of ``ref`` holds ``ref_sizes[i]`` sorted values then padding, row ``i`` of
    ``cur`` holds ``cur_sizes[i]`` sorted values then padding; padding is +inf or NaN (both
    sort after every finite value). ``n_ref[i]`` is the reference sample size for the p-value.
    Rows with an empty side give ``(0.0, 1.0, nan)``.
    """
    n_rows, width = ref.shape[0], ref.shape[1] + cur.shape[1]
    both = np.concatenate([ref, cur], axis=1)
    order = np.argsort(both, axis=1, kind="stable")
    merged = np.take_along_axis(both, order, axis=1)
    from_ref = order < ref.shape[1]
    total = ref_sizes + cur_sizes
    position = np.arange(width)
    valid = position[None, :] < total[:, None]
    # Up to a valid position, every value is either from the reference or from the current
    # sample, so one running count gives both ECDFs.
    from_ref_so_far = np.cumsum(from_ref, axis=1, dtype=np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf_ref = from_ref_so_far / ref_sizes[:, None]
        cdf_cur = (position[None, :] + 1 - from_ref_so_far) / cur_sizes[:, None]
        gap = np.abs(cdf_ref - cdf_cur)
        steps = np.diff(merged, axis=1)
    # Right-continuous ECDFs: compare after the last of equal values; padding differs from any
    # value, so the last valid position always counts.
    last = np.ones((n_rows, width), dtype=bool)
    np.not_equal(merged[:, 1:], merged[:, :-1], out=last[:, :-1])
    last &= valid
    d = np.max(np.where(last, gap, 0.0), axis=1, initial=0.0)
    inner = position[None, :-1] < (total - 1)[:, None]
    with np.errstate(invalid="ignore"):  # rows with an empty side, set below
        distance = np.sum(np.where(inner, gap[:, :-1] * np.where(inner, steps, 0.0), 0.0), axis=1)
    p = np.ones(n_rows)
    for i in range(n_rows):
        n, m = float(n_ref[i]), float(cur_sizes[i])
        if ref_sizes[i] == 0 or m == 0:
            d[i], distance[i] = 0.0, math.nan
            continue
        root = math.sqrt(n * m / (n + m))
        p[i] = kolmogorov_sf((root + 0.12 + 0.11 / root) * float(d[i]))
    return d, p, distance


def bin_counts_rows(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """:func:`bin_counts` of every row of ``values`` (NaN = none) against the same row of
    ``edges``. A row whose last real edge is +inf may be padded with more +inf edges: its
    extra bins stay empty."""
    below = np.count_nonzero(values[:, :, None] < edges[:, None, :-1], axis=1)
    upto = np.count_nonzero(values <= edges[:, -1:], axis=1)
    return np.diff(np.concatenate([below, upto[:, None]], axis=1), axis=1)


def psi_rows(
    ref_props: np.ndarray, cur_counts: np.ndarray, n_bins: np.ndarray, eps: float = 1e-4
) -> np.ndarray:
    """:func:`psi` of every row; ``n_bins[i]`` real bins, the rest padding (zero on both
    sides, which contributes nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ref_props / ref_props.sum(axis=1, keepdims=True)
        q = cur_counts / cur_counts.sum(axis=1, keepdims=True)
        scale = (1.0 + n_bins * eps)[:, None]
        ps, qs = (p + eps) / scale, (q + eps) / scale
        return np.asarray(np.sum((qs - ps) * np.log(qs / ps), axis=1))


def js_distance_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`js_distance` of every row pair."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = p / p.sum(axis=1, keepdims=True)
        b = q / q.sum(axis=1, keepdims=True)
        m = 0.5 * (a + b)
        kl_a = np.where(a > 0, a * np.log2(a / m), 0.0).sum(axis=1)
        kl_b = np.where(b > 0, b * np.log2(b / m), 0.0).sum(axis=1)
    return np.asarray(np.sqrt(np.clip(0.5 * (kl_a + kl_b), 0.0, 1.0)))


def neg_log10(p: float) -> float:
    """``-log10(p)``, capped at 300 for p = 0 (underflow), the drift score of a p-value."""
    return -math.log10(max(p, _TINY))
