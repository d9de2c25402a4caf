"""Alert state of a change-point detector: fire at a degradation, resolve on established recovery.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.alerting import _ORDER, SEVERITIES, Severity, Transition, _check_count

__all__ = ["ChangePointAlertState", "ChangeSignal", "Recovery"]

_P_CLIP = 1e-6


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
    post_sum: float = 0.0
    post_sumsq: float = 0.0
    degraded: float | None = None  # pd, once estimated
    variance: float = 0.0  # of the post-change errors (losses)
    statistic: float = 0.0
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
                part = x[at : at + take]
                state.n += take
                state.post_sum += float(part.sum())
                state.post_sumsq += float(np.dot(part, part))
                at += take
                if state.n >= self.estimate_size:
                    self._estimate(state)
            if state.degraded is None or at >= stop:
                self._note_recent(state, x[start:stop])
                continue

            llr = self._llr(state, x[at:stop])
            # Page's CUSUM with a reflecting barrier at 0, vectorised:
            # S_t = T_t - min(0, min_{s<=t} T_s) with T = S_0 + cumsum(llr).
            walk = state.statistic + np.cumsum(llr)
            stat = walk - np.minimum(0.0, np.minimum.accumulate(walk))
            hit = np.flatnonzero(stat >= self._h)
            if hit.size:
                index = at + int(hit[0])
                state.n += index + 1 - at
                self._note_recent(state, x[start : index + 1])
                state.statistic = float(stat[hit[0]])
                recovery = self._resolved[severity] = self._describe(state)
                del self._firing[severity]
                value = recovery.rate_recent if recovery.rate_recent is not None else math.nan
                out.append(
                    (index, Transition("resolved", severity, value, state.rate_before))
                )
            else:
                state.n += stop - at
                self._note_recent(state, x[start:stop])
                state.statistic = float(stat[-1])

    def _estimate(self, state: _Firing) -> None:
        n = state.n
        mean = state.post_sum / n
        variance = max(state.post_sumsq / n - mean * mean, 0.0) * n / (n - 1)
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
            statistic=state.statistic,
            threshold=self._h,
            n_since_firing=state.n,
        )

    def __repr__(self) -> str:
        return (
            f"ChangePointAlertState(false_resolve_rate={self.false_resolve_rate}, "
            f"estimate_size={self.estimate_size}, binary={self.binary}, "
            f"firing={sorted(self._firing)})"
        )
