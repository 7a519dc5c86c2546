"""Vector input checks and metric names: what every write and query passes before the kernel.

Every vector that enters the package (a record's :class:`~dk_vector_plugins.VectorField`, an
``add_vectors`` batch, a query) is validated here: numeric, real, finite, 1-D (or 2-D for a
batch), non-empty, of the expected dimension. :func:`squared_norms` is the one place a row's
squared norm is computed; :func:`run_starts`, :func:`unique_ints` and :func:`unique_inverse`
the one place distinct values are taken.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, DimensionMismatchError, InvalidVectorError

__all__ = [
    "METRICS",
    "METRIC_ALIASES",
    "VectorTypeError",
    "as_vector",
    "as_vector_batch",
    "as_vector_batch_with_norms",
    "normalize_metric",
    "run_starts",
    "squared_norms",
    "unique_ints",
    "unique_inverse",
]

FloatArray = npt.NDArray[np.float32]

#: Canonical metric names (dataknobs-data's spelling).
METRICS: tuple[str, ...] = ("cosine", "euclidean", "dot_product")
#: Accepted aliases and the canonical metric each stands for.
METRIC_ALIASES: dict[str, str] = {
    "dot": "dot_product",
    "inner_product": "dot_product",
    "ip": "dot_product",
    "l2": "euclidean",
    "cos": "cosine",
}


def normalize_metric(metric: Any) -> str:
    """Return the canonical name of ``metric`` or raise :class:`ConfigError` naming the choices."""
    if hasattr(metric, "value") and isinstance(metric.value, str):  # an Enum such as DistanceMetric
        metric = metric.value
    if isinstance(metric, str):
        name = metric.strip().lower()
        if name in METRICS:
            return name
        if name in METRIC_ALIASES:
            return METRIC_ALIASES[name]
    aliases = ", ".join(f"{a} -> {c}" for a, c in METRIC_ALIASES.items())
    raise ConfigError(
        f"unknown vector metric {metric!r}; expected one of {', '.join(METRICS)} (aliases: {aliases})"
    )


class VectorTypeError(InvalidVectorError, TypeError):
    """A vector given as a value that is no sequence of numbers at all (a ``str``, ``bytes``,
    ``None``): an :class:`InvalidVectorError`, and a ``TypeError`` as dataknobs-data raises."""


def _to_float_array(value: Any, what: str) -> npt.NDArray[Any]:
    if hasattr(value, "value") and not isinstance(value, np.ndarray):  # a VectorField
        value = value.value
    if value is None or isinstance(value, (str, bytes)):
        raise VectorTypeError(
            f"{what} must be numpy array or list (of numbers), got {type(value).__name__} {value!r:.40}"
        )
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InvalidVectorError(f"{what} must be numeric: {e}") from e
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidVectorError(f"{what} must be numeric, got values of dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidVectorError(f"{what} must be real-valued, got complex numbers")
    return arr


def _check_finite(arr: FloatArray, what: str) -> None:
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "infinity"
        raise InvalidVectorError(f"{what} contains {bad}; every component must be finite")


def as_vector(value: Any, dim: int | None = None, *, what: str = "vector") -> FloatArray:
    """Validate one vector and return it as a new 1-D float32 array.

    Raises :class:`InvalidVectorError` for an empty, non-1-D, non-numeric or non-finite value and
    :class:`DimensionMismatchError` when ``dim`` is given and differs.
    """
    arr = _to_float_array(value, what)
    if arr.ndim != 1:
        raise InvalidVectorError(f"{what} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise InvalidVectorError(f"{what} is empty")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionMismatchError(f"{what} has {arr.shape[0]} dimensions, expected {dim}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: reported below
        out = np.array(arr, dtype=np.float32, copy=True)
        _check_finite(out, what)
    return out


def as_vector_batch(
    value: Any, dim: int | None = None, *, what: str = "vectors", copy: bool = True
) -> FloatArray:
    """Validate a batch of vectors (a 2-D array or a sequence of 1-D ones) as an (m, d) float32 array.

    The result is a new array, or with ``copy=False`` ``value`` itself when it already is a
    C-contiguous float32 array.
    """
    if isinstance(value, np.ndarray):
        arr = _to_float_array(value, what)
    else:
        items = list(value)
        if not items:
            return np.empty((0, dim or 0), dtype=np.float32)
        rows = [_to_float_array(v, f"{what}[{i}]") for i, v in enumerate(items)]
        for i, r in enumerate(rows):
            if r.ndim != 1:
                raise InvalidVectorError(f"{what}[{i}] must be 1-D, got shape {r.shape}")
            if r.size == 0:
                raise InvalidVectorError(f"{what}[{i}] is empty")
            if r.shape[0] != rows[0].shape[0]:
                expected = dim if dim is not None else rows[0].shape[0]
                raise DimensionMismatchError(f"{what}[{i}] has {r.shape[0]} dimensions, expected {expected}")
        arr = np.stack(rows)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be 2-D (m, d), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InvalidVectorError(f"{what} are empty")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have {arr.shape[1]} dimensions, expected {dim}")
    with np.errstate(over="ignore"):  # see as_vector
        out = np.array(arr, dtype=np.float32, copy=True if copy else None, order="C")
        if not np.isfinite(out).all():
            bad_row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            _check_finite(out[bad_row], f"{what}[{bad_row}]")
    return out


def as_vector_batch_with_norms(
    value: Any, dim: int | None = None, *, what: str = "vectors", copy: bool = True
) -> tuple[FloatArray, FloatArray]:
    """:func:`as_vector_batch` and the rows' :func:`squared_norms`, in one pass over the data
    (a non-finite component makes its row's norm non-finite: only then are rows checked one by one)."""
    if not isinstance(value, np.ndarray):
        out = as_vector_batch(value, dim, what=what)
        return out, squared_norms(out)
    arr = _to_float_array(value, what)
    if arr.ndim != 2 or arr.shape[1] == 0 or (dim is not None and arr.shape[1] != dim):
        out = as_vector_batch(value, dim, what=what)  # raises the precise error
        return out, squared_norms(out)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=np.float32, copy=True if copy else None, order="C")
        sq = squared_norms(out)
        if not np.isfinite(sq).all():  # a NaN or infinity, or finite values whose square overflows
            for r in np.flatnonzero(~np.isfinite(sq)).tolist():
                _check_finite(out[r], f"{what}[{r}]")  # raises for a NaN or infinity
    return out, sq


def squared_norms(matrix: FloatArray) -> FloatArray:
    """The rows' squared norms in float32 (the one place they are computed)."""
    out: FloatArray = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float32)
    return out


IntsT = TypeVar("IntsT", bound=np.integer[Any])


def run_starts(ordered: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Where each run of equal values of a sorted 1-D array starts (its first element)."""
    first = np.empty(len(ordered), dtype=np.bool_)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def unique_ints(values: npt.NDArray[IntsT]) -> npt.NDArray[IntsT]:
    """The distinct values of a 1-D integer array, ascending (what ``np.unique`` returns).

    By sorting: numpy 2.3+'s ``np.unique`` hashes, and costs ~60 us even for a handful of
    values, which the search paths (a few rows, many calls) cannot afford.
    """
    s = np.sort(values)
    return s[run_starts(s)]


def unique_inverse(values: npt.NDArray[IntsT]) -> tuple[npt.NDArray[IntsT], npt.NDArray[np.int64]]:
    """:func:`unique_ints` and, per value, the position of its distinct value in it
    (``np.unique(values, return_inverse=True)``, by sorting)."""
    order = np.argsort(values, kind="stable")
    s = values[order]
    first = run_starts(s)
    inverse = np.empty(len(s), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return s[first], inverse
