"""The one exact search kernel: vectorized top-k over a contiguous float32 matrix.

Every backend stores and loads; none scores vectors itself. A :class:`VectorIndex` holds one
vector field of a table: a row-major float32 matrix (grown geometrically, by 1.25x so that the
memory held stays close to the raw matrix), a mask of rows that hold a vector, and cached squared
norms. :func:`top_k` scores a batch of queries with one BLAS product, selects the best ``k`` per
query with ``argpartition`` and sorts only those ``k``.

Scores are higher-is-better for every metric:

* ``cosine``: cosine similarity (a stored zero vector scores 0);
* ``dot_product``: the inner product;
* ``euclidean``: ``1 / (1 + distance)``, the L2 distance itself being returned beside it
  (computed as ``sqrt(max(|x|^2 - 2 x.q + |q|^2, 0))``).

Ties are broken by id, ascending, so results are deterministic, also at the k-th place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import ConfigError, DimensionMismatchError, InvalidVectorError

__all__ = [
    "METRICS",
    "METRIC_ALIASES",
    "TopK",
    "VectorIndex",
    "as_vector",
    "as_vector_batch",
    "normalize_metric",
    "top_k",
]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

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

_GROWTH = 1.5
# Below this fraction of selected rows a filtered search gathers the rows first (less work);
# above it, it scores every row and masks the rest.
_GATHER_FRACTION = 0.2


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


def _to_float_array(value: Any, what: str) -> npt.NDArray[Any]:
    if hasattr(value, "value") and not isinstance(value, np.ndarray):  # a VectorField
        value = value.value
    if isinstance(value, (str, bytes)):
        raise InvalidVectorError(f"{what} must be a sequence of numbers, got a {type(value).__name__}")
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


def as_vector_batch(value: Any, dim: int | None = None, *, what: str = "vectors") -> FloatArray:
    """Validate a batch of vectors (a 2-D array or a sequence of 1-D ones) as an (m, d) float32 array."""
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
        out = np.array(arr, dtype=np.float32, copy=True, order="C")
        if not np.isfinite(out).all():
            bad_row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            _check_finite(out[bad_row], f"{what}[{bad_row}]")
    return out


@attrs.frozen
class TopK:
    """The result of :func:`top_k` for one query: rows best first, with scores and distances."""

    rows: IntArray
    scores: npt.NDArray[np.float64]
    distances: npt.NDArray[np.float64] | None


class VectorIndex:
    """One vector field of a table: a growable float32 matrix aligned with the table's rows.

    Row ``r`` of the matrix belongs to row ``r`` of the table; :attr:`present` says which rows
    hold a vector. Not thread-safe on its own: the owning store serializes writes.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim: int | None = dim
        self._matrix: FloatArray = np.empty((0, dim or 0), dtype=np.float32)
        self._sqnorm: FloatArray = np.empty(0, dtype=np.float32)
        self._present: BoolArray = np.zeros(0, dtype=np.bool_)
        self._nrows = 0
        self._count = 0
        self._owned = True

    # -- construction from stored data -------------------------------------------------------
    @classmethod
    def from_matrix(cls, matrix: FloatArray, present: BoolArray | None = None) -> VectorIndex:
        """Adopt ``matrix`` (e.g. a memory-mapped ``.npy``) without copying it.

        The array is copied only when a later write needs room or a writable buffer.
        """
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise InvalidVectorError(f"expected a 2-D float32 matrix, got {matrix.dtype} {matrix.shape}")
        index = cls(int(matrix.shape[1]))
        index._matrix = matrix
        index._owned = False
        n = int(matrix.shape[0])
        index._nrows = n
        index._present = np.ones(n, dtype=np.bool_) if present is None else np.array(present, dtype=np.bool_)
        m = np.asarray(matrix)
        index._sqnorm = np.einsum("ij,ij->i", m, m, dtype=np.float32) if n else np.empty(0, np.float32)
        index._count = int(index._present.sum())
        return index

    # -- properties ---------------------------------------------------------------------------
    @property
    def nrows(self) -> int:
        """Number of table rows this index spans (with or without a vector)."""
        return self._nrows

    @property
    def count(self) -> int:
        """Number of rows that hold a vector."""
        return self._count

    @property
    def present(self) -> BoolArray:
        """Read-only view: which of the first :attr:`nrows` rows hold a vector."""
        view = self._present[: self._nrows]
        view.flags.writeable = False
        return view

    @property
    def matrix(self) -> FloatArray:
        """Read-only view of the first :attr:`nrows` rows of the matrix."""
        view = self._matrix[: self._nrows]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (matrix capacity, norms, presence mask)."""
        return int(self._matrix.nbytes + self._sqnorm.nbytes + self._present.nbytes)

    # -- writes -------------------------------------------------------------------------------
    def _reserve(self, nrows: int, exact: bool = False) -> None:
        cap = self._matrix.shape[0]
        if nrows <= cap and self._owned:
            return
        dim = self.dim or 0
        new_cap = nrows if (exact or not self._owned) else max(nrows, int(cap * _GROWTH) + 8)
        if self._owned and self._matrix.flags.owndata and self._matrix.shape[0] > 0:
            try:  # realloc in place (mremap for large buffers: no copy) when no view is alive
                self._matrix.resize((new_cap, dim), refcheck=True)
                matrix = self._matrix
            except ValueError:
                matrix = None
        else:
            matrix = None
        if matrix is None:
            matrix = np.empty((new_cap, dim), dtype=np.float32)  # rows past nrows: guarded by `present`
            matrix[: self._nrows] = self._matrix[: self._nrows]
        sq = np.zeros(new_cap, dtype=np.float32)
        sq[: self._nrows] = self._sqnorm[: self._nrows]
        present = np.zeros(new_cap, dtype=np.bool_)
        present[: self._nrows] = self._present[: self._nrows]
        self._matrix, self._sqnorm, self._present, self._owned = matrix, sq, present, True

    def set_rows(self, rows: IntArray, vectors: FloatArray, size_hint: int = 0) -> None:
        """Store ``vectors[i]`` at table row ``rows[i]`` (already validated, shape (m, dim)).

        The first batch into an empty index is sized exactly (one big load holds no slack); later
        growth is geometric, or straight to ``size_hint`` rows when the caller knows the total.
        """
        if len(rows) == 0:
            return
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._matrix = np.empty((0, self.dim), dtype=np.float32)
        top = int(rows.max()) + 1
        if top > self._matrix.shape[0] or not self._owned:
            first = self._nrows == 0 and self._matrix.shape[0] == 0
            self._reserve(max(top, self._nrows, size_hint), exact=first or size_hint >= top)
        start = int(rows[0])
        where: slice | IntArray = rows
        if top - start == len(rows) and (len(rows) == 1 or bool((np.diff(rows) == 1).all())):
            where = slice(start, top)  # a contiguous run (appends): slice copies, no fancy indexing
        if top > self._nrows and not (isinstance(where, slice) and start <= self._nrows):
            # new rows this batch leaves without a vector: zeros, not uninitialized memory
            self._matrix[self._nrows : top] = 0.0
            self._sqnorm[self._nrows : top] = 0.0
        before = int(np.count_nonzero(self._present[where]))
        self._matrix[where] = vectors
        self._sqnorm[where] = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)
        self._present[where] = True
        self._nrows = max(self._nrows, top)
        if isinstance(where, slice):
            self._count += len(rows) - before
        else:
            self._count = int(np.count_nonzero(self._present[: self._nrows]))

    def clear_rows(self, rows: IntArray) -> None:
        """Forget the vectors of ``rows`` (deletes, or updates that drop the field)."""
        rows = rows[rows < self._nrows]
        if len(rows) == 0:
            return
        if not self._owned:
            self._reserve(self._nrows)
        rows = np.unique(rows)
        self._count -= int(self._present[rows].sum())
        self._present[rows] = False

    def get(self, row: int) -> FloatArray | None:
        """A copy of the vector at ``row``, or ``None``."""
        if row >= self._nrows or not self._present[row]:
            return None
        return np.array(self._matrix[row], dtype=np.float32, copy=True)

    def take(self, keep: IntArray) -> VectorIndex:
        """A compacted index holding rows ``keep`` (in that order) as rows ``0..len(keep)-1``."""
        out = VectorIndex(self.dim)
        keep = keep[keep < self._nrows]
        out._matrix = np.ascontiguousarray(self._matrix[keep])
        out._sqnorm = self._sqnorm[keep].copy()
        out._present = self._present[keep].copy()
        out._nrows = len(keep)
        out._count = int(out._present.sum())
        return out

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        queries: FloatArray,
        k: int,
        metric: str,
        ids: npt.NDArray[Any],
        mask: BoolArray | None = None,
    ) -> list[TopK]:
        """Exact top-``k`` rows for each query of ``queries`` (shape (b, dim)).

        ``ids`` maps rows to ids (for tie-breaking); ``mask`` (length >= :attr:`nrows`) limits the
        candidate rows (it is combined with :attr:`present`).
        """
        n = self._nrows
        cand = self._present[:n]
        if mask is not None:
            cand = cand & mask[:n]
        return top_k(self._matrix[:n], self._sqnorm[:n], queries, k, metric, ids[:n], cand)


def _query_norms(queries: FloatArray) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float32))
    return out


def top_k(
    matrix: FloatArray,
    sqnorm: FloatArray,
    queries: FloatArray,
    k: int,
    metric: str,
    ids: npt.NDArray[Any],
    candidates: BoolArray | None = None,
) -> list[TopK]:
    """Exact top-``k`` over the rows of ``matrix`` for each row of ``queries``.

    One matrix product for the whole batch (restricted to the candidate rows when they are few),
    ``argpartition`` per query, then a sort of the ``k`` winners by (score desc, id asc).
    """
    n = matrix.shape[0]
    b = queries.shape[0]
    if n == 0 or k <= 0:
        return [_empty() for _ in range(b)]
    sel: IntArray | None = None
    masked_out: BoolArray | None = None
    if candidates is not None:
        m = int(np.count_nonzero(candidates))
        if m == 0:
            return [_empty() for _ in range(b)]
        if m < n:
            if m <= _GATHER_FRACTION * n or m <= k:
                sel = np.flatnonzero(candidates)
            else:
                masked_out = ~candidates
    mat = matrix if sel is None else matrix[sel]
    sq = sqnorm if sel is None else sqnorm[sel]
    row_ids = ids if sel is None else ids[sel]

    if metric == "cosine":
        qn = _query_norms(queries)
        if (qn == 0).any():
            raise InvalidVectorError("a zero query vector has no direction; cosine similarity is undefined")
        q = queries / qn[:, None]
    else:
        q = queries
    dots = (mat @ q[0])[None, :] if b == 1 else q @ mat.T  # (b, n')
    if metric == "cosine":
        norms = np.sqrt(sq)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(norms > 0, 1.0 / norms, 0.0).astype(np.float32)
        key = dots * inv[None, :]
    elif metric == "dot_product":
        key = dots
    elif metric == "euclidean":
        qsq = np.einsum("ij,ij->i", queries, queries, dtype=np.float32)
        key = 2.0 * dots - sq[None, :] - qsq[:, None]  # = -distance^2
    else:  # pragma: no cover - callers normalize the metric first
        raise ConfigError(f"unknown metric {metric!r}")
    if masked_out is not None:
        key[:, masked_out] = -np.inf
        avail = n - int(np.count_nonzero(masked_out))
    else:
        avail = key.shape[1]
    kk = min(k, avail)
    out: list[TopK] = []
    for i in range(b):
        rows_local = _select(key[i], kk, row_ids)
        kv = key[i][rows_local].astype(np.float64)
        rows = rows_local if sel is None else sel[rows_local]
        if metric == "euclidean":
            dist = np.sqrt(np.maximum(-kv, 0.0))
            out.append(TopK(rows.astype(np.int64), 1.0 / (1.0 + dist), dist))
        else:
            out.append(TopK(rows.astype(np.int64), kv, None))
    return out


def _select(key: npt.NDArray[np.float32], k: int, ids: npt.NDArray[Any]) -> IntArray:
    """Indices of the ``k`` largest keys, best first, ties (also at the k-th place) by id."""
    n = key.shape[0]
    if k >= n:
        idx = np.arange(n)
    else:
        idx = np.argpartition(key, n - k)[n - k :]
        threshold = key[idx].min()
        n_tied_total = int(np.count_nonzero(key == threshold))
        n_tied_in = int(np.count_nonzero(key[idx] == threshold))
        if n_tied_total > n_tied_in:
            # argpartition picked arbitrary rows among equal keys: pick the smallest ids instead.
            above = idx[key[idx] > threshold]
            tied = np.flatnonzero(key == threshold)
            order = np.argsort(ids[tied], kind="stable")
            idx = np.concatenate([above, tied[order[: k - len(above)]]])
    kv = key[idx]
    final = sorted(range(len(idx)), key=lambda j: (-float(kv[j]), ids[idx[j]]))
    out: IntArray = idx[final]
    return out


def _empty() -> TopK:
    return TopK(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64), None)


def rank_ids(ids: Sequence[Any]) -> npt.NDArray[Any]:
    """An object array of ids suitable for the ``ids`` argument of :func:`top_k`."""
    arr = np.empty(len(ids), dtype=object)
    arr[:] = list(ids)
    return arr
