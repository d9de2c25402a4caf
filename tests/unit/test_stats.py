"""Distribution statistics, cross-checked against scipy (a test dependency only)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

import driftline.detectors.stats
from driftline.detectors.stats import (
    bin_counts,
    bin_counts_rows,
    bin_counts_sorted,
    chi2_sf,
    chi_square,
    chi_square_2samp,
    js_distance,
    js_distance_rows,
    kolmogorov_sf,
    ks_2samp,
    ks_wasserstein,
    ks_wasserstein_rows,
    neg_log10,
    normalized_wasserstein,
    psi,
    psi_rows,
    quantile_edges,
    quantiles_sorted,
    wasserstein_1d,
)

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_doctests() -> None:
    assert doctest.testmod(driftline.detectors.stats).failed == 0


# -- survival functions: relative error 1e-10 against scipy, deep into the tail ----------------


@pytest.mark.parametrize(
    "x", [0.01, 0.2, 0.5, 0.8, 0.99, 1.0, 1.01, 1.36, 2.0, 3.0, 5.0, 8.0, 18.0]
)
def test_kolmogorov_sf_matches_scipy(x: float) -> None:
    expected = scipy.special.kolmogorov(x)
    assert kolmogorov_sf(x) == pytest.approx(expected, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 7, 10, 49, 100, 500])
@pytest.mark.parametrize("statistic", [1e-3, 0.5, 1.0, 4.0, 10.0, 30.0, 100.0, 400.0, 1200.0])
def test_chi2_sf_matches_scipy(statistic: float, dof: int) -> None:
    expected = scipy.stats.chi2.sf(statistic, dof)
    assert chi2_sf(statistic, dof) == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(5.0, 0) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0


# -- KS ------------------------------------------------------------------------------------


def test_ks_statistic_is_exact_and_p_value_close_to_scipy_asymp() -> None:
    """D must equal scipy's exactly. The p-value uses Stephens' corrected Kolmogorov formula;
    scipy's method="asymp" uses the one-sample kstwo(round(ne)) distribution. They agree within
    10% (ratio) for ne >= 100 and p >= 1e-6, and within 25% down to p = 1e-12 (measured: 7.4%,
    12.5%, 19.6% at most over 3,000 random cases)."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        n, m = int(rng.integers(20, 6000)), int(rng.integers(20, 2000))
        ref = np.sort(rng.normal(size=n))
        cur = rng.normal(rng.uniform(0.0, 0.6), 1.0, size=m)
        d, p = ks_2samp(ref, cur)
        expected = scipy.stats.ks_2samp(ref, cur, method="asymp")
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        if expected.pvalue < 1e-12:
            assert p < 1e-9
            continue
        ratio = max(p / expected.pvalue, expected.pvalue / p)
        close = n * m / (n + m) >= 100 and expected.pvalue >= 1e-6
        assert ratio <= (1.10 if close else 1.25)


def test_ks_with_ties_matches_scipy_statistic() -> None:
    rng = np.random.default_rng(3)
    ref = np.sort(rng.poisson(3, 800).astype(float))
    cur = rng.poisson(3.3, 300).astype(float)
    d, _ = ks_2samp(ref, cur)
    assert d == pytest.approx(scipy.stats.ks_2samp(ref, cur).statistic, abs=1e-12)


def test_ks_n_ref_stands_for_a_larger_reference() -> None:
    rng = np.random.default_rng(4)
    ref, cur = np.sort(rng.normal(size=500)), rng.normal(0.2, 1.0, 500)
    d_small, p_small = ks_2samp(ref, cur)
    d_big, p_big = ks_2samp(ref, cur, n_ref=100_000)
    assert d_small == d_big and p_big < p_small


def test_ks_empty_is_no_evidence() -> None:
    assert ks_2samp(np.empty(0), np.ones(3)) == (0.0, 1.0)


def test_ks_identical_samples() -> None:
    x = np.linspace(0.0, 1.0, 101)
    assert ks_2samp(x, x) == (0.0, 1.0)


# -- chi-square ------------------------------------------------------------------------------


def test_chi_square_goodness_of_fit_matches_scipy() -> None:
    rng = np.random.default_rng(6)
    for k in (2, 3, 5, 8, 20):
        props = rng.dirichlet(np.ones(k))
        counts = rng.multinomial(1000, rng.dirichlet(np.ones(k) * 5))
        statistic, p, dof = chi_square(props, counts)
        expected = scipy.stats.chisquare(counts, props * counts.sum())
        assert statistic == pytest.approx(expected.statistic, rel=1e-10)
        assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        assert dof == k - 1


def test_chi_square_count_in_impossible_cell_is_infinite() -> None:
    assert chi_square(np.array([0.5, 0.5, 0.0]), np.array([10, 10, 1]))[:2] == (math.inf, 0.0)
    assert chi_square(np.array([0.5, 0.5, 0.0]), np.array([10, 10, 0]))[2] == 1
    assert chi_square(np.array([0.5, 0.5]), np.array([0, 0])) == (0.0, 1.0, 0)


def test_chi_square_2samp_matches_scipy_contingency() -> None:
    rng = np.random.default_rng(7)
    for k in (2, 4, 9):
        ref = rng.multinomial(5000, rng.dirichlet(np.ones(k)))
        cur = rng.multinomial(800, rng.dirichlet(np.ones(k)))
        ref[-1] = 0  # a category the reference never saw stays finite
        statistic, p, dof = chi_square_2samp(ref, cur)
        table = np.array([ref, cur])
        table = table[:, table.sum(axis=0) > 0]
        expected = scipy.stats.chi2_contingency(table, correction=False)
        assert statistic == pytest.approx(expected.statistic, rel=1e-10)
        assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        assert dof == expected.dof


def test_chi_square_2samp_drops_empty_categories_and_empty_samples() -> None:
    assert chi_square_2samp(np.array([5, 0, 5]), np.array([5, 0, 5]))[1:] == (1.0, 1)
    assert chi_square_2samp(np.array([0, 0]), np.array([3, 4])) == (0.0, 1.0, 0)


# -- distances -----------------------------------------------------------------------------


def test_js_distance_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    for k in (2, 5, 11):
        p, q = rng.dirichlet(np.ones(k)), rng.multinomial(300, rng.dirichlet(np.ones(k)))
        q[0] = 0
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 1.0
    assert js_distance(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == 0.0
    assert math.isnan(js_distance(np.array([1.0]), np.array([0.0])))


def test_wasserstein_matches_scipy() -> None:
    rng = np.random.default_rng(9)
    for n, m in ((1, 1), (10, 3), (2000, 1000)):
        ref, cur = np.sort(rng.normal(size=n)), rng.lognormal(size=m)
        expected = scipy.stats.wasserstein_distance(ref, cur)
        assert wasserstein_1d(ref, cur) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    ties = np.sort(rng.poisson(2, 100).astype(float))
    cur = rng.poisson(3, 50).astype(float)
    expected = scipy.stats.wasserstein_distance(ties, cur)
    assert wasserstein_1d(ties, cur) == pytest.approx(expected, rel=1e-10)
    assert normalized_wasserstein(ties, cur, 2.0) == pytest.approx(expected / 2.0, rel=1e-10)
    assert math.isnan(normalized_wasserstein(ties, cur, 0.0))
    assert math.isnan(wasserstein_1d(np.empty(0), cur))


def test_ks_wasserstein_agrees_with_separate_functions() -> None:
    rng = np.random.default_rng(10)
    ref, cur = np.sort(rng.normal(size=700)), np.sort(rng.normal(0.1, 1.2, 300))
    d, p, w = ks_wasserstein(ref, cur, n_ref=5000)
    assert (d, p) == ks_2samp(ref, cur, n_ref=5000)
    assert w == pytest.approx(wasserstein_1d(ref, cur), rel=1e-12)


def test_psi_known_value_and_invariants() -> None:
    ref = np.array([0.25, 0.25, 0.5])
    cur = np.array([50, 25, 25])
    p, q = ref, cur / cur.sum()
    eps, k = 1e-4, 3
    ps, qs = (p + eps) / (1 + k * eps), (q + eps) / (1 + k * eps)
    assert psi(ref, cur) == pytest.approx(float(np.sum((qs - ps) * np.log(qs / ps))), rel=1e-12)
    assert psi(ref, ref * 400) == pytest.approx(0.0, abs=1e-15)
    assert psi(ref, np.array([0, 0, 10])) > 0
    assert math.isnan(psi(ref, np.zeros(3)))


def test_neg_log10_caps_underflow() -> None:
    assert neg_log10(1e-5) == pytest.approx(5.0)
    assert neg_log10(0.0) == 300.0


# -- binning (properties) ------------------------------------------------------------------


@st.composite
def edges_and_values(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    inner = sorted(set(draw(st.lists(FINITE, max_size=8))))
    open_ends = draw(st.booleans())
    edges = np.array([-np.inf, *inner, np.inf] if open_ends or len(inner) < 2 else inner)
    values = draw(st.lists(st.one_of(FINITE, st.just(math.nan), st.sampled_from(inner or [0.0]))))
    return edges, np.array(values, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(edges_and_values())
def test_bin_counts_each_value_lands_in_the_bin_containing_it(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    edges, values = case
    counts = bin_counts(values, edges)
    k = edges.shape[0] - 1
    assert counts.shape == (k,)
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    assert counts.sum() == inside.shape[0]
    if np.isinf(edges[0]) and np.isinf(edges[-1]):
        assert counts.sum() == np.count_nonzero(np.isfinite(values))
    expected = np.zeros(k, dtype=np.int64)
    for v in inside.tolist():
        i = k - 1 if v == edges[-1] else int(np.flatnonzero(edges <= v)[-1])
        assert edges[i] <= v and (v < edges[i + 1] or (i == k - 1 and v == edges[-1]))
        expected[i] += 1
    assert counts.tolist() == expected.tolist()
    finite = np.sort(values[~np.isnan(values)])
    assert bin_counts_sorted(finite, edges).tolist() == counts.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(FINITE, min_size=1, max_size=50), st.lists(st.floats(0.0, 1.0), max_size=7))
def test_quantiles_sorted_matches_numpy(values: list[float], probs: list[float]) -> None:
    data = np.sort(np.array(values))
    p = np.array(probs)
    expected = np.quantile(data, p) if p.shape[0] else np.empty(0)
    scale = max(1.0, float(np.max(np.abs(data))))
    assert np.allclose(quantiles_sorted(data, p), expected, rtol=1e-12, atol=1e-12 * scale)


# -- row-wise versions equal the scalar ones -------------------------------------------------

TIED = st.one_of(st.integers(-3, 3).map(float), st.floats(-10, 10, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(TIED, max_size=40), st.lists(TIED, max_size=30), st.integers(2, 8)),
        min_size=1,
        max_size=5,
    )
)
def test_row_wise_statistics_equal_the_scalar_ones(
    rows: list[tuple[list[float], list[float], int]],
) -> None:
    k = len(rows)
    refs = [np.sort(np.array(r, dtype=np.float64)) for r, _, _ in rows]
    curs = [np.sort(np.array(c, dtype=np.float64)) for _, c, _ in rows]
    ref = np.full((k, max(1, *(r.shape[0] for r in refs))), np.inf)
    cur = np.full((k, max(1, *(c.shape[0] for c in curs))), np.nan)
    edges_list = [
        np.concatenate([[-np.inf], quantile_edges(r, bins), [np.inf]])
        for r, (_, _, bins) in zip(refs, rows, strict=True)
    ]
    edges = np.full((k, max(e.shape[0] for e in edges_list)), np.inf)
    for i in range(k):
        ref[i, : refs[i].shape[0]] = refs[i]
        cur[i, : curs[i].shape[0]] = curs[i]
        edges[i, : edges_list[i].shape[0]] = edges_list[i]
    ref_sizes = np.array([r.shape[0] for r in refs])
    cur_sizes = np.array([c.shape[0] for c in curs])
    d, p, w = ks_wasserstein_rows(ref, ref_sizes, ref_sizes * 2, cur, cur_sizes)
    counts = bin_counts_rows(cur, edges)
    ref_counts = bin_counts_rows(np.where(np.isinf(ref), np.nan, ref), edges)
    n_bins = np.array([e.shape[0] - 1 for e in edges_list])
    psis = psi_rows(ref_counts.astype(float), counts, n_bins)
    jss = js_distance_rows(ref_counts.astype(float), counts)
    for i in range(k):
        real = n_bins[i]
        assert counts[i].tolist() == [
            *bin_counts(curs[i], edges_list[i]).tolist(),
            *[0] * (edges.shape[1] - 1 - real),
        ]
        if ref_sizes[i] == 0 or cur_sizes[i] == 0:
            assert (d[i], p[i]) == (0.0, 1.0) and math.isnan(w[i])
            continue
        d1, p1, w1 = ks_wasserstein(refs[i], curs[i], n_ref=int(ref_sizes[i]) * 2)
        assert (d[i], p[i]) == (d1, p1)
        assert w[i] == pytest.approx(w1, rel=1e-9, abs=1e-12)
        props = ref_counts[i, :real].astype(float)
        assert psis[i] == pytest.approx(psi(props, counts[i, :real]), rel=1e-9, abs=1e-12)
        assert jss[i] == pytest.approx(js_distance(props, counts[i, :real]), abs=1e-12)
