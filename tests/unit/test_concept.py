"""Concept drift detectors: exact detections on seeded streams (river style) and invariants."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.drift import binary

from driftline.detectors.concept import DETECTORS, ConceptDriftDetector, ConceptSignal

FAST = [d for d in DETECTORS if d != "kswin"]  # KSWIN costs ~0.5 ms per event: short streams


def two_phase(seed: int, before: float, after: float, n1: int, n2: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(n1) < before, rng.random(n2) < after]).astype(np.float64)


# 3,000 events at error rate 0.10, then 3,000 at 0.40.
DEGRADING = two_phase(7, 0.10, 0.40, 3_000, 3_000)
# KSWIN's KS test on 30 binary values needs a large jump: 300 at 0.10, then 300 at 0.80.
DEGRADING_SHORT = two_phase(21, 0.10, 0.80, 300, 300)


def criticals(signals: list[ConceptSignal]) -> list[int]:
    return [s.index for s in signals if s.severity == "critical"]


def warnings(signals: list[ConceptSignal]) -> list[int]:
    return [s.index for s in signals if s.severity == "warning"]


@pytest.mark.parametrize(
    ("detector", "expected_criticals", "n_warnings"),
    [
        ("adwin", [3103], 0),
        ("page_hinkley", [3140], 0),
        ("ddm", [3184, 4019], 802),
        ("hddm_a", [3121], 19),
        ("hddm_w", [3101, 4654, 5132, 5524], 50),
        ("fhddm", [3077, 4743], 0),
        (
            "eddm",
            [3137, 3968, 4261, 4381, 4440, 4737, 4872, 5187, 5424, 5522, 5586, 5772, 5858, 5934],
            1754,
        ),
    ],
)
def test_detection_indices_on_a_seeded_degrading_stream(
    detector: str, expected_criticals: list[int], n_warnings: int
) -> None:
    signals = ConceptDriftDetector(detector).update(DEGRADING)
    assert criticals(signals) == expected_criticals
    assert len(warnings(signals)) == n_warnings
    assert [s.index for s in signals] == sorted(s.index for s in signals)


def test_kswin_detection_index_on_a_seeded_stream() -> None:
    signals = ConceptDriftDetector("kswin", seed=0).update(DEGRADING_SHORT)
    assert criticals(signals) == [321]


def test_adwin_detects_a_nine_point_accuracy_drop_within_1000_events() -> None:
    """The default detector and parameters; the calibration over 20 seeds is in the docstring."""
    errors = two_phase(42, 0.10, 0.19, 20_000, 2_000)
    signals = ConceptDriftDetector().update(errors)
    assert criticals(signals) == [20_287]
    (s,) = signals
    assert s.error_before == pytest.approx(0.098, abs=0.001)
    assert s.error_recent == pytest.approx(0.215, abs=0.001)
    assert (s.n_before, s.n_recent) == (20_088, 200)


def test_error_before_and_recent_are_the_segment_means() -> None:
    """DDM's 2nd drift: its segment starts after the 1st; recent = the last 200 events."""
    signals = ConceptDriftDetector("ddm").update(DEGRADING)
    first, second = (s for s in signals if s.severity == "critical")
    assert first.error_before == pytest.approx(DEGRADING[: 3184 - 199].mean(), rel=1e-12)
    assert first.error_recent == pytest.approx(DEGRADING[3184 - 199 : 3185].mean(), rel=1e-12)
    start = 3185
    assert second.n_before == 4019 - start + 1 - 200
    assert second.error_before == pytest.approx(DEGRADING[start : 4019 - 199].mean(), rel=1e-12)
    assert second.error_recent == pytest.approx(DEGRADING[4019 - 199 : 4020].mean(), rel=1e-12)


def test_signals_match_river_called_directly() -> None:
    """The wrapper adds no detection of its own: FHDDM is river's, fed 1 - error."""
    river_fhddm = binary.FHDDM()
    direct = []
    for i, e in enumerate(DEGRADING.astype(int).tolist()):
        river_fhddm.update(1 - e)
        if river_fhddm.drift_detected:
            direct.append(i)
    mine = ConceptDriftDetector("fhddm", degradation_only=False).update(DEGRADING)
    assert criticals(mine) == direct


# Seed 8: no detector false-alarms on the stationary 0.30 prefix, so any critical would be a
# response to the improvement. (On other seeds EDDM false-alarms at rate 0.30 before the change.)
IMPROVING = two_phase(8, 0.30, 0.05, 2_000, 4_000)
IMPROVING_SHORT = two_phase(21, 0.80, 0.10, 300, 300)


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_critical_signal_on_an_improving_stream(detector: str) -> None:
    errors = IMPROVING_SHORT if detector == "kswin" else IMPROVING
    det = ConceptDriftDetector(detector)
    assert criticals(det.update(errors)) == []
    if not det.one_sided:  # the two-sided detector did see the change and it was dropped
        assert det.n_drifts == 1
        undropped = ConceptDriftDetector(detector, degradation_only=False).update(errors)
        assert len(criticals(undropped)) == 1


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_adwin_keeps_only_drifts_whose_cut_got_worse(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rates = rng.choice([0.05, 0.15, 0.30], size=6)
    errors = np.concatenate([rng.random(1_500) < r for r in rates]).astype(np.float64)
    kept = ConceptDriftDetector("adwin", {"delta": 0.002}).update(errors)
    everything = ConceptDriftDetector("adwin", {"delta": 0.002}, degradation_only=False).update(
        errors
    )
    assert set(criticals(kept)) <= set(criticals(everything))
    for s in kept:
        # Both measures of the change agree on its direction for these large steps.
        assert s.error_recent > s.error_before


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_no_signal_on_a_constant_stream(detector: str, value: float) -> None:
    n = 500 if detector == "kswin" else 5_000
    det = ConceptDriftDetector(detector, degradation_only=False)
    assert det.update(np.full(n, value)) == []
    assert det.n_drifts == 0


@pytest.mark.parametrize("detector", ["adwin", "kswin", "page_hinkley"])
def test_no_signal_on_a_constant_loss_stream(detector: str) -> None:
    det = ConceptDriftDetector(detector, binary_input=False, degradation_only=False)
    assert det.update(np.full(500, 0.7)) == []


def test_regression_losses_with_adwin() -> None:
    rng = np.random.default_rng(3)
    losses = np.concatenate([rng.exponential(1.0, 3_000), rng.exponential(2.0, 3_000)])
    signals = ConceptDriftDetector("adwin", binary_input=False).update(losses)
    assert criticals(signals) == [3071]
    assert signals[0].error_before == pytest.approx(0.989, abs=0.001)
    assert signals[0].error_recent == pytest.approx(1.489, abs=0.001)


@pytest.mark.parametrize("detector", DETECTORS)
def test_pickle_round_trip_continues_identically(detector: str) -> None:
    errors = DEGRADING_SHORT if detector == "kswin" else DEGRADING
    cut = len(errors) // 2 + 7
    a = ConceptDriftDetector(detector)
    a.update(errors[:cut])
    b = pickle.loads(pickle.dumps(a))
    assert a.update(errors[cut:]) == b.update(errors[cut:])
    assert (a.n_seen, a.n_drifts, a.error_rate) == (b.n_seen, b.n_drifts, b.error_rate)


@settings(max_examples=15, deadline=None)
@given(
    st.sampled_from(["adwin", "ddm", "eddm", "hddm_w", "fhddm"]),
    st.lists(st.integers(0, len(DEGRADING)), max_size=6),
)
def test_batching_does_not_change_the_signals(detector: str, cuts: list[int]) -> None:
    whole = ConceptDriftDetector(detector).update(DEGRADING)
    det = ConceptDriftDetector(detector)
    pieces: list[ConceptSignal] = []
    bounds = sorted({0, len(DEGRADING), *cuts})
    for lo, hi in itertools.pairwise(bounds):
        pieces += [replace(s, index=s.index + lo) for s in det.update(DEGRADING[lo:hi])]
    assert len(pieces) == len(whole)
    for p, w in zip(pieces, whole, strict=True):
        assert (p.index, p.severity, p.n_before, p.n_recent) == (
            w.index,
            w.severity,
            w.n_before,
            w.n_recent,
        )
        assert p.error_recent == pytest.approx(w.error_recent, rel=1e-9)
        assert p.error_before == pytest.approx(w.error_before, rel=1e-9, nan_ok=True)


def test_kswin_is_seeded() -> None:
    runs = [
        criticals(ConceptDriftDetector("kswin", seed=s).update(DEGRADING_SHORT)) for s in (0, 0)
    ]
    assert runs[0] == runs[1]
    assert ConceptDriftDetector("kswin", seed=3).river_params["seed"] == 3


def test_properties() -> None:
    det = ConceptDriftDetector(recent_window=100)
    assert det.detector_name == "adwin"
    assert det.river_params["delta"] == 1e-4
    assert np.isnan(det.error_rate)
    det.update(DEGRADING[:2_500])
    det.update(DEGRADING[2_500:3_050])
    assert det.n_seen == 3_050
    assert det.error_rate == pytest.approx(DEGRADING[2_950:3_050].mean(), rel=1e-12)
    assert det.update(np.array([])) == []


def test_river_params_override_defaults() -> None:
    det = ConceptDriftDetector("adwin", {"delta": 0.01, "clock": 1})
    assert det.river_params == {"delta": 0.01, "clock": 1}
    assert det.params == {"delta": 0.01, "clock": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"detector": "cusum"}, r"^detector: unknown 'cusum'"),
        ({"params": {"delt": 0.1}}, r"^params: 'delt' is not a parameter of 'adwin'; allowed: \["),
        ({"detector": "kswin", "params": {"seed": 1}}, r"^params: 'seed'"),
        ({"detector": "kswin", "params": {"alpha": 2.0}}, r"^params: invalid for 'kswin'"),
        ({"detector": "ddm", "binary_input": False}, r"^binary_input: detector 'ddm'"),
        ({"detector": "fhddm", "binary_input": False}, r"^binary_input"),
        ({"binary_input": 1}, r"^binary_input"),
        ({"degradation_only": "yes"}, r"^degradation_only"),
        ({"seed": 1.5}, r"^seed"),
        ({"recent_window": 0}, r"^recent_window"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConceptDriftDetector(**kwargs)  # type: ignore[arg-type]


def test_unknown_param_message_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'delta', 'clock', 'max_buckets'"):
        ConceptDriftDetector("adwin", {"bogus": 1})


@pytest.mark.parametrize(
    ("errors", "binary_input"),
    [
        (np.array([0.0, 0.5]), True),
        (np.array([0.0, 2.0]), True),
        (np.array([0.0, np.nan]), False),
        (np.array([[0.0, 1.0]]), True),
    ],
)
def test_update_rejects_bad_errors_without_changing_state(
    errors: np.ndarray, binary_input: bool
) -> None:
    det = ConceptDriftDetector("adwin", binary_input=binary_input)
    with pytest.raises(ValueError, match=r"^errors"):
        det.update(errors)
    assert det.n_seen == 0
