"""KS against a reference sketch: :class:`SketchCdf` gives bit for bit what
``sketch_ks_wasserstein_rows`` gives, and :class:`SketchCache` keeps at most its byte budget."""

from __future__ import annotations

import doctest
import gc
from collections.abc import Callable

import numpy as np
import pytest

import driftline.detectors.sketch
from driftline.detectors.sketch import SketchCache, SketchCdf, sketch_ks_wasserstein_rows

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def test_doctests() -> None:
    assert doctest.testmod(driftline.detectors.sketch).failed == 0


def _draw(rng: np.random.Generator, style: str, size: int | tuple[int, int]) -> np.ndarray:
    """float32 values: continuous, or on a grid of halves or of integers (many ties; rounding
    small negatives gives -0.0 next to 0.0)."""
    x = rng.normal(size=size)
    if style == "halves":
        x = np.round(x * 2) / 2
    elif style == "integers":
        x = np.round(x)
    return x.astype(np.float32)


def _sketch_of(reference: np.ndarray, width: int, s: int) -> np.ndarray:
    """The sample of a sorted reference: the whole of it when it fits in ``width`` points, else
    ``s`` evenly spaced order statistics (as :mod:`detectors.reference` picks them)."""
    n = reference.shape[0]
    if n <= width:
        return reference
    picked: np.ndarray = reference[((np.arange(s) + 0.5) * (n / s)).astype(int)]
    return picked


def _case(rng: np.random.Generator, style: str) -> Arrays:
    """(sample, sample_sizes, n_ref, current, cur_sizes): 1-24 rows, sketch width 10-600,
    current width 1-1200; each row's reference empty, whole (n_ref <= width) or sketched
    (n_ref > width, up to 6000); current rows empty, partly or fully filled, shifted by +0.5
    on odd rows. Sample padding +inf, current padding NaN."""
    rows = int(rng.integers(1, 25))
    width = int(rng.integers(10, 601))
    m = int(rng.integers(1, 1201))
    sample = np.full((rows, width), np.inf, dtype=np.float32)
    current = np.full((rows, m), np.nan, dtype=np.float32)
    sample_sizes = np.zeros(rows, dtype=np.int64)
    n_ref = np.zeros(rows, dtype=np.int64)
    cur_sizes = np.zeros(rows, dtype=np.int64)
    for i in range(rows):
        u = rng.random()
        if u < 0.15:
            n = 0
        else:
            n = int(rng.integers(1, width + 1) if u < 0.5 else rng.integers(width + 1, 6001))
        s = width if rng.random() < 0.75 else int(rng.integers(1, width + 1))
        points = _sketch_of(np.sort(_draw(rng, style, n)), width, s)
        sample[i, : points.shape[0]] = points
        sample_sizes[i], n_ref[i] = points.shape[0], n
        v = rng.random()
        c = 0 if v < 0.1 else m if v < 0.4 else int(rng.integers(1, m + 1))
        current[i, :c] = np.sort(_draw(rng, style, c) + np.float32(0.5 * (i % 2)))
        cur_sizes[i] = c
    return sample, sample_sizes, n_ref, current, cur_sizes


def _assert_same_as_full_function(arrays: Arrays) -> tuple[np.ndarray, np.ndarray]:
    sample, sample_sizes, n_ref, current, cur_sizes = arrays
    d, p = SketchCdf(sample, sample_sizes, n_ref).ks(current, cur_sizes)
    want_d, want_p, _ = sketch_ks_wasserstein_rows(
        sample.astype(np.float64), sample_sizes, n_ref, current.astype(np.float64), cur_sizes
    )
    assert np.array_equal(d, want_d), np.flatnonzero(d != want_d)
    assert np.array_equal(p, want_p), np.flatnonzero(p != want_p)
    return d, p


@pytest.mark.parametrize("style", ["normal", "halves", "integers"])
def test_sketch_cdf_ks_is_bit_for_bit_that_of_the_full_function(style: str) -> None:
    """150 seeded random cases per style (continuous normal data; data on a grid of halves or
    of integers, with many ties within each side, between the sides and among sketch points):
    D and p-value of ``SketchCdf.ks`` are exactly (``np.array_equal``) the first two outputs
    of ``sketch_ks_wasserstein_rows`` on the same arrays as float64. Rows cover references
    that are empty, whole (n_ref <= width, the exact case) and sketched (n_ref > width, the
    sketch full-width or narrower with +inf padding), and current sides that are empty,
    NaN-padded or full. The cases are counted so that each kind of row surely occurs."""
    rng = np.random.default_rng({"normal": 11, "halves": 12, "integers": 13}[style])
    seen = dict.fromkeys(("empty ref", "whole", "sketched", "padded sketch", "empty cur"), 0)
    for _ in range(150):
        arrays = _case(rng, style)
        d, _ = _assert_same_as_full_function(arrays)
        sample, sample_sizes, n_ref, _, cur_sizes = arrays
        seen["empty ref"] += int(np.sum(n_ref == 0))
        seen["whole"] += int(np.sum((n_ref > 0) & (n_ref == sample_sizes)))
        seen["sketched"] += int(np.sum(n_ref > sample_sizes))
        narrow = sample_sizes < sample.shape[1]
        seen["padded sketch"] += int(np.sum((n_ref > sample_sizes) & narrow))
        seen["empty cur"] += int(np.sum(cur_sizes == 0))
        assert np.all((d >= 0) & (d <= 1))
    assert min(seen.values()) >= 50, seen


def test_sketch_cdf_ks_treats_negative_and_positive_zero_alike() -> None:
    """Values -0.0 and 0.0 mixed in both sides (with -1 and 1 around them), whole and sketched
    references: D and p-value are exactly those of the full function, and swapping every
    zero's sign changes neither."""
    rng = np.random.default_rng(21)
    grid = np.array([-1.0, -0.0, 0.0, 1.0], dtype=np.float32)
    for n in (6, 40, 300, 3000):
        width = min(n, 64)
        reference = np.sort(rng.choice(grid, size=n), kind="stable")
        points = _sketch_of(reference, width, width)
        sample = np.full((2, width), np.inf, dtype=np.float32)
        sample[:, : points.shape[0]] = points
        current = np.sort(rng.choice(grid, size=(2, 50)), axis=1, kind="stable")
        current[1] += np.float32(0.5)  # no ties between the sides on this row
        for side in (points, current[0]):
            zeros = side[side == 0]
            assert np.signbit(zeros).any() and (~np.signbit(zeros)).any()
        sizes = np.full(2, points.shape[0])
        arrays = (sample, sizes, np.full(2, n), current, np.full(2, 50))
        d, p = _assert_same_as_full_function(arrays)
        flip_sample = np.where(sample == 0, -sample, sample)
        flip_current = np.where(current == 0, -current, current)
        flipped = SketchCdf(flip_sample, sizes, np.full(2, n)).ks(flip_current, arrays[4])
        assert np.array_equal(flipped[0], d) and np.array_equal(flipped[1], p)


def test_sketch_cdf_ks_matches_the_full_function_with_infinite_values() -> None:
    """Atoms at -inf and +inf (sketch points +inf next to the +inf padding) and current values
    at -inf and +inf, whole and sketched references, one row with infinities on the current
    side only: D and p-value are exactly those of the full function. (The monitors clip
    values to the float32 range; the class does not rely on it.)"""
    rng = np.random.default_rng(31)
    width, m = 32, 40
    for n in (10, 32, 500):
        sample = np.full((2, width), np.inf, dtype=np.float32)
        sizes = np.zeros(2, dtype=np.int64)
        for i in range(2):
            reference = _draw(rng, "integers", n)
            if i == 0:
                reference[: n // 5] = -np.inf
                reference[n // 5 : 2 * (n // 5)] = np.inf
            points = _sketch_of(np.sort(reference), width, width)
            sample[i, : points.shape[0]] = points
            sizes[i] = points.shape[0]
        current = _draw(rng, "integers", (2, m))
        current[:, :6] = np.inf
        current[:, 6:9] = -np.inf
        current = np.sort(current, axis=1)
        assert (
            np.isinf(sample[0, : sizes[0]]).sum() >= 2 and np.isfinite(sample[1, : sizes[1]]).all()
        )
        _assert_same_as_full_function((sample, sizes, np.full(2, n), current, np.full(2, m)))


def test_empty_rows_give_zero_statistic_and_p_value_one() -> None:
    """A row with no reference values, one with no current values and one with neither give
    D = 0 and p = 1 (the full function also a NaN distance); the non-empty row beside them,
    two disjoint samples, gets D = 1."""
    sample = np.array([[np.inf] * 3, [1, 2, 3], [np.inf] * 3, [1, 2, 3]], dtype=np.float32)
    sample_sizes = np.array([0, 3, 0, 3])
    current = np.array([[1, 2], [np.nan] * 2, [np.nan] * 2, [5, 6]], dtype=np.float32)
    cur_sizes = np.array([2, 0, 0, 2])
    d, p = SketchCdf(sample, sample_sizes, sample_sizes).ks(current, cur_sizes)
    assert d.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert p[:3].tolist() == [1.0, 1.0, 1.0] and p[3] < 1
    full = sketch_ks_wasserstein_rows(
        sample.astype(np.float64), sample_sizes, sample_sizes, current.astype(np.float64), cur_sizes
    )
    assert full[0].tolist() == d.tolist() and full[1].tolist() == p.tolist()
    assert np.isnan(full[2][:3]).all() and full[2][3] == 3.5


def test_sketch_cdf_refuses_values_not_float32_and_mismatched_current() -> None:
    f32 = np.array([[0.25, 0.5, 1.0]], dtype=np.float32)
    sizes, n_ref = np.array([3]), np.array([3])
    cdf = SketchCdf(f32, sizes, n_ref)
    # float64 holding float32 values is accepted (padding beyond sample_sizes is not checked)
    SketchCdf(np.array([[0.25, 0.5, np.nan]]), np.array([2]), np.array([2]))
    for not_float32 in ([[0.1, 0.2, 0.3]], [[0.25, 0.5, 1e300]]):
        with pytest.raises(ValueError, match="float32"), np.errstate(over="ignore"):
            SketchCdf(np.array(not_float32), sizes, n_ref)
    with pytest.raises(ValueError, match="one entry per row"):
        SketchCdf(f32, np.array([3, 3]), n_ref)
    with pytest.raises(ValueError, match="NaN"):
        SketchCdf(np.array([[0.25, np.nan, 1.0]], dtype=np.float32), sizes, n_ref)
    current = np.array([[0.5, 0.75]], dtype=np.float32)
    assert cdf.ks(current, np.array([2]))[0].shape == (1,)
    with pytest.raises(ValueError, match="float32"):
        cdf.ks(current.astype(np.float64), np.array([2]))
    with pytest.raises(ValueError, match="1 rows"):
        cdf.ks(np.vstack([current, current]), np.array([2, 2]))
    with pytest.raises(ValueError, match="cur_sizes"):
        cdf.ks(current, np.array([2, 2]))


def test_a_half_sd_shift_is_detected_and_no_shift_is_not() -> None:
    """5,000 reference values (sketch of 512), 1,000 current values, seed 5: a 0.5 sd mean shift
    gives p < 1e-6 (D is about 0.19 where p = 1e-6 needs about 0.09), the same distribution
    p > 1e-3 (it is 0.03). Error rate: with no shift the p-value is close to uniform, so the
    no-shift assertion fails for a given seed with a chance of about 1e-3, the threshold;
    the shifted one fails with a negligible chance."""
    rng = np.random.default_rng(5)
    reference = np.sort(rng.normal(size=5000).astype(np.float32))
    points = _sketch_of(reference, 512, 512)
    sample = np.vstack([points, points])
    same = rng.normal(0.0, 1.0, 1000)
    shifted = rng.normal(0.5, 1.0, 1000)
    current = np.sort(np.vstack([same, shifted]).astype(np.float32), axis=1)
    d, p = SketchCdf(sample, np.array([512, 512]), np.array([5000, 5000])).ks(
        current, np.array([1000, 1000])
    )
    assert p[0] > 1e-3
    assert p[1] < 1e-6 and d[1] > 0.15


# -- SketchCache ---------------------------------------------------------------------------------


class Owner:
    """What a cache entry is made for (weakly referenced, like the monitors' reference rows)."""

    __slots__ = ("__weakref__",)


def _table(width: int = 100) -> SketchCdf:
    sample = np.arange(width, dtype=np.float32)[None, :]
    return SketchCdf(sample, np.array([width]), np.array([10 * width]))


def _counted(calls: dict[str, int], name: str) -> Callable[[], SketchCdf]:
    """A ``make`` that counts its calls in ``calls[name]``."""

    def make() -> SketchCdf:
        calls[name] = calls.get(name, 0) + 1
        return _table()

    return make


def test_cache_makes_a_table_once_per_live_owner() -> None:
    cache = SketchCache(max_bytes=1 << 20)
    owner, calls = Owner(), dict[str, int]()
    first = cache.get(owner, _counted(calls, "a"))
    assert cache.get(owner, _counted(calls, "a")) is first
    assert calls == {"a": 1} and len(cache) == 1 and cache.nbytes == first.nbytes


def test_cache_keeps_its_budget_by_dropping_the_least_recently_used() -> None:
    """Tables of about 40% of the budget: after A, B, A, C the cache holds A and C (B, least
    recently used, is gone and made again when asked for); it never holds more than its
    budget."""
    size = _table().nbytes
    cache = SketchCache(max_bytes=size * 5 // 2)
    a, b, c = Owner(), Owner(), Owner()
    calls: dict[str, int] = {}
    got = {}
    for name, owner in (("a", a), ("b", b), ("a", a), ("c", c)):
        got[name] = cache.get(owner, _counted(calls, name))
        assert cache.nbytes <= cache.max_bytes
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert len(cache) == 2 and cache.nbytes == 2 * size
    assert cache.get(a, _counted(calls, "a")) is got["a"] and calls["a"] == 1
    assert cache.get(c, _counted(calls, "c")) is got["c"] and calls["c"] == 1
    again = cache.get(b, _counted(calls, "b"))
    assert calls["b"] == 2 and again is not got["b"]
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    # B's return pushed out A, now the least recently used
    assert cache.get(c, _counted(calls, "c")) is got["c"] and calls["c"] == 1
    cache.get(a, _counted(calls, "a"))
    assert calls["a"] == 2


def test_cache_entry_goes_with_its_owner() -> None:
    """The entry of an owner that is garbage collected is dropped (and its bytes)."""
    cache = SketchCache(max_bytes=1 << 20)
    kept, dropped = Owner(), Owner()
    calls: dict[str, int] = {}
    cache.get(kept, _counted(calls, "kept"))
    cache.get(dropped, _counted(calls, "dropped"))
    assert len(cache) == 2
    del dropped
    gc.collect()
    assert len(cache) == 1 and cache.nbytes == _table().nbytes
    cache.get(kept, _counted(calls, "kept"))
    assert calls == {"kept": 1, "dropped": 1}


def test_cache_returns_but_does_not_keep_a_table_over_budget() -> None:
    """A table over the budget (or any, with a budget of 0) is returned, not kept; one of
    exactly the budget is kept."""
    size = _table().nbytes
    owner = Owner()
    for budget in (0, size - 1):
        cache = SketchCache(max_bytes=budget)
        calls: dict[str, int] = {}
        table = cache.get(owner, _counted(calls, "a"))
        assert table.nbytes == size and len(cache) == 0 and cache.nbytes == 0
        cache.get(owner, _counted(calls, "a"))
        assert calls == {"a": 2}
    exact = SketchCache(max_bytes=size)
    exact.get(owner, _counted(calls, "b"))
    assert len(exact) == 1 and exact.nbytes == size


def test_cache_refuses_a_negative_budget() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SketchCache(max_bytes=-1)
