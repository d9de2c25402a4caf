"""Feature rows to typed numpy columns: the one decode step every feature-side detector shares.

A feature value is a JSON scalar: number, string, bool or null. A feature is *numeric* (int or
float; bool is not a number here) or *categorical* (str; bools become ``"true"``/``"false"``).
A value that does not fit its feature's kind is a *type mismatch*; it is kept out of the
distribution (NaN / None) and counted, so data quality can report it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import is_, itemgetter
from typing import Literal, Protocol

import numpy as np

FeatureKind = Literal["numeric", "categorical"]


class CategoryEncoder(Protocol):
    """Anything that turns a categorical column into category codes."""

    def encode(self, values: np.ndarray) -> np.ndarray: ...


_NUMBER_TYPES = frozenset({int, float})
_NUMERIC_FAST = frozenset({int, float, type(None)})
_CATEGORICAL_FAST = frozenset({str, type(None)})
_NONE = np.array(None, dtype=object)
_DICT_ONLY = frozenset({dict})


@dataclass(frozen=True, slots=True)
class FeatureColumns:
    """One batch of feature rows as columns.

    Attributes
    ----------
    n
        Rows in the batch.
    numeric
        Numeric features: float64, NaN where the value is missing, null, of the wrong type or
        not finite.
    categorical
        Categorical features: ``dtype=object`` arrays of ``str``, ``None`` where the value is
        missing, null or of the wrong type.
    missing
        Per feature (both kinds): key absent or value null.
    type_mismatch
        Per feature (both kinds): present and non-null but not usable as the feature's kind.
        Non-finite numbers (NaN, infinities) count here too: they are present but not a value.

    Examples
    --------
    >>> kinds = {"a": "numeric", "b": "categorical"}
    >>> cols = columnarize([{"a": 1, "b": "x"}, {"a": "oops"}], kinds)
    >>> cols.numeric["a"].tolist(), cols.categorical["b"].tolist()
    ([1.0, nan], ['x', None])
    >>> cols.missing["b"].tolist(), cols.type_mismatch["a"].tolist()
    ([False, True], [False, True])
    >>> cols.slice(1, 2).n
    1
    """

    n: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    type_mismatch: dict[str, np.ndarray]
    # Category codes already computed for this batch, by (feature, id of the encoder): data
    # drift and data quality encode the same columns with the same reference.
    _encoded: dict[tuple[str, int], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )

    def encoded(self, name: str, encoder: CategoryEncoder) -> np.ndarray:
        """Codes of categorical feature ``name`` by ``encoder``, computed once per batch."""
        key = (name, id(encoder))
        codes = self._encoded.get(key)
        if codes is None:
            codes = self._encoded[key] = encoder.encode(self.categorical[name])
        return codes

    def kinds(self) -> dict[str, FeatureKind]:
        """The kind of every feature held, by name."""
        out: dict[str, FeatureKind] = dict.fromkeys(self.numeric, "numeric")
        out.update(dict.fromkeys(self.categorical, "categorical"))
        return out

    def slice(self, start: int, stop: int) -> FeatureColumns:
        """Rows ``start:stop`` (views, not copies)."""
        start, stop, _ = slice(start, stop).indices(self.n)
        stop = max(start, stop)
        return FeatureColumns(
            n=stop - start,
            numeric={k: v[start:stop] for k, v in self.numeric.items()},
            categorical={k: v[start:stop] for k, v in self.categorical.items()},
            missing={k: v[start:stop] for k, v in self.missing.items()},
            type_mismatch={k: v[start:stop] for k, v in self.type_mismatch.items()},
        )

    def select(self, kinds: Mapping[str, FeatureKind]) -> FeatureColumns:
        """Exactly the features of ``kinds``; a feature absent here (or held with another kind)
        becomes an all-missing column."""
        numeric: dict[str, np.ndarray] = {}
        categorical: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        mismatch: dict[str, np.ndarray] = {}
        for name, kind in kinds.items():
            held = self.numeric if kind == "numeric" else self.categorical
            if name in held:
                (numeric if kind == "numeric" else categorical)[name] = held[name]
                missing[name] = self.missing[name]
                mismatch[name] = self.type_mismatch[name]
                continue
            if kind == "numeric":
                numeric[name] = np.full(self.n, np.nan)
            else:
                categorical[name] = np.full(self.n, None, dtype=object)
            missing[name] = np.ones(self.n, dtype=bool)
            mismatch[name] = np.zeros(self.n, dtype=bool)
        return FeatureColumns(self.n, numeric, categorical, missing, mismatch)

    @classmethod
    def concat(
        cls, parts: Sequence[FeatureColumns], kinds: Mapping[str, FeatureKind]
    ) -> FeatureColumns:
        """Rows of ``parts`` one after the other, with the features of ``kinds``."""
        selected = [p.select(kinds) for p in parts]
        n = sum(p.n for p in selected)
        if not selected:
            return cls.empty(kinds)

        def joined(attr: str, name: str) -> np.ndarray:
            return np.concatenate([getattr(p, attr)[name] for p in selected])

        return cls(
            n=n,
            numeric={k: joined("numeric", k) for k, v in kinds.items() if v == "numeric"},
            categorical={k: joined("categorical", k) for k, v in kinds.items() if v != "numeric"},
            missing={k: joined("missing", k) for k in kinds},
            type_mismatch={k: joined("type_mismatch", k) for k in kinds},
        )

    @classmethod
    def empty(cls, kinds: Mapping[str, FeatureKind]) -> FeatureColumns:
        """No rows, the features of ``kinds``."""
        return cls(0, {}, {}, {}, {}).select(kinds)


def infer_kinds(
    rows: Sequence[Mapping[str, object]], names: Iterable[str] | None = None
) -> dict[str, FeatureKind]:
    """Kind of every feature in ``rows`` (of ``names`` only, when given): numeric when most
    non-null values are numbers.

    Features that are only ever null are left out (nothing to infer from). Ties go to
    categorical, which never drops a value as a mismatch that a number would have kept.

    >>> infer_kinds([{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": True}])
    {'a': 'numeric', 'b': 'categorical'}
    >>> infer_kinds([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], names={"a"})
    {'a': 'numeric'}
    """
    wanted = sorted(set().union(*rows) if names is None else names)
    table = _transpose(rows, wanted)
    if table is not None:
        # Every row holds every name: count value types column by column, in C.
        kinds: dict[str, FeatureKind] = {}
        for name, values in zip(wanted, table, strict=True):
            types = list(map(type, values))
            n_numbers = types.count(int) + types.count(float)
            n_others = len(types) - n_numbers - types.count(type(None))
            if n_numbers or n_others:
                kinds[name] = "numeric" if n_numbers > n_others else "categorical"
        return kinds
    keep = set(wanted)
    numbers: dict[str, int] = {}
    others: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            if value is None or name not in keep:
                continue
            if type(value) in _NUMBER_TYPES:
                numbers[name] = numbers.get(name, 0) + 1
            else:
                others[name] = others.get(name, 0) + 1
    return {
        name: "numeric" if numbers.get(name, 0) > others.get(name, 0) else "categorical"
        for name in sorted(numbers.keys() | others.keys())
    }


def columnarize(
    rows: Sequence[Mapping[str, object]], kinds: Mapping[str, FeatureKind]
) -> FeatureColumns:
    """Turn feature rows into typed columns, one per feature of ``kinds``.

    Keys of a row that are not in ``kinds`` are ignored here; the caller counts them.
    """
    n = len(rows)
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    mismatch: dict[str, np.ndarray] = {}
    names = [name for name, kind in kinds.items() if kind == "numeric"]
    block = _numeric_block(rows, names) if len(names) > 1 else None
    if block is not None:
        block_values, is_null, bad = block
        numeric.update(zip(names, block_values, strict=True))
        missing.update(zip(names, is_null, strict=True))
        mismatch.update(zip(names, bad, strict=True))
    rest = [name for name in kinds if name not in numeric]
    table = _transpose(rows, rest)
    for j, name in enumerate(rest):
        kind = kinds[name]
        values = table[j] if table is not None else [row.get(name) for row in rows]
        column, missing[name], mismatch[name] = _column(values, kind)
        (numeric if kind == "numeric" else categorical)[name] = column
    # Callers see the features in the order of kinds.
    return FeatureColumns(
        n,
        {name: numeric[name] for name in kinds if name in numeric},
        categorical,
        {name: missing[name] for name in kinds},
        {name: mismatch[name] for name in kinds},
    )


def _numeric_block(
    rows: Sequence[Mapping[str, object]], names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(values, null, type mismatch) of the numeric features ``names``, one row per feature,
    converted in one call; None unless every row is a plain dict holding every name and every
    value is an int, a float or None (then the caller converts feature by feature)."""
    if not rows or not _DICT_ONLY.issuperset(map(type, rows)):
        return None
    try:
        table = list(map(itemgetter(*names), rows))
    except KeyError:
        return None
    flat = list(chain.from_iterable(table))
    types = set(map(type, flat))
    if not types <= _NUMERIC_FAST:
        return None
    has_null = type(None) in types
    try:
        if has_null:
            # None converts to NaN; is_null tells it apart from a NaN that was sent.
            flat_values = np.array(flat, dtype=np.float64)
        else:  # fromiter reads the flat list faster than array() does
            flat_values = np.fromiter(flat, np.float64, len(flat))
    except OverflowError:  # an int beyond float range: take the careful path
        return None
    shape = (len(names), len(rows))
    values = flat_values.reshape(shape[::-1]).T.copy()
    if has_null:
        is_null = np.fromiter(map(is_, flat, repeat(None)), dtype=bool, count=len(flat))
        is_null = is_null.reshape(shape[::-1]).T.copy()
    else:
        is_null = np.zeros(shape, dtype=bool)
    invalid = ~np.isfinite(values)
    bad = invalid & ~is_null
    if invalid.any():
        values[invalid] = np.nan
    return values, is_null, bad


def column_of(name: str, values: Sequence[object], kind: FeatureKind) -> FeatureColumns:
    """One feature's values as columns: what ``columnarize`` gives for rows ``{name: value}``
    (a ``None`` value standing for null), without building the rows.

    >>> column_of("score", [0.5, None, True], "numeric").type_mismatch["score"].tolist()
    [False, False, True]
    """
    column, missing, mismatch = _column(values, kind)
    held = {name: column}
    return FeatureColumns(
        len(values),
        held if kind == "numeric" else {},
        {} if kind == "numeric" else held,
        {name: missing},
        {name: mismatch},
    )


def _column(
    values: Sequence[object], kind: FeatureKind
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column, missing, type mismatch) of one feature's values."""
    n = len(values)
    types = set(map(type, values))
    is_null = (
        np.fromiter(map(is_, values, repeat(None)), dtype=bool, count=n)
        if type(None) in types
        else np.zeros(n, dtype=bool)
    )
    if kind == "numeric":
        column, mismatch = _numeric_column(values, types, is_null)
    else:
        column, mismatch = _categorical_column(values, types, is_null)
    return column, is_null, mismatch


def _transpose(
    rows: Sequence[Mapping[str, object]], names: list[str]
) -> list[Sequence[object]] | None:
    """The value of every name in every row, one sequence per name; None unless every row is a
    plain dict holding every name (then the caller looks each value up with ``get``)."""
    if not rows or not names or not _DICT_ONLY.issuperset(map(type, rows)):
        return None
    # One C-level lookup of all names per row, instead of one Python-level lookup per name.
    try:
        if len(names) == 1:
            return [list(map(itemgetter(names[0]), rows))]
        return list(zip(*map(itemgetter(*names), rows), strict=True))
    except KeyError:
        return None


def _numeric_column(
    values: Sequence[object], types: set[type], is_null: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    column: np.ndarray | None = None
    if types <= _NUMERIC_FAST:
        try:
            # None converts to NaN; is_null tells it apart from a NaN that was sent.
            column = np.array(values, dtype=np.float64)
        except OverflowError:  # an int beyond float range: take the careful path
            column = None
    if column is None:
        column = np.fromiter(_as_floats(values), dtype=np.float64, count=len(values))
    invalid = ~np.isfinite(column)
    bad = invalid & ~is_null
    if invalid.any():
        column[invalid] = np.nan
    return column, bad


def _as_floats(values: Iterable[object]) -> Iterable[float]:
    for v in values:
        if type(v) in _NUMBER_TYPES:
            try:
                yield float(v)  # type: ignore[arg-type]
            except OverflowError:
                yield math.inf  # present but not representable: a mismatch, like inf
        else:
            yield math.nan


def _categorical_column(
    values: Sequence[object], types: set[type], is_null: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    if types <= _CATEGORICAL_FAST:
        return np.fromiter(values, dtype=object, count=n), np.zeros(n, dtype=bool)
    cleaned = [
        v if type(v) is str else ("true" if v else "false") if type(v) is bool else None
        for v in values
    ]
    column = np.fromiter(cleaned, dtype=object, count=n)
    return column, null_mask(column) & ~is_null


def null_mask(values: np.ndarray) -> np.ndarray:
    """True where an object array holds None."""
    return np.asarray(np.equal(values, _NONE), dtype=bool)


def encode_with(lookup: Mapping[str | None, int], values: np.ndarray, other: int) -> np.ndarray:
    """Category codes of ``values`` (object array of str / None) from ``lookup``, which maps
    each category to its code and ``None`` to ``-1``; anything else gets ``other``. One dict
    lookup per value: cheaper than :func:`encode_categories` for the batches monitors see.

    >>> encode_with({"a": 0, "b": 1, None: -1}, np.array(["b", None, "z"], dtype=object), 2)
    array([ 1, -1,  2], dtype=int32)
    """
    n = values.shape[0]
    return np.fromiter(map(lookup.get, values.tolist(), repeat(other, n)), np.int32, n)


def encode_categories(
    values: np.ndarray, sorted_categories: np.ndarray, codes: np.ndarray, other: int
) -> np.ndarray:
    """Category codes of ``values`` (object array of str / None), vectorised.

    ``sorted_categories`` is a sorted ``str_`` array and ``codes`` the code of each of its
    entries. Values not among the categories get ``other``; ``None`` gets ``-1``.
    """
    out = np.full(values.shape[0], other, dtype=np.int32)
    if values.shape[0] == 0:
        return out
    none = null_mask(values)
    if sorted_categories.shape[0] > 0:
        text = values.astype(np.str_)  # None becomes "None", masked below
        pos = np.searchsorted(sorted_categories, text)
        pos = np.minimum(pos, sorted_categories.shape[0] - 1)
        found = sorted_categories[pos] == text
        out[found] = codes[pos[found]]
    out[none] = -1
    return out
