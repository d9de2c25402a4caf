"""Recovery tests: an alert resolves when the change it reports is established to be undone.

Two tests live here. :class:`ChangePointAlertState` serves concept drift (error-rate change
points); :class:`DriftedSample` serves data and prediction drift (distribution tests).

A concept-drift detector (ADWIN by default) says *when* a model's error rate rose. The alert it
raises reports a condition — "the error rate is above the rate before the change" — and must
stay firing while that holds. :class:`ChangePointAlertState` resolves it only when a sequential
test establishes that the error rate is back at its reference rate, with a stated false-resolve
rate, never after a number of quiet events.

The test is Page's CUSUM for a return to the reference (the recovery is the change it looks
for). At firing, the reference rate ``p0`` is the detector's rate before the change. The first
``estimate_size`` errors after firing estimate the degraded rate ``p1``; the test then weighs
"back at ``p0``" against "still at least halfway to ``p1``", ``pd = p0 + (p1 - p0) / 2`` (or
``p0`` plus two standard errors of that estimate, whichever is larger). For 0/1 errors each error
``x`` adds the Bernoulli log-likelihood ratio ``x·ln(p0/pd) + (1-x)·ln((1-p0)/(1-pd))``; for
losses, the Gaussian one with the variance of the post-change errors. The statistic restarts at
zero whenever it goes negative and the alert resolves when it reaches ``h = ln(1 /
false_resolve_rate)``. While the error rate stays at ``pd`` or above, the average run before a
false resolve is at least ``1 / false_resolve_rate`` labelled events (Lorden's bound for the
CUSUM); a return to ``p0`` is found after about ``h / KL(p0 || pd)`` events: about 1,500 for
``0.10 -> 0.19`` with the default ``1e-6``.

The arithmetic does not depend on how the stream is cut into calls (the service's calls follow
its reads, which a restart or a replay cuts differently): the estimate is computed from the
``estimate_size`` errors themselves, once they are all there, and the CUSUM adds log-likelihood
ratios in fixed point (units of ``2**-24``, clipped at ``±1e6``), where addition is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from driftline.detectors.alerting import _ORDER, SEVERITIES, Severity, Transition, _check_count
from driftline.detectors.stats import chi_square_2samp, ks_2samp

__all__ = ["ChangePointAlertState", "ChangeSignal", "DriftedSample", "Recovery"]

_P_CLIP = 1e-6
_SCALE = float(2**24)  # fixed-point units of the CUSUM
_LLR_CLIP = 1e6  # per error: a run of 10^5 clipped ones stays far within int64


@dataclass(frozen=True, slots=True)
class ChangeSignal:
    """A degradation signalled at ``index`` (within the batch), with the rate before it."""

    index: int
    severity: Severity
    rate_before: float


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the recovery test knew when a severity resolved (or was last looked at)."""

    rate_before: float
    rate_degraded: float | None
    rate_recent: float | None
    statistic: float
    threshold: float
    n_since_firing: int


@dataclass(slots=True)
class _Firing:
    rate_before: float
    n: int = 0  # errors seen since firing
    degraded: float | None = None  # pd, once estimated
    variance: float = 0.0  # of the post-change errors (losses)
    statistic: int = 0  # in units of 1 / _SCALE
    recent: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))


class ChangePointAlertState:
    """Firing at degradation signals, resolving when the error rate is established back.

    Parameters
    ----------
    false_resolve_rate
        Bound on how often the alert resolves while the error rate is still degraded: the
        average run before such a false resolve is at least ``1 / false_resolve_rate`` labelled
        events. In (0, 0.5).
    estimate_size
        Errors after firing that estimate the degraded rate; no resolve before them.
    binary
        0/1 errors (Bernoulli test) rather than losses (Gaussian test).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> state = ChangePointAlertState()
    >>> errors = np.concatenate([rng.random(3000) < 0.2, rng.random(6000) < 0.1]).astype(float)
    >>> out = state.update(errors, [ChangeSignal(0, "critical", rate_before=0.1)])
    >>> [(i, t.status, t.severity) for i, t in out]
    [(0, 'firing', 'critical'), (5134, 'resolved', 'critical')]

    """

    def __init__(
        self,
        false_resolve_rate: float = 1e-6,
        estimate_size: int = 500,
        binary: bool = True,
    ) -> None:
        if not (isinstance(false_resolve_rate, float | int) and 0 < false_resolve_rate < 0.5):
            raise ValueError(
                f"false_resolve_rate: must be in (0, 0.5), got {false_resolve_rate!r}"
            )
        _check_count("estimate_size", estimate_size, 2)
        if not isinstance(binary, bool):
            raise ValueError(f"binary: must be a bool, got {binary!r}")
        self.false_resolve_rate = float(false_resolve_rate)
        self.estimate_size = estimate_size
        self.binary = binary
        self._h = math.log(1.0 / self.false_resolve_rate)
        self._h_fixed = math.ceil(self._h * _SCALE)
        self._firing: dict[Severity, _Firing] = {}
        self._resolved: dict[Severity, Recovery] = {}

    @property
    def firing(self) -> frozenset[Severity]:
        """The severities currently firing."""
        return frozenset(self._firing)

    @property
    def threshold(self) -> float:
        """``h``: the value of the CUSUM statistic at which an alert resolves."""
        return self._h

    def recovery(self, severity: Severity) -> Recovery | None:
        """The recovery test's state for a firing severity (None when it is not firing)."""
        state = self._firing.get(severity)
        return None if state is None else self._describe(state)

    def resolved_by(self, severity: Severity) -> Recovery | None:
        """What the recovery test knew when ``severity`` last resolved."""
        return self._resolved.get(severity)

    def update(
        self, errors: npt.ArrayLike, signals: Sequence[ChangeSignal]
    ) -> list[tuple[int, Transition]]:
        """Advance by a batch of errors carrying degradation ``signals``.

        Returns ``(index within the batch, transition)`` pairs in index order. A signal fires its
        severity unless it is firing already or its ``rate_before`` is not a number (no
        reference to judge a recovery against). A signal's own error counts after firing.
        """
        x = np.asarray(errors, dtype=np.float64)
        n = x.shape[0]
        by_index: dict[int, list[ChangeSignal]] = {}
        for signal in signals:
            if not 0 <= signal.index < n:
                raise ValueError(f"signals: index {signal.index} outside the batch of n={n}")
            if signal.severity not in SEVERITIES:
                raise ValueError(f"signals: unknown severity {signal.severity!r}")
            by_index.setdefault(int(signal.index), []).append(signal)
        out: list[tuple[int, Transition]] = []
        cuts = sorted(by_index)
        start = 0
        for cut in [*cuts, n]:
            # Errors before the signal at `cut` advance the recovery tests of firing severities.
            if cut > start:
                self._advance(x, start, cut, out)
            if cut == n:
                break
            for signal in sorted(by_index[cut], key=lambda s: SEVERITIES.index(s.severity)):
                if signal.severity in self._firing or not math.isfinite(signal.rate_before):
                    continue
                self._firing[signal.severity] = _Firing(rate_before=float(signal.rate_before))
                out.append((cut, Transition("firing", signal.severity, 1.0, signal.rate_before)))
            start = cut
        out.sort(key=lambda it: (it[0], _ORDER[it[1].status, it[1].severity]))
        return out

    def close(self) -> list[Transition]:
        """Resolve every firing severity at once (its model version was superseded)."""
        out = [
            Transition("resolved", s, math.nan, self._firing[s].rate_before)
            for s in reversed(SEVERITIES)
            if s in self._firing
        ]
        self._firing.clear()
        return out

    def _advance(
        self, x: npt.NDArray[np.float64], start: int, stop: int, out: list[tuple[int, Transition]]
    ) -> None:
        for severity in [s for s in SEVERITIES if s in self._firing]:
            state = self._firing[severity]
            at = start
            if state.degraded is None:
                take = min(stop - at, self.estimate_size - state.n)
                state.n += take
                at += take
                if state.n >= self.estimate_size:
                    # The first estimate_size errors since firing: the recent ones, plus the
                    # start of this batch.
                    self._estimate(state, np.concatenate((state.recent, x[start:at])))
            if state.degraded is None or at >= stop:
                self._note_recent(state, x[start:stop])
                continue
            llr = np.clip(self._llr(state, x[at:stop]), -_LLR_CLIP, _LLR_CLIP)
            # Page's CUSUM with a reflecting barrier at 0, vectorised (exact, in fixed point):
            # S_t = T_t - min(0, min_{s<=t} T_s) with T = S_0 + cumsum(llr).
            walk = state.statistic + np.cumsum(np.rint(llr * _SCALE).astype(np.int64))
            stat = walk - np.minimum(0, np.minimum.accumulate(walk))
            hit = np.flatnonzero(stat >= self._h_fixed)
            if hit.size:
                index = at + int(hit[0])
                state.n += index + 1 - at
                self._note_recent(state, x[start : index + 1])
                state.statistic = int(stat[hit[0]])
                recovery = self._resolved[severity] = self._describe(state)
                del self._firing[severity]
                value = recovery.rate_recent if recovery.rate_recent is not None else math.nan
                out.append(
                    (index, Transition("resolved", severity, value, state.rate_before))
                )
            else:
                state.n += stop - at
                self._note_recent(state, x[start:stop])
                state.statistic = int(stat[-1])

    def _estimate(self, state: _Firing, sample: npt.NDArray[np.float64]) -> None:
        n = sample.shape[0]
        mean = float(sample.mean())
        variance = float(sample.var(ddof=1))
        p0 = state.rate_before
        if self.binary:
            p0 = min(max(p0, _P_CLIP), 1 - _P_CLIP)
            state.rate_before = p0
            spread = math.sqrt(max(mean * (1 - mean), p0 * (1 - p0)) / n)
        else:
            spread = math.sqrt(variance / n)
        gap = max((mean - p0) / 2.0, 2.0 * spread, 1e-9)
        degraded = p0 + gap
        if self.binary:
            degraded = min(degraded, 1 - _P_CLIP)
        state.degraded = degraded
        state.variance = max(variance, 1e-12)

    def _llr(self, state: _Firing, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        p0, pd = state.rate_before, state.degraded
        assert pd is not None
        if self.binary:
            one = math.log(p0 / pd)
            zero = math.log((1 - p0) / (1 - pd))
            llr: npt.NDArray[np.float64] = zero + (one - zero) * x
            return llr
        return (pd - p0) / state.variance * ((p0 + pd) / 2.0 - x)

    def _note_recent(self, state: _Firing, part: npt.NDArray[np.float64]) -> None:
        # The latest `estimate_size` errors, for the resolve alert's evidence.
        state.recent = np.concatenate((state.recent, part))[-self.estimate_size :]

    def _describe(self, state: _Firing) -> Recovery:
        return Recovery(
            rate_before=state.rate_before,
            rate_degraded=state.degraded,
            rate_recent=float(state.recent.mean()) if state.recent.size else None,
            statistic=state.statistic / _SCALE,
            threshold=self._h,
            n_since_firing=state.n,
        )

    def __repr__(self) -> str:
        return (
            f"ChangePointAlertState(false_resolve_rate={self.false_resolve_rate}, "
            f"estimate_size={self.estimate_size}, binary={self.binary}, "
            f"firing={sorted(self._firing)})"
        )


class DriftedSample:
    """What a drifted feature looked like while its drift alert fired: the sample a recovery is
    tested against.

    A drift alert fires when the current window differs from the reference. It must resolve
    only when the change is undone: the window is consistent with the reference again *and*
    the data since then differs from the drifted state, by the same test (KS for numeric
    features, chi-square for categories) at the same threshold that fired it. A persistent shift
    then resolves with the probability of a false alarm, and a shift too small to be detected
    reliably (one that fired on a lucky window) does not resolve just because later windows miss
    significance.

    The drifted sample starts as the window that fired. The first window made only of later
    events that still looks drifted (not consistent with the reference) replaces it, since the
    firing window may mix events from before the change and was picked for being extreme; later
    such windows are added to it. Windows that look recovered are pooled the same way (a drifted
    window empties the pool), so a small shift's recovery, invisible to one window, is found once
    the pool is as large as the sample that found the shift. Both keep at most ``capacity``
    values (numeric) or counted events (categorical), the newest.

    Parameters
    ----------
    window
        The firing window: numeric values (NaN = none) or category codes (-1 = none).
    categorical
        Whether the values are category codes.
    fresh_from
        The event count from which a window holds no event of this one.
    capacity
        Most values (or counted events) kept on each side.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> drifted = DriftedSample(rng.normal(0.5, 1, 1000), categorical=False, fresh_from=1000)
    >>> drifted.absorb(rng.normal(0.5, 1, 1000), n_seen=2000, n_current=1000)  # still drifted
    True
    >>> drifted.recovery_p_value(rng.normal(0.0, 1, 1000), n_seen=3000, n_current=1000) < 1e-9
    True
    >>> drifted.pool_size
    1000

    """

    def __init__(
        self, window: np.ndarray, categorical: bool, fresh_from: int, capacity: int = 5000
    ) -> None:
        _check_count("capacity", capacity, 1)
        self.categorical = categorical
        self.capacity = capacity
        self._drifted = self._usable(window)
        self._drifted_from = fresh_from
        self._replaced = False
        self._pool: npt.NDArray[np.float64] | None = None
        self._pool_from = fresh_from

    @property
    def size(self) -> int:
        """Values (numeric) or counted events (categorical) in the drifted sample."""
        return self._count(self._drifted)

    @property
    def pool_size(self) -> int:
        """Values (or counted events) in the pool of windows that look recovered."""
        return 0 if self._pool is None else self._count(self._pool)

    def absorb(self, window: np.ndarray, n_seen: int, n_current: int) -> bool:
        """Take in a window that still looks drifted (``n_seen`` events seen, ``n_current`` of
        them in the window) if it holds only events the sample does not have yet, and empty the
        recovered pool. Returns whether the window was taken."""
        self._pool = None
        if n_seen < self._drifted_from:
            return False
        usable = self._usable(window)
        if not self._replaced:
            self._drifted, self._replaced = usable, True
        else:
            self._drifted = self._merge(self._drifted, usable)
        self._drifted_from = n_seen + n_current
        return True

    def recovery_p_value(self, window: np.ndarray, n_seen: int, n_current: int) -> float:
        """Pool a window that looks recovered (when it holds only new events; else it stands in
        for the pool's newest part) and return the p-value of "the pool comes from the drifted
        distribution"."""
        usable = self._usable(window)
        if self._pool is None:
            self._pool, self._pool_from = usable, n_seen + n_current
        elif n_seen >= self._pool_from:
            self._pool = self._merge(self._pool, usable)
            self._pool_from = n_seen + n_current
        return self._p_value(self._drifted, self._pool)

    def _p_value(self, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
        if self.categorical:
            size = max(a.shape[0], b.shape[0])
            _, p, _ = chi_square_2samp(_padded(a, size), _padded(b, size))
            return float(p)
        _, p = ks_2samp(np.sort(a), b)
        return float(p)

    def _merge(
        self, old: npt.NDArray[np.float64], new: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        if not self.categorical:
            return np.concatenate((old, new))[-self.capacity :]
        size = max(old.shape[0], new.shape[0])
        total = _padded(old, size) + _padded(new, size)
        return total * min(1.0, self.capacity / max(float(total.sum()), 1.0))

    def _count(self, values: npt.NDArray[np.float64]) -> int:
        return round(float(values.sum())) if self.categorical else int(values.shape[0])

    def _usable(self, window: np.ndarray) -> npt.NDArray[np.float64]:
        if self.categorical:
            codes = np.asarray(window, dtype=np.int64)
            return np.bincount(codes[codes >= 0]).astype(np.float64)
        values = np.asarray(window, dtype=np.float64)
        return values[~np.isnan(values)].copy()

    def __repr__(self) -> str:
        return (
            f"DriftedSample(categorical={self.categorical}, size={self.size}, "
            f"pool_size={self.pool_size}, capacity={self.capacity})"
        )


def _padded(counts: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    out = np.zeros(size)
    out[: counts.shape[0]] = counts
    return out
