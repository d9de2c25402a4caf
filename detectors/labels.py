"""Canonical label values, so that ``1``, ``1.0`` and ``True`` name the same class.

Labels reach driftline as JSON: a producer may send the class ``1`` as ``1``, ``1.0`` or ``true``,
and numpy turns integers into ``numpy.int64``. ``label_key`` maps all of these to one value, so a
label can be used as a dictionary key, compared with a prediction and written back into an alert
under one spelling.

Strings are *not* parsed: ``"1"`` stays ``"1"`` and is a different class from ``1``. A model that
predicts ``"1"`` while its outcomes say ``1`` is a real producer bug, and coercing would hide it
(and would make ``"01"``, ``"1.0"`` and ``" 1"`` ambiguous).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["is_positive", "label_key", "labels_equal"]

_NUMERIC_KINDS = "biuf"
_TEXT_KINDS = "US"


def label_key(v: object) -> object:
    """Return the canonical form of a label.

    - ``bool`` (and ``numpy.bool_``) becomes ``int``: ``True`` → ``1``, ``False`` → ``0``.
    - An integer of any type becomes a Python ``int``.
    - A float with an integral value becomes ``int`` (``1.0`` → ``1``); other floats, including
      ``nan`` and ``inf``, stay Python ``float``.
    - ``str`` stays as it is: ``"1"`` is not ``1``.
    - ``None`` stays ``None``; anything else is returned unchanged.

    Parameters
    ----------
    v
        A label or a prediction.

    Examples
    --------
    >>> import numpy as np
    >>> [label_key(v) for v in (True, 1.0, np.int64(1), "1", 2.5, None)]
    [1, 1, 1, '1', 2.5, None]

    """
    if isinstance(v, str) or v is None:
        return v
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isfinite(f) and f.is_integer():
            return int(f)
        return f
    return v


def is_positive(
    labels: Sequence[object] | npt.NDArray[np.generic], positive_label: object
) -> npt.NDArray[np.bool_]:
    """Tell, for each label, whether it is the positive class, comparing canonical forms.

    Numeric arrays are compared in one numpy operation; lists of Python objects are compared
    element by element with Python equality, which already identifies ``1``, ``1.0`` and
    ``True`` and never equates a string with a number.

    Parameters
    ----------
    labels
        Labels or predictions: a list of Python values or a numpy array.
    positive_label
        The positive class.

    Examples
    --------
    >>> import numpy as np
    >>> is_positive([1, "1", True, 0, 1.0, None], 1)
    array([ True, False,  True, False,  True, False])
    >>> is_positive(np.array([0.0, 1.0, 2.0]), True)
    array([False,  True, False])

    """
    key = label_key(positive_label)
    arr = np.asarray(labels) if isinstance(labels, np.ndarray) else _object_array(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels: expected a one-dimensional sequence, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind in _NUMERIC_KINDS:
        if isinstance(key, int | float):
            return np.asarray(arr == key, dtype=np.bool_)
        return np.zeros(arr.shape[0], dtype=np.bool_)
    if kind in _TEXT_KINDS:
        if isinstance(key, str):
            return np.asarray(arr == key, dtype=np.bool_)
        return np.zeros(arr.shape[0], dtype=np.bool_)
    if isinstance(key, int | float | str) or key is None:
        # numpy compares object arrays element by element with Python's ``==``.
        return np.asarray(arr == key, dtype=np.bool_)
    return np.fromiter((label_key(v) == key for v in arr), dtype=np.bool_, count=arr.shape[0])


def labels_equal(
    a: Sequence[object] | npt.NDArray[np.generic], b: Sequence[object] | npt.NDArray[np.generic]
) -> npt.NDArray[np.bool_]:
    """Compare two label sequences element by element, in canonical form.

    Used to score a prediction against its outcome: ``1`` equals ``1.0`` and ``True``, but not
    ``"1"``.

    Parameters
    ----------
    a, b
        Sequences of the same length.

    Examples
    --------
    >>> labels_equal(["cat", 1, True, "1"], ["cat", 1.0, 1, 1])
    array([ True,  True,  True, False])

    """
    x = np.asarray(a) if isinstance(a, np.ndarray) else _object_array(a)
    y = np.asarray(b) if isinstance(b, np.ndarray) else _object_array(b)
    if x.ndim != 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"a, b: expected two 1-d sequences of one length, got {x.shape} {y.shape}")
    kx, ky = x.dtype.kind, y.dtype.kind
    if (kx in _NUMERIC_KINDS and ky in _TEXT_KINDS) or (kx in _TEXT_KINDS and ky in _NUMERIC_KINDS):
        return np.zeros(x.shape[0], dtype=np.bool_)
    if kx == "O" or ky == "O":
        x, y = x.astype(object), y.astype(object)
    return np.asarray(x == y, dtype=np.bool_)


def _object_array(values: Sequence[object]) -> npt.NDArray[np.object_]:
    """Build a 1-d object array; labels are scalars, so numpy never unpacks them."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
