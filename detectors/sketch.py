"""Two-sample tests of current windows against a reference's sketch.

A numeric reference is held as a sorted sketch of at most ``sample_size`` order statistics (see
:mod:`detectors.reference`). :func:`sketch_ks_wasserstein_rows` defines the tests: the reference
ECDF is known exactly at each sketch point and interpolated linearly in between.
:class:`SketchCdf` computes the same KS statistic and p-value, bit for bit, for the windows of a
reference that does not change: what depends on the reference alone (ranks, atoms, the
interpolation table, sort keys) is computed once, and an evaluation looks up each current value
in the sketch. Wasserstein, evidence only, is left to the full function.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from driftline.detectors.stats import kolmogorov_sf

_SIGN = np.uint32(0x80000000)
# Columns of the interpolation table, one row per (feature, k = sketch points <= value).
_V0, _V1, _F0, _DF, _LO = range(5)


def _sketch_ranks(
    ref: np.ndarray, sample_sizes: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference values strictly below (``lo``) and up to (``hi``) each sketch point.

    A point of rank ``r`` of an ``s``-point sketch of ``n`` values has ``floor((r + 0.5) n / s)``
    values below it. A run of equal points is an atom: its first point's lower end and its last
    point's upper end lie between neighbouring ranks, estimated by the midpoint. Padding gets
    ``n``.
    """
    rows, width = ref.shape
    sizes = sample_sizes.astype(np.float64)[:, None]
    position = np.arange(width)[None, :]
    valid = position < sample_sizes[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rank = np.floor((position + 0.5) * (n / sizes))
    first = np.ones((rows, width), dtype=bool)
    first[:, 1:] = ref[:, 1:] != ref[:, :-1]
    last = np.ones((rows, width), dtype=bool)
    last[:, :-1] = ref[:, 1:] != ref[:, :-1]
    single = first & last
    before = np.concatenate([np.full((rows, 1), -1.0), rank[:, :-1]], axis=1)
    after = np.concatenate([rank[:, 1:], np.zeros((rows, 1))], axis=1)
    after = np.where(position == sample_sizes[:, None] - 1, n, after)
    lo = np.where(first & ~single, (before + 1 + rank) / 2, rank)
    hi = np.where(last & ~single, (rank + 1 + after) / 2, rank + 1)
    return np.where(valid, lo, n), np.where(valid, hi, n)


def order_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys of float32 rows, sorted over the whole flattened array when each row is.

    The IEEE bits of a float32, with negative values' bits flipped and positive values' sign bit
    set, order like the values (``-0.0`` is folded into ``0.0`` first; NaN sorts after +inf);
    the row number in the high 32 bits keeps rows apart, so one ``searchsorted`` serves them all.
    """
    rows = values.shape[0]
    bits = (values + np.float32(0.0)).view(np.uint32)
    key = np.where((bits & _SIGN) != 0, ~bits, bits | _SIGN).astype(np.int64)
    key += (np.arange(rows, dtype=np.int64) << 32)[:, None]
    return key.ravel()


def _p_values(
    d: np.ndarray, n_ref: np.ndarray, sample_sizes: np.ndarray, cur_sizes: np.ndarray
) -> np.ndarray:
    """Asymptotic two-sided KS p-values (Stephens' small-sample correction); an empty side
    gives D = 0 and p = 1 (``d`` is set in place)."""
    p = np.ones(d.shape[0])
    for i in range(d.shape[0]):
        size, m = float(n_ref[i]), float(cur_sizes[i])
        if sample_sizes[i] == 0 or m == 0:
            d[i] = 0.0
            continue
        root = math.sqrt(size * m / (size + m))
        p[i] = kolmogorov_sf((root + 0.12 + 0.11 / root) * float(d[i]))
    return p


class SketchCdf:
    """The reference side of :func:`sketch_ks_wasserstein_rows`, precomputed for many tests.

    Parameters
    ----------
    sample
        One row per feature: ``sample_sizes[i]`` sorted float32 values (sketch points or the
        whole reference), then padding.
    sample_sizes
        Sketch points per row.
    n_ref
        Reference values per row, for the ranks and the p-value.

    Notes
    -----
    The KS statistic is the largest gap between the current ECDF and the reference one at a
    jump of either. Between two current values the current ECDF is flat and the reference one
    rises, so the gaps at sketch points never exceed those at the neighbouring current values:
    only the current values are looked up (one ``searchsorted`` of their :func:`order_keys`), and
    the result is exactly that of :func:`sketch_ks_wasserstein_rows`.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> ref = np.sort(rng.normal(size=(1, 2000)).astype(np.float32), axis=1)
    >>> picks = ((np.arange(256) + 0.5) * (2000 / 256)).astype(int)
    >>> cdf = SketchCdf(ref[:, picks], np.array([256]), np.array([2000]))
    >>> cur = np.sort(rng.normal(0.5, 1.0, size=(1, 500)).astype(np.float32), axis=1)
    >>> d, p = cdf.ks(cur, np.array([500]))
    >>> bool(d[0] > 0.15), bool(p[0] < 1e-6)
    (True, True)
    """

    __slots__ = ("_keys", "_n", "_rows", "_sizes", "_table", "_width")

    def __init__(self, sample: np.ndarray, sample_sizes: np.ndarray, n_ref: np.ndarray) -> None:
        rows, width = sample.shape
        if sample_sizes.shape != (rows,) or n_ref.shape != (rows,):
            raise ValueError("sample_sizes and n_ref need one entry per row of sample")
        valid = np.arange(width)[None, :] < sample_sizes[:, None]
        wanted = np.where(valid, sample, np.inf)
        if np.isnan(wanted).any():
            raise ValueError("sample holds NaN among its sample_sizes values")
        with np.errstate(over="ignore"):  # out of float32 range: refused just below
            points = wanted.astype(np.float32)
        if not np.array_equal(points.astype(np.float64), wanted):
            raise ValueError("sample must hold float32 values")
        n = n_ref.astype(np.float64)
        ref = points.astype(np.float64)
        lo, hi = _sketch_ranks(ref, sample_sizes, n[:, None])
        self._rows, self._width = rows, width
        self._n = n
        self._sizes = sample_sizes.astype(np.int64)
        self._keys = order_keys(points)
        # One contiguous array per column: what an evaluation reads comes out contiguous too.
        table = self._interpolation_table(ref, lo, hi)
        self._table = tuple(np.ascontiguousarray(table[:, c]) for c in range(table.shape[1]))

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        table = sum(column.nbytes for column in self._table)
        return self._keys.nbytes + table + self._n.nbytes + self._sizes.nbytes

    def _interpolation_table(self, ref: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Row ``i * (width + 1) + k``: how to evaluate row ``i``'s reference CDF at a value
        with ``k`` sketch points at or below it.

        Regular ``k`` (``1 <= k < size``): the interval's ends (``_V0`` is the last point at or
        below the value) and the reference counts at them (``hi`` of point ``k - 1``, ``lo`` of
        point ``k``, so the interpolation is exactly the full function's). ``k = 0``: nothing
        of the reference (``_V0`` NaN: no point to be equal to); ``k >= size``: all of it
        (``_V0 = _V1``, the last point). ``_LO`` is the lower end of the atom the value equals.
        """
        rows, width = ref.shape
        sizes = self._sizes[:, None]
        position = np.arange(width)[None, :]
        inside = position < sizes
        # every point of an atom carries its first point's lo
        first = np.ones((rows, width), dtype=bool)
        first[:, 1:] = ref[:, 1:] != ref[:, :-1]
        starts = np.maximum.accumulate(np.where(first, position, 0), axis=1)
        lo_first = np.take_along_axis(lo, starts, axis=1)
        table = np.zeros((rows, width + 1, 5))
        regular = position[:, 1:] < sizes  # k = 1 .. width - 1 with k < size
        t = table[:, 1:width]
        t[..., _V0] = np.where(regular, ref[:, :-1], 0.0)
        t[..., _V1] = np.where(regular, ref[:, 1:], 0.0)
        t[..., _F0] = np.where(regular, hi[:, :-1], 0.0)
        t[..., _DF] = np.where(regular, lo[:, 1:] - hi[:, :-1], 0.0)
        table[:, 1:, _LO] = np.where(inside, lo_first, 0.0)
        last = ref[np.arange(rows), np.maximum(self._sizes - 1, 0)]
        above = np.arange(width + 1)[None, :] >= sizes  # k >= size: all of the reference
        table[..., _F0] = np.where(above, self._n[:, None], table[..., _F0])
        for column in (_V0, _V1):
            table[..., column] = np.where(above, last[:, None], table[..., column])
        beyond = np.arange(width + 1)[None, :] > sizes  # past the row's points: padding
        table[..., _V0] = np.where(beyond, np.nan, table[..., _V0])
        table[:, 0, _V0] = table[:, 0, _V1] = np.nan
        table[self._sizes == 0] = 0.0
        return table.reshape(rows * (width + 1), 5)

    def ks(self, current: np.ndarray, cur_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """KS statistic D and p-value of each row of ``current`` against its reference row.

        ``current`` is float32, one row per reference row, each row ``cur_sizes[i]`` sorted
        values and then NaN padding (``np.sort`` puts NaN last).
        """
        rows, m = current.shape
        if rows != self._rows or current.dtype != np.float32:
            raise ValueError(f"current must be float32 with {self._rows} rows")
        if cur_sizes.shape != (rows,):
            raise ValueError("cur_sizes needs one entry per row of current")
        keys = order_keys(current)
        row = np.repeat(np.arange(rows, dtype=np.int64), m)
        below = np.searchsorted(self._keys, keys, "right")  # counts every earlier row's width
        # row * (width + 1) + (below - row * width); np.take of rows is much faster than [].
        at = below + row
        v0, v1, f0, df, lo = (np.take(column, at) for column in self._table)
        c = current.ravel().astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(v1 > v0, (c - v0) / (v1 - v0), 0.0)
            n = self._n[row]
            right = (f0 + df * fraction) / n
            left = np.where(v0 == c, lo / n, right)
            position = np.tile(np.arange(m, dtype=np.float64), rows)
            sizes = cur_sizes.astype(np.float64)[row]
            # Equal current values are one jump of the ECDF: its top at the run's end, its
            # bottom at the run's start.
            run_end = np.ones(keys.shape[0], dtype=bool)
            run_end[:-1] = keys[1:] != keys[:-1]
            run_start = np.ones(keys.shape[0], dtype=bool)
            run_start[1:] = run_end[:-1]
            inside = position < sizes
            gaps = np.maximum(
                np.abs(right - (position + 1) / sizes) * (run_end & inside),
                np.abs(left - position / sizes) * (run_start & inside),
            )
            d = np.nan_to_num(gaps.reshape(rows, m)).max(axis=1, initial=0.0)
        return d, _p_values(d, self._n, self._sizes, cur_sizes)


def sketch_ks_wasserstein_rows(
    sample: np.ndarray,
    sample_sizes: np.ndarray,
    n_ref: np.ndarray,
    cur: np.ndarray,
    cur_sizes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sample KS (D, p-value) and Wasserstein distance of every row pair, the reference
    side given by its sketch.

    Row ``i`` of ``sample`` holds ``sample_sizes[i]`` sorted evenly spaced order statistics (the
    ``(j + 0.5) / s`` quantiles) of a reference of ``n_ref[i]`` values, then padding (+inf or
    NaN); row ``i`` of ``cur`` holds ``cur_sizes[i]`` sorted values, then NaN. The reference ECDF
    is known exactly at each sketch point, an order statistic of known rank, and interpolated
    linearly in between; a run of equal sketch points is an atom whose ends are estimated to
    within half the rank spacing. When the sketch is the whole reference
    (``sample_sizes == n_ref``) this is the exact ECDF and D, the p-value and the distance are
    exactly those of :func:`~detectors.stats.ks_wasserstein`. Otherwise
    ``|D - D_full| <= 1 / s`` and, observed, ``<= 1 / (2 s)`` (see
    ``tests/unit/test_compact_reference.py``). Rows with an empty side give ``(0.0, 1.0, nan)``.
    """
    rows, width = sample.shape
    n = n_ref.astype(np.float64)[:, None]
    position = np.arange(width)[None, :]
    valid = position < sample_sizes[:, None]
    ref = np.where(valid, sample, np.inf).astype(np.float64)
    lo, hi = _sketch_ranks(ref, sample_sizes, n)

    both = np.concatenate([ref, cur.astype(np.float64)], axis=1)  # cur padding NaN sorts last
    order = np.argsort(both, axis=1, kind="stable")  # reference first among equal values
    merged = np.take_along_axis(both, order, axis=1)
    is_ref = order < width
    refs_so_far = np.cumsum(is_ref, axis=1)
    at = np.minimum(order, width - 1)
    previous = np.maximum(refs_so_far - 1, 0)
    following = np.minimum(refs_so_far, width - 1)
    v0 = np.take_along_axis(ref, previous, axis=1)
    v1 = np.take_along_axis(ref, following, axis=1)
    f0 = np.take_along_axis(hi, previous, axis=1)
    f1 = np.take_along_axis(lo, following, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(v1 > v0, (merged - v0) / (v1 - v0), 0.0)
    # Below the first sketch point nothing of the reference, above the last point all of it,
    # as for a plain sample: the tails' mass is put at the extreme points.
    between = np.where(
        refs_so_far == 0,
        0.0,
        np.where(refs_so_far >= sample_sizes[:, None], n, f0 + (f1 - f0) * np.nan_to_num(fraction)),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(is_ref, np.take_along_axis(lo, at, axis=1), between) / n
        right = np.where(is_ref, np.take_along_axis(hi, at, axis=1), between) / n
        total_width = left.shape[1]
        current = (np.arange(1, total_width + 1)[None, :] - refs_so_far) / cur_sizes[:, None]
    current_before = np.concatenate([np.zeros((rows, 1)), current[:, :-1]], axis=1)
    end = (sample_sizes + cur_sizes)[:, None]
    inside = np.arange(total_width)[None, :] < end
    run_end = np.ones_like(inside)
    run_end[:, :-1] = merged[:, 1:] != merged[:, :-1]
    run_start = np.ones_like(inside)
    run_start[:, 1:] = merged[:, 1:] != merged[:, :-1]
    gaps = np.concatenate(
        [
            np.where(run_end & inside, np.abs(right - current), 0.0),
            np.where(run_start & inside, np.abs(left - current_before), 0.0),
        ],
        axis=1,
    )
    d = np.max(np.nan_to_num(gaps), axis=1, initial=0.0)
    # Wasserstein: on each interval between consecutive values the current ECDF is flat and the
    # reference one linear, so |difference| integrates in closed form.
    a = right[:, :-1] - current[:, :-1]
    b = left[:, 1:] - current[:, :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        steps = np.diff(merged, axis=1)
        mean_gap = np.where(
            a * b >= 0, (np.abs(a) + np.abs(b)) / 2, (a * a + b * b) / (2 * (np.abs(a) + np.abs(b)))
        )
        interval = np.arange(total_width - 1)[None, :] < end - 1
        distance = np.sum(np.where(interval & (steps > 0), mean_gap * steps, 0.0), axis=1)
    p = _p_values(d, n_ref, sample_sizes, cur_sizes)
    distance[(sample_sizes == 0) | (cur_sizes == 0)] = math.nan
    return d, p, distance


class SketchCache:
    """The :class:`SketchCdf` of the references tested most recently, at most ``max_bytes``.

    Precomputing a reference's table costs about as much as one test, so a reference tested
    every evaluation keeps it; memory stays bounded however many models there are (least recently
    used first out). An entry lives no longer than its owner (the object it was made for).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[weakref.ref[Any], SketchCdf]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, owner: object, make: Callable[[], SketchCdf]) -> SketchCdf:
        key = id(owner)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is owner:
            self._entries.move_to_end(key)
            return entry[1]
        self._drop(key)
        cdf = make()
        if cdf.nbytes <= self.max_bytes:
            self._entries[key] = (weakref.ref(owner, partial(self._forget, key)), cdf)
            self._bytes += cdf.nbytes
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
        return cdf

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            self._drop(key)

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1].nbytes
