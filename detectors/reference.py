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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from detectors.columns import FeatureColumns, FeatureKind, encode_categories, null_mask
from detectors.stats import bin_counts, quantile_edges

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
    _sorted: np.ndarray = field(init=False, repr=False)
    _codes: np.ndarray = field(init=False, repr=False)
    kind: ClassVar[FeatureKind] = "categorical"

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.counts):
            raise ValueError("categories and counts must have the same length")
        names = np.array(self.categories, dtype=np.str_)
        order = np.argsort(names, kind="stable")
        object.__setattr__(self, "_sorted", names[order])
        object.__setattr__(self, "_codes", order.astype(np.int32))

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

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of ``values`` (object array of str / None); see the class docstring."""
        return encode_categories(values, self._sorted, self._codes, len(self.categories))

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
    >>> from detectors.columns import columnarize
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
    ) -> ModelProfile:
        """Profile every feature of ``kinds`` in ``columns``.

        ``outputs`` optionally holds the model's ``"score"`` and/or ``"prediction"`` columns
        (their kinds are the dicts they sit in) for a prediction-drift baseline. To profile
        several batches, :meth:`FeatureColumns.concat` them first.
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
        return cls(features=features, score=score, prediction=prediction, n_rows=columns.n)

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
        try:
            n_rows = int(data.get("n_rows", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed profile: n_rows {exc!r}") from exc
        return cls(
            features={str(k): _profile_from_dict(v) for k, v in sorted(features.items())},
            score=None if score is None else _profile_from_dict(score),
            prediction=None if prediction is None else _profile_from_dict(prediction),
            n_rows=n_rows,
        )
