"""Reference profiles: what "normal" looks like for each feature, the baseline of drift tests.

A profile is built once (from the first N events, or offline from training data by
``driftline profile``) and then frozen. It keeps what the tests need and nothing per event:
a numeric feature keeps moments, quantiles, quantile bins and a sorted sketch of at most
``sample_size`` order statistics (for KS and Wasserstein); a categorical feature keeps the counts
of its top-K categories and pools the rest. Floats are rounded to 9 significant digits when the
profile is built, so ``from_dict(to_dict(p))`` is exactly ``p`` and a profile written to JSON
behaves exactly like the one held in memory.

Summaries (:func:`numeric_summary`, :func:`categorical_summary`) have the same shape for a
profile and for a window of current values, so alert evidence can show them side by side.

What the monitors hold is a :class:`FeatureReference`: one per model, shared by data drift and
data quality, made from a profile or filled from the first N events into one array allocated up
front, then condensed (a float32 sketch of ``sample_size`` order statistics per numeric
feature; bins, statistics and counts exact). :mod:`detectors.sketch` tests windows against
the sketches.
"""

from __future__ import annotations

import math
import mmap
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from driftline.detectors.columns import FeatureColumns, FeatureKind, encode_with, null_mask
from driftline.detectors.estimated import IsotonicCalibrator
from driftline.detectors.multivariate import FeatureCorrelation
from driftline.detectors.stats import bin_counts, bin_counts_sorted, quantile_edges

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_KEYS = ("p1", "p5", "p25", "p50", "p75", "p95", "p99")
_PROBS = np.array(QUANTILES)
SCHEMA_VERSION = 1
_PROFILE_DIGITS = 9
_SUMMARY_DIGITS = 6
_SUMMARY_TOP = 10


def _round(x: float, digits: int = _PROFILE_DIGITS) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def _round_array(values: np.ndarray, digits: int = _PROFILE_DIGITS) -> np.ndarray:
    out = np.array([float(f"{v:.{digits}g}") for v in values.tolist()], dtype=np.float64)
    out.flags.writeable = False
    return out


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _from_json_float(x: object) -> float:
    return math.nan if x is None else float(x)  # type: ignore[arg-type]


def _rate(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


# -- summaries -------------------------------------------------------------------------------


_Stats = tuple[float, float, float, float, np.ndarray]  # min, max, mean, std, quantiles


def numeric_summary(values: np.ndarray) -> dict[str, Any]:
    """Summary of a window of numeric values (NaN = no usable value).

    >>> numeric_summary(np.array([1.0, 2.0, 3.0, np.nan]))["quantiles"]["p50"]
    2.0
    """
    finite = np.sort(values[~np.isnan(values)])
    return summary_of_sorted(finite, values.shape[0])


def summary_of_sorted(sorted_finite: np.ndarray, n_rows: int) -> dict[str, Any]:
    """:func:`numeric_summary` of ``n_rows`` rows whose usable values, sorted, are given."""
    counts = np.array([sorted_finite.shape[0]])
    return summaries_of_sorted_rows(sorted_finite[None, :], counts, n_rows)[0]


def summaries_of_sorted_rows(
    values: np.ndarray, counts: np.ndarray, n_rows: int
) -> list[dict[str, Any]]:
    """:func:`numeric_summary` of every row of a window: row ``i`` of ``values`` holds
    ``counts[i]`` sorted values, then padding (NaN); the window had ``n_rows`` events."""
    return [
        _format_numeric(int(counts[i]), _rate(n_rows - int(counts[i]), n_rows), stats)
        for i, stats in enumerate(_numeric_stats_rows(values, counts))
    ]


def _numeric_stats(sorted_finite: np.ndarray) -> _Stats:
    return _numeric_stats_rows(sorted_finite[None, :], np.array([sorted_finite.shape[0]]))[0]


def _numeric_stats_rows(values: np.ndarray, counts: np.ndarray) -> list[_Stats]:
    """Min, max, mean, std (population) and :data:`QUANTILES` of each row (see above)."""
    n_rows, width = values.shape
    if width == 0:
        values = np.full((n_rows, 1), np.nan)
        width = 1
    present = np.arange(width)[None, :] < counts[:, None]
    last = np.maximum(counts - 1, 0)
    minimum = values[:, 0]
    maximum = values[np.arange(n_rows), last]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(present, values, 0.0).sum(axis=1) / counts
        deviation = np.where(present, values - mean[:, None], 0.0)
        std = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / counts)
        position = _PROBS[None, :] * last[:, None]
        lo = np.floor(position).astype(np.int64)
        hi = np.minimum(lo + 1, last[:, None])
        frac = position - lo
        a = np.take_along_axis(values, lo, axis=1)
        b = np.take_along_axis(values, hi, axis=1)
        quantiles = np.where(frac > 0, a + (b - a) * frac, a)
    out: list[_Stats] = []
    for i in range(n_rows):
        if counts[i] == 0:
            nan = math.nan
            out.append((nan, nan, nan, nan, np.full(len(QUANTILES), nan)))
        elif minimum[i] == maximum[i]:  # constant: exact, not a rounding-error std
            value = float(minimum[i])
            out.append((value, value, value, 0.0, np.full(len(QUANTILES), value)))
        else:
            out.append(
                (float(minimum[i]), float(maximum[i]), float(mean[i]), float(std[i]), quantiles[i])
            )
    return out


def _format_numeric(count: int, null_rate: float, stats: _Stats) -> dict[str, Any]:
    minimum, maximum, mean, std, quantiles = stats

    def r(x: float) -> float | None:
        return _json_float(_round(float(x), _SUMMARY_DIGITS))

    return {
        "count": int(count),
        "null_rate": r(null_rate),
        "mean": r(mean),
        "std": r(std),
        "min": r(minimum),
        "max": r(maximum),
        "quantiles": {k: r(q) for k, q in zip(QUANTILE_KEYS, quantiles.tolist(), strict=True)},
    }


def categorical_summary(
    categories: Sequence[str], code_counts: np.ndarray, n_rows: int, top: int = _SUMMARY_TOP
) -> dict[str, Any]:
    """Summary of categorical counts: ``code_counts[i]`` counts ``categories[i]`` and the last
    entry counts every other category. Shares are of non-null values; ``top`` limits how many
    categories are listed (in the order given, the reference's order), the rest go to "other".

    >>> categorical_summary(["a", "b"], np.array([3, 1, 0]), n_rows=5)
    {'count': 4, 'null_rate': 0.2, 'top': {'a': 0.75, 'b': 0.25}, 'other': 0.0}
    """
    count = int(code_counts.sum())
    shares = code_counts / count if count > 0 else np.zeros(code_counts.shape[0])
    listed = min(top, len(categories))
    return {
        "count": count,
        "null_rate": _round(_rate(n_rows - count, n_rows), _SUMMARY_DIGITS),
        "top": {categories[i]: _round(float(shares[i]), _SUMMARY_DIGITS) for i in range(listed)},
        "other": _round(float(shares[listed:].sum()), _SUMMARY_DIGITS),
    }


# -- profiles ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class NumericProfile:
    """Reference profile of one numeric feature.

    ``count`` rows had a usable value out of ``n_rows``; ``n_missing`` were absent or null and
    ``n_type_mismatch`` held something else. Bins: ``edges`` is ``[-inf, *inner_edges, +inf]``
    where the inner edges are the distinct reference quantiles at ``1/n_bins, ...`` (observed
    values, see :func:`~detectors.stats.quantile_edges`), so each bin holds ~1/n_bins of the
    reference and values beyond the reference range still land in an
    (open) outer bin. ``sample`` is a sorted sketch: at most ``sample_size`` evenly spaced order
    statistics (the ``(i + 0.5) / s`` quantiles), enough for KS and Wasserstein (its ECDF is
    within ``1 / s`` of the full one).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> profile = NumericProfile.from_values(rng.normal(size=5000), sample_size=100)
    >>> profile.count, profile.sample.shape, len(profile.edges)
    (5000, (100,), 11)
    >>> round(profile.quantiles["p50"], 2), NumericProfile.from_dict(profile.to_dict()) is not None
    (-0.03, True)
    """

    n_rows: int
    count: int
    n_missing: int
    n_type_mismatch: int
    min: float
    max: float
    mean: float
    std: float
    quantiles: dict[str, float]
    inner_edges: np.ndarray
    bin_proportions: np.ndarray
    sample: np.ndarray
    edges: np.ndarray = field(init=False, repr=False)
    kind: ClassVar[FeatureKind] = "numeric"

    def __post_init__(self) -> None:
        edges = np.concatenate([[-np.inf], self.inner_edges, [np.inf]])
        edges.flags.writeable = False
        object.__setattr__(self, "edges", edges)

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        missing: np.ndarray | None = None,
        type_mismatch: np.ndarray | None = None,
        *,
        n_bins: int = 10,
        sample_size: int = 2000,
    ) -> NumericProfile:
        """Profile of ``values`` (float, NaN = no usable value)."""
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        if sample_size < 1:
            raise ValueError("sample_size must be >= 1")
        values = np.asarray(values, dtype=np.float64)
        finite = np.sort(values[~np.isnan(values)])
        count = int(finite.shape[0])
        minimum, maximum, mean, std, quantiles = _numeric_stats(finite)
        if count:
            inner = np.unique(_round_array(quantile_edges(finite, n_bins)))
            if count > sample_size:
                picks = ((np.arange(sample_size) + 0.5) * (count / sample_size)).astype(np.int64)
                sample = finite[picks]
            else:
                sample = finite
        else:
            inner = np.empty(0)
            sample = np.empty(0)
        edges = np.concatenate([[-np.inf], inner, [np.inf]])
        props = bin_counts(finite, edges) / max(count, 1)
        return cls(
            n_rows=int(values.shape[0]),
            count=count,
            n_missing=0 if missing is None else int(np.count_nonzero(missing)),
            n_type_mismatch=0 if type_mismatch is None else int(np.count_nonzero(type_mismatch)),
            min=_round(minimum),
            max=_round(maximum),
            mean=_round(mean),
            std=_round(std),
            quantiles={
                k: _round(q) for k, q in zip(QUANTILE_KEYS, quantiles.tolist(), strict=True)
            },
            inner_edges=_round_array(inner),
            bin_proportions=_round_array(props),
            sample=_round_array(sample),
        )

    @property
    def null_rate(self) -> float:
        """Share of rows where the feature was absent or null."""
        return _rate(self.n_missing, self.n_rows)

    @property
    def type_mismatch_rate(self) -> float:
        """Share of rows holding a value that is not a finite number."""
        return _rate(self.n_type_mismatch, self.n_rows)

    def summary(self) -> dict[str, Any]:
        """Same shape as :func:`numeric_summary` of a current window."""
        quantiles = np.array([self.quantiles[k] for k in QUANTILE_KEYS])
        null_rate = _rate(self.n_rows - self.count, self.n_rows)
        stats = (self.min, self.max, self.mean, self.std, quantiles)
        return _format_numeric(self.count, null_rate, stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_rows": self.n_rows,
            "count": self.count,
            "n_missing": self.n_missing,
            "n_type_mismatch": self.n_type_mismatch,
            "null_rate": _round(self.null_rate),
            "type_mismatch_rate": _round(self.type_mismatch_rate),
            "min": _json_float(self.min),
            "max": _json_float(self.max),
            "mean": _json_float(self.mean),
            "std": _json_float(self.std),
            "quantiles": {k: _json_float(self.quantiles[k]) for k in QUANTILE_KEYS},
            "inner_bin_edges": self.inner_edges.tolist(),
            "bin_proportions": self.bin_proportions.tolist(),
            "sample": self.sample.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericProfile:
        try:
            inner = np.asarray(data["inner_bin_edges"], dtype=np.float64)
            props = np.asarray(data["bin_proportions"], dtype=np.float64)
            sample = np.sort(np.asarray(data["sample"], dtype=np.float64))
            quantiles = {k: _from_json_float(data["quantiles"][k]) for k in QUANTILE_KEYS}
            profile = cls(
                n_rows=int(data["n_rows"]),
                count=int(data["count"]),
                n_missing=int(data["n_missing"]),
                n_type_mismatch=int(data["n_type_mismatch"]),
                min=_from_json_float(data["min"]),
                max=_from_json_float(data["max"]),
                mean=_from_json_float(data["mean"]),
                std=_from_json_float(data["std"]),
                quantiles=quantiles,
                inner_edges=_frozen(inner),
                bin_proportions=_frozen(props),
                sample=_frozen(sample),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed numeric profile: {exc!r}") from exc
        if props.shape[0] != inner.shape[0] + 1:
            raise ValueError(
                "malformed numeric profile: bin_proportions must have one entry "
                "more than inner_bin_edges"
            )
        if inner.shape[0] and (not np.all(np.isfinite(inner)) or np.any(np.diff(inner) <= 0)):
            raise ValueError(
                "malformed numeric profile: inner_bin_edges must be finite and strictly increasing"
            )
        if sample.shape[0] and not np.all(np.isfinite(sample)):
            raise ValueError("malformed numeric profile: sample must be finite")
        return profile


@dataclass(frozen=True, slots=True, eq=False)
class CategoricalProfile:
    """Reference profile of one categorical feature.

    ``categories`` are the ``top_k`` most frequent categories (ties by name), most frequent
    first, with their ``counts``; every other category is pooled in ``other_count`` (from
    ``other_distinct`` distinct categories). Category *codes*: ``i`` for ``categories[i]``,
    ``len(categories)`` for anything else ("other": pooled or never seen), ``-1`` for no value.

    Examples
    --------
    >>> values = np.array(["a", "b", "a", None, "c", "a"], dtype=object)
    >>> profile = CategoricalProfile.from_values(values, top_k=2)
    >>> profile.categories, profile.counts, profile.other_count
    (('a', 'b'), (3, 1), 1)
    >>> profile.encode(np.array(["b", "z", None], dtype=object)).tolist()
    [1, 2, -1]
    """

    n_rows: int
    count: int
    n_missing: int
    n_type_mismatch: int
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    other_count: int
    other_distinct: int
    _lookup: dict[str | None, int] = field(init=False, repr=False)
    kind: ClassVar[FeatureKind] = "categorical"

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.counts):
            raise ValueError("categories and counts must have the same length")
        # Code by category; a repeated category keeps its first code.
        lookup: dict[str | None, int] = {}
        for code, category in enumerate(self.categories):
            lookup.setdefault(category, code)
        lookup[None] = -1
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        missing: np.ndarray | None = None,
        type_mismatch: np.ndarray | None = None,
        *,
        top_k: int = 50,
    ) -> CategoricalProfile:
        """Profile of ``values`` (object array of str, None = no usable value)."""
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        present = values[~null_mask(values)]
        if present.shape[0]:
            names, counts = np.unique(present.astype(np.str_), return_counts=True)
        else:
            names, counts = np.empty(0, dtype=np.str_), np.empty(0, dtype=np.int64)
        order = np.lexsort((names, -counts))
        top, rest = order[:top_k], order[top_k:]
        return cls(
            n_rows=int(values.shape[0]),
            count=int(present.shape[0]),
            n_missing=0 if missing is None else int(np.count_nonzero(missing)),
            n_type_mismatch=0 if type_mismatch is None else int(np.count_nonzero(type_mismatch)),
            categories=tuple(str(x) for x in names[top].tolist()),
            counts=tuple(int(x) for x in counts[top].tolist()),
            other_count=int(counts[rest].sum()),
            other_distinct=int(rest.shape[0]),
        )

    @property
    def null_rate(self) -> float:
        """Share of rows where the feature was absent or null."""
        return _rate(self.n_missing, self.n_rows)

    @property
    def type_mismatch_rate(self) -> float:
        """Share of rows holding a number (or another non-category) instead of a string."""
        return _rate(self.n_type_mismatch, self.n_rows)

    @property
    def code_counts(self) -> np.ndarray:
        """Counts by code: the categories in order, then "other"."""
        return np.array([*self.counts, self.other_count], dtype=np.int64)

    @property
    def shares(self) -> np.ndarray:
        """Shares of non-null values by code (categories, then "other")."""
        counts = self.code_counts
        return counts / counts.sum() if self.count > 0 else np.zeros(counts.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the category lookup table."""
        return sys.getsizeof(self._lookup)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of ``values`` (object array of str / None); see the class docstring."""
        return encode_with(self._lookup, values, len(self.categories))

    def summary(self) -> dict[str, Any]:
        """Same shape as :func:`categorical_summary` of a current window."""
        return categorical_summary(self.categories, self.code_counts, self.n_rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_rows": self.n_rows,
            "count": self.count,
            "n_missing": self.n_missing,
            "n_type_mismatch": self.n_type_mismatch,
            "null_rate": _round(self.null_rate),
            "type_mismatch_rate": _round(self.type_mismatch_rate),
            "categories": [[c, n] for c, n in zip(self.categories, self.counts, strict=True)],
            "other_count": self.other_count,
            "other_distinct": self.other_distinct,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalProfile:
        try:
            pairs = [(str(c), int(n)) for c, n in data["categories"]]
            profile = cls(
                n_rows=int(data["n_rows"]),
                count=int(data["count"]),
                n_missing=int(data["n_missing"]),
                n_type_mismatch=int(data["n_type_mismatch"]),
                categories=tuple(c for c, _ in pairs),
                counts=tuple(n for _, n in pairs),
                other_count=int(data["other_count"]),
                other_distinct=int(data["other_distinct"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed categorical profile: {exc!r}") from exc
        if len(set(profile.categories)) != len(profile.categories):
            raise ValueError("malformed categorical profile: duplicate categories")
        return profile


FeatureProfile = NumericProfile | CategoricalProfile


def _frozen(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


def profile_values(
    columns: FeatureColumns,
    name: str,
    kind: FeatureKind,
    *,
    n_bins: int = 10,
    top_k: int = 50,
    sample_size: int = 2000,
) -> FeatureProfile:
    """Profile of one feature of ``columns`` (all-missing when the column is absent)."""
    cols = columns.select({name: kind})
    if kind == "numeric":
        return NumericProfile.from_values(
            cols.numeric[name],
            cols.missing[name],
            cols.type_mismatch[name],
            n_bins=n_bins,
            sample_size=sample_size,
        )
    return CategoricalProfile.from_values(
        cols.categorical[name], cols.missing[name], cols.type_mismatch[name], top_k=top_k
    )


def _profile_from_dict(data: Mapping[str, Any]) -> FeatureProfile:
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind == "numeric":
        return NumericProfile.from_dict(data)
    if kind == "categorical":
        return CategoricalProfile.from_dict(data)
    raise ValueError(f"malformed profile: unknown feature kind {kind!r}")


@dataclass(frozen=True, slots=True, eq=False)
class ModelProfile:
    """Reference profiles of one model: every feature, and optionally its score and prediction.

    Examples
    --------
    >>> from driftline.detectors.columns import columnarize
    >>> rows = [{"x": float(i % 7), "c": "ab"[i % 2]} for i in range(100)]
    >>> kinds = {"x": "numeric", "c": "categorical"}
    >>> profile = ModelProfile.from_columns(columnarize(rows, kinds), kinds)
    >>> profile.kinds()
    {'c': 'categorical', 'x': 'numeric'}
    >>> ModelProfile.from_dict(profile.to_dict()).to_dict() == profile.to_dict()
    True
    """

    features: dict[str, FeatureProfile]
    score: FeatureProfile | None = None
    prediction: FeatureProfile | None = None
    n_rows: int = 0
    correlation: FeatureCorrelation | None = None
    """The Spearman matrix of the numeric features, the baseline of multivariate drift (None
    in profiles made before it existed: multivariate drift then does not run)."""
    calibration: IsotonicCalibrator | None = None
    """The calibration of the scores, learnt from labelled rows: estimated performance maps
    scores through it (None: the scores are taken as calibrated)."""

    @classmethod
    def from_columns(
        cls,
        columns: FeatureColumns,
        kinds: Mapping[str, FeatureKind],
        *,
        outputs: FeatureColumns | None = None,
        n_bins: int = 10,
        top_k: int = 50,
        sample_size: int = 2000,
        calibration: IsotonicCalibrator | None = None,
    ) -> ModelProfile:
        """Profile every feature of ``kinds`` in ``columns``.

        ``outputs`` optionally holds the model's ``"score"`` and/or ``"prediction"`` columns
        (their kinds are the dicts they sit in) for a prediction-drift baseline; ``calibration``
        is the scores' calibration, when labelled rows gave one. To profile several batches,
        :meth:`FeatureColumns.concat` them first.
        """
        options = {"n_bins": n_bins, "top_k": top_k, "sample_size": sample_size}
        features = {
            name: profile_values(columns, name, kinds[name], **options) for name in sorted(kinds)
        }
        score = prediction = None
        if outputs is not None:
            held = outputs.kinds()
            if "score" in held:
                score = profile_values(outputs, "score", held["score"], **options)
            if "prediction" in held:
                prediction = profile_values(outputs, "prediction", held["prediction"], **options)
        numeric = [name for name in sorted(kinds) if kinds[name] == "numeric"]
        block = np.full((len(numeric), columns.n), np.nan, dtype=np.float32)
        for i, name in enumerate(numeric):
            values = columns.numeric.get(name)
            if values is not None:
                block[i] = as_float32(values)
        return cls(
            features=features,
            score=score,
            prediction=prediction,
            n_rows=columns.n,
            correlation=FeatureCorrelation.of(numeric, block),
            calibration=calibration,
        )

    def kinds(self) -> dict[str, FeatureKind]:
        """Feature name -> kind, sorted by name."""
        return {name: self.features[name].kind for name in sorted(self.features)}

    def output_profile(self) -> ModelProfile | None:
        """The score/prediction profiles as a profile of features ``"score"``/``"prediction"``,
        the baseline of a prediction-drift :class:`~detectors.data_drift.DataDriftMonitor`;
        None when neither was profiled."""
        outputs = {
            name: p
            for name, p in (("prediction", self.prediction), ("score", self.score))
            if p is not None
        }
        if not outputs:
            return None
        return ModelProfile(features=outputs, n_rows=self.n_rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "n_rows": self.n_rows,
            "features": {name: self.features[name].to_dict() for name in sorted(self.features)},
            "score": None if self.score is None else self.score.to_dict(),
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "correlation": None if self.correlation is None else self.correlation.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelProfile:
        if not isinstance(data, Mapping):
            raise ValueError("malformed profile: expected an object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported profile schema_version {version!r}")
        features = data.get("features")
        if not isinstance(features, Mapping):
            raise ValueError("malformed profile: 'features' must be an object")
        score, prediction = data.get("score"), data.get("prediction")
        correlation, calibration = data.get("correlation"), data.get("calibration")
        for key, value in (("correlation", correlation), ("calibration", calibration)):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"malformed profile: {key!r} must be an object")
        try:
            n_rows = int(data.get("n_rows", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed profile: n_rows {exc!r}") from exc
        return cls(
            features={str(k): _profile_from_dict(v) for k, v in sorted(features.items())},
            score=None if score is None else _profile_from_dict(score),
            prediction=None if prediction is None else _profile_from_dict(prediction),
            n_rows=n_rows,
            correlation=None if correlation is None else FeatureCorrelation.from_dict(correlation),
            calibration=None if calibration is None else IsotonicCalibrator.from_dict(calibration),
        )


# -- the reference a model's monitors test against ------------------------------------------------

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OWN_MAPPING_BYTES = 1 << 14
_N_STATS = 4 + len(QUANTILES)  # min, max, mean, std, quantiles


def as_float32(values: np.ndarray) -> np.ndarray:
    """Numeric values as stored by the monitors: float32 (7 significant digits), finite values
    beyond the float32 range clipped to it so they stay finite; NaN stays NaN.

    >>> as_float32(np.array([0.1, 1e300, np.nan])).tolist()[1:]
    [3.4028234663852886e+38, nan]
    """
    # np.minimum/np.maximum rather than np.clip: the same values, a fraction of the call cost.
    clipped: np.ndarray = np.minimum(np.maximum(values, -_FLOAT32_MAX), _FLOAT32_MAX)
    return clipped.astype(np.float32)


def _fill_block(rows: int, size: int) -> np.ndarray:
    """A ``(rows, size)`` float32 array of zeros, its columns set (to NaN, then values) as the
    reference takes its events. One of more than a few pages gets memory of its own (an
    anonymous mapping): the system hands out its pages zeroed on first touch, so a model that
    has taken a few events holds only the pages of those columns, and the whole mapping goes
    back to the system as soon as it is freed; from the heap, the allocator would keep the hole
    (a model's fill array is freed once, when its reference is condensed, and nothing of that
    size may follow)."""
    nbytes = 4 * rows * size
    if nbytes >= _OWN_MAPPING_BYTES:
        try:
            return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(rows, size)
        except OSError:  # out of mappings: the heap will do
            pass
    return np.zeros((rows, size), dtype=np.float32)


def _edges_float32(edges: np.ndarray) -> np.ndarray:
    """Bin edges ``[-inf, *inner, +inf]`` in float32, the outer ones kept infinite."""
    out = as_float32(edges)
    out[0], out[-1] = -np.inf, np.inf
    return out


@dataclass(frozen=True, slots=True, eq=False)
class NumericReference:
    """The numeric features of a reference, stacked one row per feature so that one evaluation
    tests them all with a few array operations.

    ``sample`` (float32, ``(features, sample_size)``, padded with +inf) holds, per feature,
    ``sample_sizes[i]`` evenly spaced order statistics of its ``count[i]`` usable reference
    values (the ``(j + 0.5) / s`` quantiles; all of them when ``count[i] <= sample_size``).
    ``edges`` (float32, padded with +inf) and ``proportions`` (padded with 0) are the reference
    quantile bins, ``n_bins[i]`` of them. ``stats`` holds min, max, mean, std and
    :data:`QUANTILES` of the full reference; ``n_rows``, ``n_missing`` and ``n_type_mismatch``
    count rows as in :class:`NumericProfile`.
    """

    names: tuple[str, ...]
    n_rows: np.ndarray
    count: np.ndarray
    n_missing: np.ndarray
    n_type_mismatch: np.ndarray
    stats: np.ndarray
    sample: np.ndarray
    sample_sizes: np.ndarray
    edges: np.ndarray
    proportions: np.ndarray
    n_bins: np.ndarray

    @classmethod
    def of(cls, profiles: Mapping[str, NumericProfile], sample_size: int) -> NumericReference:
        """Stack ``profiles`` (in their order), each sample thinned to at most ``sample_size``
        evenly spaced points."""
        k = len(profiles)
        bins = max((p.bin_proportions.shape[0] for p in profiles.values()), default=1)
        sample = np.full((k, sample_size), np.inf, dtype=np.float32)
        edges = np.full((k, bins + 1), np.inf, dtype=np.float32)
        proportions = np.zeros((k, bins))
        stats = np.empty((k, _N_STATS))
        sizes = np.zeros(k, dtype=np.int64)
        for i, p in enumerate(profiles.values()):
            s = p.sample.shape[0]
            if s > sample_size:
                picks = ((np.arange(sample_size) + 0.5) * (s / sample_size)).astype(np.int64)
                kept = p.sample[picks]
            else:
                kept = p.sample
            sizes[i] = kept.shape[0]
            sample[i, : kept.shape[0]] = as_float32(kept)
            edges[i, : p.edges.shape[0]] = _edges_float32(p.edges)
            proportions[i, : p.bin_proportions.shape[0]] = p.bin_proportions
            stats[i] = [p.min, p.max, p.mean, p.std, *(p.quantiles[q] for q in QUANTILE_KEYS)]

        def ints(attr: str) -> np.ndarray:
            return np.array([getattr(p, attr) for p in profiles.values()], dtype=np.int64)

        return cls(
            names=tuple(profiles),
            n_rows=ints("n_rows"),
            count=ints("count"),
            n_missing=ints("n_missing"),
            n_type_mismatch=ints("n_type_mismatch"),
            stats=stats,
            sample=sample,
            sample_sizes=sizes,
            edges=edges,
            proportions=proportions,
            n_bins=np.array([p.bin_proportions.shape[0] for p in profiles.values()], np.int64),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        return sum(
            a.nbytes
            for a in (
                self.n_rows,
                self.count,
                self.n_missing,
                self.n_type_mismatch,
                self.stats,
                self.sample,
                self.sample_sizes,
                self.edges,
                self.proportions,
                self.n_bins,
            )
        )

    def summary(self, i: int) -> dict[str, Any]:
        """:meth:`NumericProfile.summary` of feature ``i``."""
        count, n_rows = int(self.count[i]), int(self.n_rows[i])
        row = self.stats[i]
        stats = (float(row[0]), float(row[1]), float(row[2]), float(row[3]), row[4:])
        return _format_numeric(count, _rate(n_rows - count, n_rows), stats)

    def profile(self, i: int) -> NumericProfile:
        """Feature ``i`` as a :class:`NumericProfile` (its sample the thinned one)."""
        nb = int(self.n_bins[i])
        row = self.stats[i].tolist()
        return NumericProfile(
            n_rows=int(self.n_rows[i]),
            count=int(self.count[i]),
            n_missing=int(self.n_missing[i]),
            n_type_mismatch=int(self.n_type_mismatch[i]),
            min=row[0],
            max=row[1],
            mean=row[2],
            std=row[3],
            quantiles=dict(zip(QUANTILE_KEYS, row[4:], strict=True)),
            inner_edges=_round_array(self.edges[i, 1:nb].astype(np.float64)),
            bin_proportions=_frozen(self.proportions[i, :nb].copy()),
            sample=_round_array(self.sample[i, : self.sample_sizes[i]].astype(np.float64)),
        )


class FeatureReference:
    """What "normal" looks like for a model's features, held once for every monitor that needs
    it: data drift tests against it, data quality takes its rates, ranges and categories from it.

    It is the first ``size`` events of the stream (first-N), or ``profile`` (ready at once).
    While a first-N reference fills, numeric values go to one array allocated up front,
    ``(numeric features, size)`` float32, and categorical values are only counted (per
    distinct category); no batch is kept. Once full it is condensed and the fill array freed:
    per numeric feature a sorted float32 sketch of at most ``sample_size`` order statistics
    (see :class:`NumericReference`), its quantile bins and summary statistics; per categorical
    feature a :class:`CategoricalProfile`. Statistics other than the sketch (moments,
    quantiles, bins, null and mismatch rates, category counts) are exact.

    Monitors feed it every batch with :meth:`observe`, saying where the batch starts in the
    stream, so monitors sharing a reference may all feed it: each event is taken once.

    Parameters
    ----------
    size
        Events in a first-N reference (without ``profile``).
    profile
        A reference made elsewhere, e.g. from training data by ``driftline profile``.
    n_bins, top_k, sample_size
        Quantile bins per numeric feature, categories kept per categorical feature (the others
        pooled as "other"), points in the sketch of a numeric feature.

    Examples
    --------
    >>> from driftline.detectors.columns import columnarize
    >>> kinds = {"x": "numeric", "c": "categorical"}
    >>> reference = FeatureReference(size=100, sample_size=20)
    >>> rows = [{"x": float(i), "c": "ab"[i % 2]} for i in range(150)]
    >>> reference.observe(columnarize(rows[:60], kinds), kinds, position=0)  # all reference
    60
    >>> reference.observe(columnarize(rows[60:], kinds), kinds, position=60)  # 40 of 90
    40
    >>> reference.ready, reference.n_rows, reference.numeric.sample_sizes.tolist()
    (True, 100, [20])
    >>> reference.categorical["c"].categories, reference.numeric.summary(0)["max"]
    (('a', 'b'), 99.0)
    """

    def __init__(
        self,
        size: int = 5000,
        *,
        profile: ModelProfile | None = None,
        n_bins: int = 10,
        top_k: int = 50,
        sample_size: int = 512,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if sample_size < 10:
            raise ValueError("sample_size must be >= 10")
        self.size = size
        self.profile = profile
        self.n_bins = n_bins
        self.top_k = top_k
        self.sample_size = sample_size

        self._rows = 0  # first-N events taken
        self._n_rows = 0
        self._kinds: dict[str, FeatureKind] = {}
        # First-N fill state.
        self._block = np.empty((0, 0), dtype=np.float32)
        self._block_rows: dict[str, int] = {}
        self._missing: dict[str, int] = {}
        self._mismatch: dict[str, int] = {}
        self._category_counts: dict[str, dict[str, int]] = {}
        # The reference, once ready.
        self._ready = False
        self._numeric = NumericReference.of({}, sample_size)
        self._categorical: dict[str, CategoricalProfile] = {}
        self._correlation: FeatureCorrelation | None = None
        if profile is not None:
            self._install(profile)

    @property
    def ready(self) -> bool:
        """Whether the reference is complete."""
        return self._ready

    @property
    def n_rows(self) -> int:
        """Events in the reference (0 until it is ready)."""
        return self._n_rows

    @property
    def numeric(self) -> NumericReference:
        """The numeric features, sorted by name (none until ready)."""
        return self._numeric

    @property
    def categorical(self) -> dict[str, CategoricalProfile]:
        """The categorical features by name, sorted (none until ready)."""
        return dict(self._categorical)

    @property
    def correlation(self) -> FeatureCorrelation | None:
        """The Spearman matrix of the numeric features (None until ready, or with fewer than
        two numeric features usable)."""
        return self._correlation

    def kinds(self) -> dict[str, FeatureKind]:
        """Feature name -> kind, sorted by name (empty until ready)."""
        kinds: dict[str, FeatureKind] = dict.fromkeys(self._numeric.names, "numeric")
        kinds.update(dict.fromkeys(self._categorical, "categorical"))
        return dict(sorted(kinds.items()))

    @property
    def nbytes(self) -> int:
        """Bytes of the numpy arrays held: while filling, the fill array (``4 * size`` per
        numeric feature seen so far); once ready, the condensed reference."""
        categorical = sum(p.nbytes for p in self._categorical.values())
        joint = 0 if self._correlation is None else self._correlation.matrix.nbytes
        return self._block.nbytes + self._numeric.nbytes + categorical + joint

    def to_profile(self) -> ModelProfile | None:
        """The reference as a :class:`ModelProfile` (None until ready). A monitor given it as
        its profile behaves exactly like one using this reference."""
        if not self._ready:
            return None
        features: dict[str, FeatureProfile] = {
            name: self._numeric.profile(i) for i, name in enumerate(self._numeric.names)
        }
        features.update(self._categorical)
        return ModelProfile(
            features=dict(sorted(features.items())),
            n_rows=self._n_rows,
            correlation=self._correlation,
        )

    def observe(
        self, columns: FeatureColumns, kinds: Mapping[str, FeatureKind], position: int
    ) -> int:
        """Feed a batch whose first row is event ``position`` of the stream (counted from 0);
        returns how many leading rows of the batch are reference events, the first-N events
        (0 for a profile). Events taken already (e.g. by another monitor fed the same batch)
        are not taken again. ``kinds`` names the features while the reference fills (the kind
        first seen for a name wins); a feature absent from a batch, or held with another kind,
        is missing in its rows."""
        n = columns.n
        if self._ready:
            return min(n, max(0, self._rows - position))
        if position > self._rows:
            raise ValueError(
                f"position {position} skips events: the reference has taken {self._rows}; "
                "feed every event, in order"
            )
        new = {name: kind for name, kind in kinds.items() if name not in self._kinds}
        if new:
            self._add_features(new)
        skip = self._rows - position
        take = min(self.size - self._rows, n - skip)
        if take > 0:
            self._take(columns, skip, skip + take)
            self._rows += take
        if self._rows >= self.size:
            self._condense()
        return min(n, self.size - position)

    def _add_features(self, kinds: Mapping[str, FeatureKind]) -> None:
        numeric = [name for name, kind in kinds.items() if kind == "numeric"]
        for name, kind in kinds.items():
            self._kinds[name] = kind
            # Events before a feature first appeared did not carry it.
            self._missing[name] = self._rows
            self._mismatch[name] = 0
            if kind != "numeric":
                self._category_counts[name] = {}
        if not numeric:
            return
        known = len(self._block_rows)
        block = _fill_block(known + len(numeric), self.size)
        if known:
            block[:known, : self._rows] = self._block[:, : self._rows]
        # Events before a feature first appeared did not carry it.
        block[known:, : self._rows] = np.nan
        for name in numeric:
            self._block_rows[name] = len(self._block_rows)
        self._block = block

    def _take(self, columns: FeatureColumns, lo: int, hi: int) -> None:
        at = self._rows
        # Missing (NaN) in these events unless the batch carries the feature.
        self._block[:, at : at + hi - lo] = np.nan
        for name, kind in self._kinds.items():
            held = columns.numeric if kind == "numeric" else columns.categorical
            values = held.get(name)
            if values is None:
                self._missing[name] += hi - lo
                continue
            self._missing[name] += int(np.count_nonzero(columns.missing[name][lo:hi]))
            self._mismatch[name] += int(np.count_nonzero(columns.type_mismatch[name][lo:hi]))
            if kind == "numeric":
                self._block[self._block_rows[name], at : at + hi - lo] = as_float32(values[lo:hi])
                continue
            counts = self._category_counts[name]
            for category, c in Counter(values[lo:hi].tolist()).items():
                if category is not None:
                    counts[category] = counts.get(category, 0) + c

    def _condense(self) -> None:
        features: dict[str, FeatureProfile] = {}
        for name in sorted(self._kinds):
            if self._kinds[name] == "numeric":
                features[name] = self._numeric_profile(name)
            else:
                features[name] = self._categorical_profile(name)
        numeric = sorted(self._block_rows)
        rows = [self._block_rows[name] for name in numeric]
        correlation = FeatureCorrelation.of(numeric, self._block[rows]) if rows else None
        self._block = np.empty((0, 0), dtype=np.float32)
        self._block_rows, self._category_counts = {}, {}
        self._missing, self._mismatch = {}, {}
        self._install(ModelProfile(features=features, n_rows=self.size, correlation=correlation))

    def _numeric_profile(self, name: str) -> NumericProfile:
        values = self._block[self._block_rows[name]]
        profile = NumericProfile.from_values(
            values.astype(np.float64), n_bins=self.n_bins, sample_size=self.sample_size
        )
        # Bins as the monitors apply them, in float32: a value on an edge falls in the bin that
        # starts there, in the reference as in every window.
        finite = np.sort(values[~np.isnan(values)])
        counts = bin_counts_sorted(finite, _edges_float32(profile.edges))
        return NumericProfile(
            n_rows=profile.n_rows,
            count=profile.count,
            n_missing=self._missing[name],
            n_type_mismatch=self._mismatch[name],
            min=profile.min,
            max=profile.max,
            mean=profile.mean,
            std=profile.std,
            quantiles=profile.quantiles,
            inner_edges=profile.inner_edges,
            bin_proportions=_round_array(counts / max(profile.count, 1)),
            sample=profile.sample,
        )

    def _categorical_profile(self, name: str) -> CategoricalProfile:
        counted = self._category_counts[name]
        order = sorted(counted, key=lambda category: (-counted[category], category))
        top, rest = order[: self.top_k], order[self.top_k :]
        return CategoricalProfile(
            n_rows=self.size,
            count=sum(counted.values()),
            n_missing=self._missing[name],
            n_type_mismatch=self._mismatch[name],
            categories=tuple(top),
            counts=tuple(counted[c] for c in top),
            other_count=sum(counted[c] for c in rest),
            other_distinct=len(rest),
        )

    def _install(self, profile: ModelProfile) -> None:
        self._n_rows = profile.n_rows
        numeric: dict[str, NumericProfile] = {}
        categorical: dict[str, CategoricalProfile] = {}
        for name in sorted(profile.features):
            feature = profile.features[name]
            if isinstance(feature, NumericProfile):
                numeric[name] = feature
            else:
                categorical[name] = feature
        self._numeric = NumericReference.of(numeric, self.sample_size)
        self._categorical = categorical
        self._correlation = profile.correlation
        self._ready = True
